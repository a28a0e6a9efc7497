"""CPU burned after a call: ONNX Runtime's default thread spin vs ours (`ONNX_SPIN_US`).

    .venv/bin/python -m benchmarks.idle_cpu [--calls 12] [--corpus code] [--also 5000 ...]

After a run, idle intra-op threads spin-wait for more work. Between the runs of one call that
saves waking them; after the call it burns CPU that the MCP layer, the host and other processes
need. For each setting, the same int8 model (2 threads, one text per run, as the provider runs
it) embeds calls of 100 one-line snippets and of 20 code chunks, alternating between settings
with a 300 ms pause between calls; reported: time per call, and the cores used while the process
sleeps 20 or 100 ms after a call (1.0 = one core spinning the whole time).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Sequence

from benchmarks.corpus import code_chunks, one_line_snippets

_PAUSES_S = (0.02, 0.1)
_SETTLE_S = 0.3


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=12, help="calls per setting, corpus and pause (default 12)")
    parser.add_argument("--corpus", choices=["snippets", "code"], action="append", help="default: both")
    parser.add_argument("--also", type=int, nargs="*", default=[], metavar="US", help="more spin durations to compare")
    args = parser.parse_args(argv)

    from tokenizers import Tokenizer

    from providers import Settings
    from providers.local import PACKAGED_MODEL_SHA256, packaged_model_path
    from providers.local_model.encoders import ONNX_SPIN_US, OnnxEncoder, pad_batch, usable_cores
    from providers.local_model.onnx_export import cached_onnx_model

    data_dir = Settings.from_env().resolved_data_dir
    cached = cached_onnx_model(packaged_model_path(), PACKAGED_MODEL_SHA256, data_dir / "onnx", quantized=True)
    tokenizer = Tokenizer.from_str(cached.tokenizer_json)
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    threads = usable_cores()
    settings: dict[str, int | None] = {"ONNX Runtime default": None, f"ours ({ONNX_SPIN_US} us)": ONNX_SPIN_US}
    settings.update({f"{us} us": us for us in args.also})
    encoders = {
        name: OnnxEncoder(cached.model_bytes, threads=threads, device="cpu", spin_us=spin)
        for name, spin in settings.items()
    }
    corpora = {"snippets": (one_line_snippets(20000), 100), "code": (code_chunks(2500), 20)}
    print(f"{threads} intra-op threads, one text per run; {args.calls} calls per cell", flush=True)

    for corpus, (texts, per_call) in corpora.items():
        if args.corpus and corpus not in args.corpus:
            continue
        ids = [encoding.ids for encoding in tokenizer.encode_batch(list(dict.fromkeys(texts)))]
        seconds: dict[str, list[float]] = {name: [] for name in encoders}
        idle: dict[tuple[str, float], list[float]] = {(name, p): [] for name in encoders for p in _PAUSES_S}
        position = 0
        for call in range(args.calls * len(_PAUSES_S)):
            pause = _PAUSES_S[call % len(_PAUSES_S)]
            names = list(encoders)[call % len(encoders) :] + list(encoders)[: call % len(encoders)]
            for name in names:
                time.sleep(_SETTLE_S)  # the other setting's threads have stopped spinning
                batch = ids[position : position + per_call]
                position += per_call
                started = time.perf_counter()
                for window in batch:
                    encoders[name].encode(*pad_batch([window]))
                seconds[name].append(time.perf_counter() - started)
                cpu_before, idle_started = _cpu_seconds(), time.perf_counter()
                time.sleep(pause)
                idle[(name, pause)].append((_cpu_seconds() - cpu_before) / (time.perf_counter() - idle_started))
        print(f"\n{corpus}: calls of {per_call} texts")
        print(f"  {'setting':<22} {'ms/call':>8}  " + "  ".join(f"cores {p * 1000:>3.0f} ms after" for p in _PAUSES_S))
        for name in encoders:
            cells = "  ".join(f"{statistics.median(idle[(name, p)]):>18.2f}" for p in _PAUSES_S)
            print(f"  {name:<22} {statistics.median(seconds[name]) * 1000:8.1f}  {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
