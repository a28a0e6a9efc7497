"""Only what changed: `embed DIR` again after one file of 500 changed, against the cold run.

    .venv/bin/python -m benchmarks.repo_rerun [--files 500]

The tree is real standard-library modules; the provider is OpenAI's API played by the loopback
server (answers at once, so the cold run is as fast as it can be and the ratio is a hard bound:
a real provider makes the cold run slower, not the rerun). Target: the rerun <= 5% of the cold run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.corpus import stdlib_sources
from providers import Settings
from server.commands.embed import add_commands, run_embed
from tests.loopback_openai import LoopbackOpenAI

_MIN_BYTES, _MAX_BYTES = 2_000, 60_000


def embed(settings: Settings, *argv: str) -> float:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["embed", *argv, "--no-progress"])
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        code = run_embed(args, settings)
    if code != 0:
        raise SystemExit(f"embed failed ({code}): {err.getvalue()}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary, LoopbackOpenAI(api_key="sk-bench") as server:
        root = Path(temporary)
        tree = root / "tree"
        copied = 0
        for relative, lines in stdlib_sources():
            text = "\n".join(lines) + "\n"
            if "test" in relative.parts or not _MIN_BYTES <= len(text) <= _MAX_BYTES:
                continue
            target = tree / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            copied += 1
            if copied == args.files:
                break
        settings = replace(
            Settings(data_dir=root / "data"),
            provider="openai",
            openai_base_url=server.base_url,
            openai_api_key="sk-bench",
        )
        output = str(root / "vectors.jsonl")
        cold = embed(settings, str(tree), "-o", output)
        sent_cold = len(server.embedded_inputs())
        changed = sorted(tree.rglob("*.py"))[copied // 2]
        changed.write_text(changed.read_text() + "\n\ndef added_by_the_benchmark():\n    return 42\n")
        rerun = embed(settings, str(tree), "-o", output)
        sent_rerun = len(server.embedded_inputs()) - sent_cold
    share = rerun / cold
    print(f"{copied} files; cold run {cold:.2f} s ({sent_cold:,} chunks sent)")
    print(f"after 1 changed file: {rerun:.2f} s ({sent_rerun:,} chunks sent), {share:.1%} of the cold run")
    ok = share <= 0.05
    print(f"rerun <= 5% of the cold run: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
