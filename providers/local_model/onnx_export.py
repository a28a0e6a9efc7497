"""ONNX copies of a sentence-transformers model, exported on first use and cached, verified on load.

```python
model = cached_onnx_model(source_dir, source_sha256, cache_root, quantized=True)
session = onnxruntime.InferenceSession(model.model_bytes)   # the bytes that were verified
```

The export is the only step that needs torch, and it runs in a child process, so the server
never imports torch: it stays near 200 MB, while the export peaks at ~1.35 GB and takes ~10 s.
It traces the whole sentence-transformers pipeline (transformer, pooling, normalisation) with
eager attention, because ONNX Runtime's transformer optimizer recognises that attention pattern
and fuses it (with LayerNorm and GELU) into its own kernels; then, for `quantized=True`, it
quantises the weights dynamically to per-channel signed int8. On 2 cores, 40-line code chunks,
one window per call: fused int8 ran ~3,100-3,400/min, unfused per-channel int8 ~2,500/min, fp32
torch ~1,300/min; cosine to fp32 torch mean 0.993 / min 0.986, while the stock unsigned
per-tensor recipe fell to mean 0.960 / min 0.934.

A cache entry is one directory holding `model.onnx`, `tokenizer.json` and `manifest.json` (the
SHA-256 of both files and of the source weights). It is built in a temporary directory and
renamed into place, so an entry that exists is complete; an entry whose files no longer match
the manifest is moved aside and exported again. An advisory lock keeps two processes that start
at once from both doing the export; without the lock the rename alone still keeps them correct.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.errors import ProviderError

__all__ = [
    "RECIPE_VERSION",
    "CachedOnnxModel",
    "cached_onnx_model",
    "export_in_subprocess",
    "export_onnx_model",
    "sha256_of_file",
]

logger = logging.getLogger(__name__)

RECIPE_VERSION = 1
"""Bump when the export recipe changes, so entries made by the old recipe are not reused."""

_OPSET = 17
_LOCK_TIMEOUT_S = 600.0
_MANIFEST = "manifest.json"
_MODEL = "model.onnx"
_TOKENIZER = "tokenizer.json"

Exporter = Callable[[Path, Path, bool], None]
"""`exporter(source_dir, destination_dir, quantized)` writes model.onnx and tokenizer.json."""


@dataclass(frozen=True)
class CachedOnnxModel:
    """A verified cache entry, with the exact bytes that were checked (no re-read after the check)."""

    directory: Path
    model_bytes: bytes
    tokenizer_json: str
    manifest: dict[str, Any]
    exported: bool
    """True when this call made the entry (first use, or the old entry failed verification)."""


def cached_onnx_model(
    source: Path,
    source_sha256: str,
    cache_root: Path,
    *,
    quantized: bool,
    exporter: Exporter | None = None,
) -> CachedOnnxModel:
    """The ONNX model for the weights at `source` (whose SHA-256 the caller has checked), exporting if needed."""
    export = exporter or export_in_subprocess
    variant = "int8" if quantized else "fp32"
    entry = cache_root / f"{variant}-r{RECIPE_VERSION}-{source_sha256[:16]}"
    cache_root.mkdir(parents=True, exist_ok=True)
    cached = _verified_entry(entry, source_sha256, variant)
    if cached is not None:
        return cached
    with _export_lock(cache_root / f"{entry.name}.lock"):
        # Another process may have finished the export while this one waited for the lock.
        cached = _verified_entry(entry, source_sha256, variant)
        if cached is not None:
            return cached
        if entry.exists():
            logger.warning("ONNX cache entry %s does not match its manifest; exporting it again", entry)
            _discard(entry)
        logger.info(
            "building the local model's ONNX Runtime export (%s) in %s: once per data directory, about 20 s",
            variant,
            entry,
        )
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=cache_root))
        try:
            export(source, staging, quantized)
            _write_manifest(staging, source_sha256, variant)
            # Losing a race with a process that ran without the lock is fine: its entry is complete.
            with contextlib.suppress(OSError):
                staging.rename(entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    cached = _verified_entry(entry, source_sha256, variant, exported=True)
    if cached is None:
        raise ProviderError(f"the ONNX model exported to {entry} failed verification right after export")
    return cached


def export_in_subprocess(source: Path, destination: Path, quantized: bool, *, trust_remote_code: bool = False) -> None:
    """`export_onnx_model` in a child Python, so torch and the export's peak memory stay out of this process."""
    package_root = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "providers.local_model.onnx_export", str(source), str(destination)]
    # Captured, never inherited: a stdio MCP server's stdout carries JSON-RPC.
    completed = subprocess.run(
        [*command, *(["--quantized"] if quantized else []), *(["--trust-remote-code"] if trust_remote_code else [])],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        detail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProviderError(f"exporting {source} to ONNX failed (exit {completed.returncode}): {detail}")


def export_onnx_model(
    source: Path, destination: Path, quantized: bool, trust_remote_code: bool = False
) -> None:  # pragma: no cover - runs in the export child
    """Export the sentence-transformers model at `source` into `destination` (needs torch)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = SentenceTransformer(
        str(source),
        device="cpu",
        local_files_only=True,
        trust_remote_code=trust_remote_code,
        # Eager attention exports as plain MatMul/Softmax, the pattern the ORT optimizer fuses.
        model_kwargs={"attn_implementation": "eager"},
    ).eval()
    takes_token_types = "token_type_ids" in model.tokenizer.model_input_names

    class Pipeline(torch.nn.Module):
        """input_ids, attention_mask → the model's sentence embedding (pooled, normalised)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if takes_token_types:
                features["token_type_ids"] = torch.zeros_like(input_ids)
            return self.model(features)["sentence_embedding"]  # type: ignore[no-any-return]

    # A padded example, so nothing traced can assume an all-ones mask.
    input_ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    attention_mask = (input_ids != 0).long()
    fp32_path = destination / ("model-fp32.onnx" if quantized else _MODEL)
    with torch.inference_mode(), warnings.catch_warnings():
        # The legacy TorchScript exporter warns about its own deprecation and about Python
        # booleans it traces; the result is checked against fp32 torch by the tests instead.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pipeline(),
            (input_ids, attention_mask),
            str(fp32_path),
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "sentence_embedding": {0: "batch"},
            },
            opset_version=_OPSET,
            dynamo=False,
        )
    _fuse_transformer_ops(fp32_path, source)
    if quantized:
        _quantize_int8(fp32_path, destination / _MODEL)
        fp32_path.unlink()
    model.tokenizer.backend_tokenizer.save(str(destination / _TOKENIZER))


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fuse_transformer_ops(path: Path, source: Path) -> None:  # pragma: no cover - runs in the export child
    """Fuse attention, LayerNorm and GELU into ONNX Runtime's kernels, in place."""
    from onnxruntime.transformers import optimizer

    config = json.loads((source / "config.json").read_text())
    optimized = optimizer.optimize_model(
        str(path),
        model_type="bert",
        num_heads=int(config.get("num_attention_heads", 0)),
        hidden_size=int(config.get("hidden_size", 0)),
        opt_level=1,
        use_gpu=False,
    )
    optimized.save_model_to_file(str(path))


