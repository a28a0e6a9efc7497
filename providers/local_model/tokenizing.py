"""The local model's inputs: its plain tokenizer, its special tokens, and windows encoded in batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from providers.local_model.encoders import SentenceEncoder, pad_batch

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["encode_windows", "plain_tokenizer", "special_token_counts"]


def encode_windows(encoder: SentenceEncoder, batch_size: int, windows: list[list[int]]) -> npt.NDArray[np.float32]:
    """L2-normalised vectors of token windows, `batch_size` windows per model call."""
    parts = [
        encoder.encode(*pad_batch(windows[start : start + batch_size])) for start in range(0, len(windows), batch_size)
    ]
    vectors = np.concatenate(parts).astype(np.float32, copy=False)
    normalised: npt.NDArray[np.float32] = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return normalised


def plain_tokenizer(tokenizer_json: str) -> Tokenizer:
    """The model's tokenizer without padding or truncation: windows are cut by `plan_windows`."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def special_token_counts(tokenizer: Tokenizer) -> tuple[int, int]:
    mask = tokenizer.encode("x", add_special_tokens=True).special_tokens_mask
    leading = next((i for i, special in enumerate(mask) if not special), len(mask))
    trailing = next((i for i, special in enumerate(reversed(mask)) if not special), 0)
    return leading, trailing
