"""The model runtimes behind the local provider: token ids in, sentence vectors out.

Both take the same padded int64 `input_ids` / `attention_mask`, so tokenizing, windowing and
batching are written once in the provider. `OnnxEncoder` needs only onnxruntime (no torch at
run time: less memory, faster start); `TorchEncoder` runs the sentence-transformers model itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import numpy.typing as npt

from providers.errors import ConfigurationError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "LOCAL_BACKENDS",
    "LocalBackend",
    "LocalRuntime",
    "OnnxEncoder",
    "SentenceEncoder",
    "TorchEncoder",
    "cuda_available",
    "pad_batch",
    "resolve_backend",
    "resolve_device",
    "usable_cores",
]

LocalBackend = Literal["auto", "torch", "onnx", "onnx-int8"]
"""`torch`: fp32 sentence-transformers; `onnx`: fp32 ONNX Runtime; `onnx-int8`: int8 ONNX Runtime;
`auto`: torch on a GPU, onnx-int8 on the CPU."""
LOCAL_BACKENDS: tuple[LocalBackend, ...] = ("auto", "torch", "onnx", "onnx-int8")

TokenIds = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LocalRuntime:
    """How the loaded model runs: what `auto` and the defaults resolved to."""

    backend: str
    """"torch", "onnx" or "onnx-int8"."""
    device: str
    threads: int
    """CPU threads in all: `lanes` model calls at once, each on `threads // lanes` of them."""
    batch_size: int
    """Windows per model call."""
    max_length: int
    """Tokens per window, special tokens included."""
    lanes: int = 1
    """Model calls run at once (`local_model/lanes.py`)."""


class SentenceEncoder(Protocol):
    @property
    def threads(self) -> int:
        """CPU threads the runtime uses for one call."""
        ...

    def encode(self, input_ids: TokenIds, attention_mask: TokenIds) -> Vectors:
        """Sentence vectors, shape (batch, dimensions), not necessarily normalised."""
        ...


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1  # pragma: no cover - macOS, Windows


def cuda_available() -> bool:
    """Whether torch can use a CUDA GPU; without an NVIDIA driver, answered without importing torch."""
    if not (Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi")):
        return False
    import torch  # pragma: no cover - needs a GPU machine

    return bool(torch.cuda.is_available())  # pragma: no cover


def resolve_device(requested: str | None) -> str:
    """`None` or "auto" → "cuda" when a GPU is usable, else "cpu"; anything else as given."""
    if requested in (None, "", "auto"):
        return "cuda" if cuda_available() else "cpu"
    return str(requested)


def resolve_backend(requested: str, device: str) -> Literal["torch", "onnx", "onnx-int8"]:
    """The concrete backend: `auto` is torch fp32 on a GPU (dynamic int8 is a CPU technique), int8 ONNX on a CPU."""
    if requested == "auto":
        return "torch" if device.startswith("cuda") else "onnx-int8"
    if requested in ("torch", "onnx", "onnx-int8"):
        return requested  # type: ignore[return-value]
    raise ConfigurationError(f"unknown local backend {requested!r}; choose one of: {', '.join(LOCAL_BACKENDS)}.")


def pad_batch(windows: Sequence[Sequence[int]]) -> tuple[TokenIds, TokenIds]:
    """Right-pad token ids to the longest window; the mask marks the real tokens."""
    width = max(len(ids) for ids in windows)
    input_ids = np.zeros((len(windows), width), dtype=np.int64)
    attention_mask = np.zeros((len(windows), width), dtype=np.int64)
    for row, ids in enumerate(windows):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


# After a run, ONNX Runtime's idle threads spin-wait. By default that burned a whole core for
# 20-50 ms after every call here (python -m benchmarks.idle_cpu): CPU the MCP layer, the host and
# its neighbours need. A 1 ms spin still bridges the gaps between runs, at the same speed (±2%).
ONNX_SPIN_US = 1000
_SPIN_KEY = "session.intra_op.spin_duration_us"


class OnnxEncoder:
    """An exported sentence-transformers pipeline run by ONNX Runtime."""

    def __init__(self, model_bytes: bytes, *, threads: int, device: str, spin_us: int | None = ONNX_SPIN_US) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One inference at a time (the provider serialises calls), using every core for it.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if spin_us is not None:
            options.add_session_config_entry(_SPIN_KEY, str(spin_us))
        self.providers = _onnx_execution_providers(device, ort.get_available_providers())
        # Built from the bytes whose SHA-256 was checked, so the file cannot change in between.
        self._session = ort.InferenceSession(model_bytes, options, providers=self.providers)

    @property
    def threads(self) -> int:
        """Intra-op threads as the session has them."""
        return int(self._session.get_session_options().intra_op_num_threads)

    @property
    def spin_us(self) -> int | None:
        """How long idle intra-op threads spin before sleeping, as the session has it (None: ONNX Runtime's default)."""
        try:
            return int(self._session.get_session_options().get_session_config_entry(_SPIN_KEY))
        except RuntimeError:  # not set
            return None

    def encode(self, input_ids: TokenIds, attention_mask: TokenIds) -> Vectors:
        (vectors,) = self._session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        return np.asarray(vectors, dtype=np.float32)


class TorchEncoder:
    """The sentence-transformers model itself, called on token ids."""

    def __init__(self, model: SentenceTransformer, *, threads: int) -> None:
        import torch

        if model.device.type == "cpu":
            torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool
        self._model = model
        self._takes_token_types = "token_type_ids" in model.tokenizer.model_input_names

    @property
    def threads(self) -> int:
        import torch

        return int(torch.get_num_threads())

    def encode(self, input_ids: TokenIds, attention_mask: TokenIds) -> Vectors:
        import torch

        device = self._model.device
        features = {
            "input_ids": torch.from_numpy(input_ids).to(device),
            "attention_mask": torch.from_numpy(attention_mask).to(device),
        }
        if self._takes_token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        with torch.inference_mode():
            vectors = self._model(features)["sentence_embedding"]
        return vectors.float().cpu().numpy()  # type: ignore[no-any-return]


def _onnx_execution_providers(device: str, available: Sequence[str]) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]  # pragma: no cover - needs a GPU
    raise ConfigurationError(
        f"the ONNX backends cannot run on device {device!r} with this onnxruntime "
        f"(it offers {', '.join(available)}): use backend 'torch' for GPUs, or install onnxruntime-gpu."
    )