def _quantize_int8(source: Path, destination: Path) -> None:  # pragma: no cover - runs in the export child
    """Dynamic int8: weights per output channel, signed; activations quantised per call."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(
            str(source),
            str(destination),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # The fused ops' outputs have no type onnx's shape inference can see; they are fp32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)


def _write_manifest(directory: Path, source_sha256: str, variant: str) -> None:
    import onnxruntime

    manifest = {
        "recipe": RECIPE_VERSION,
        "variant": variant,
        "source_sha256": source_sha256,
        "model_sha256": sha256_of_file(directory / _MODEL),
        "tokenizer_sha256": sha256_of_file(directory / _TOKENIZER),
        "onnxruntime": onnxruntime.__version__,
        "opset": _OPSET,
    }
    (directory / _MANIFEST).write_text(json.dumps(manifest, indent=2))


def _verified_entry(entry: Path, source_sha256: str, variant: str, *, exported: bool = False) -> CachedOnnxModel | None:
    """The entry if every file matches its manifest and the manifest matches the source; else None."""
    try:
        manifest = json.loads((entry / _MANIFEST).read_text())
        model_bytes = (entry / _MODEL).read_bytes()
        tokenizer_bytes = (entry / _TOKENIZER).read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    made_from = (manifest.get("recipe"), manifest.get("variant"), manifest.get("source_sha256"))
    if made_from != (RECIPE_VERSION, variant, source_sha256):
        return None
    if hashlib.sha256(model_bytes).hexdigest() != manifest.get("model_sha256"):
        return None
    if hashlib.sha256(tokenizer_bytes).hexdigest() != manifest.get("tokenizer_sha256"):
        return None
    return CachedOnnxModel(entry, model_bytes, tokenizer_bytes.decode("utf-8"), manifest, exported)


def _discard(entry: Path) -> None:
    """Move a bad entry aside first (atomic), so no reader ever sees it half deleted."""
    trash = entry.with_name(f".{entry.name}-discarded-{os.getpid()}-{time.monotonic_ns()}")
    with contextlib.suppress(OSError):
        entry.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _export_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (POSIX); elsewhere, rely on the atomic rename."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with path.open("a") as handle:
        deadline = time.monotonic() + _LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ProviderError(
                        f"waited {_LOCK_TIMEOUT_S:.0f} s for another process to finish exporting the ONNX "
                        f"model (it holds {path}); stop that process or try again when it is done."
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in the export child
    """`python -m providers.local_model.onnx_export SOURCE DESTINATION [--quantized]`: the child side of the export."""
    import argparse

    parser = argparse.ArgumentParser(description="Export a sentence-transformers model to ONNX (used internally).")
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--quantized", action="store_true")
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    export_onnx_model(args.source, args.destination, args.quantized, args.trust_remote_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
