"""How vectors travel in a tool result, and how big that result may grow."""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
import numpy.typing as npt

from providers import ResponseTooLargeError

Encoding = Literal["float", "base64"]

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
"""The TypeScript MCP SDK (Inspector, many clients) drops a stdio connection on a larger message."""

# Room kept for the other fields, the text summary and JSON-RPC framing.
_VECTOR_BYTES_BUDGET = MAX_MESSAGE_BYTES - 512 * 1024

# Worst case of one float32 value printed as JSON: "-1.2345678901234567e-05, ".
_FLOAT_JSON_BYTES = 25


def encoded_vector_bytes(dimensions: int, encoding: Encoding) -> int:
    """Upper bound on the JSON size of one vector."""
    if encoding == "base64":
        return 4 * -(-dimensions * 4 // 3) + 4  # base64 of float32 bytes, quotes and a comma
    return dimensions * _FLOAT_JSON_BYTES + 4


def max_vectors_per_message(dimensions: int, encoding: Encoding) -> int:
    return _VECTOR_BYTES_BUDGET // encoded_vector_bytes(dimensions, encoding)


def check_message_size(count: int, dimensions: int, encoding: Encoding) -> None:
    """Refuse, before any work is done, a call whose answer could not be delivered."""
    limit = max_vectors_per_message(dimensions, encoding)
    if count <= limit:
        return
    size_mib = count * encoded_vector_bytes(dimensions, encoding) / 2**20
    hint = (
        f" or use encoding='base64' (up to {max_vectors_per_message(dimensions, 'base64')} texts per call)"
        if encoding == "float"
        else ""
    )
    raise ResponseTooLargeError(
        f"{count} vectors of {dimensions} dimensions as {encoding} make an answer of about {size_mib:.1f} MiB; "
        f"one MCP message may carry {MAX_MESSAGE_BYTES // 2**20} MiB. "
        f"Send at most {limit} texts per call{hint}."
    )


def encode_vectors(vectors: npt.NDArray[np.float32], encoding: Encoding) -> list[list[float]] | list[str]:
    if encoding == "base64":
        # Little-endian float32, as the OpenAI API encodes it.
        little_endian = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in little_endian]
    return short_decimals(vectors).tolist()  # type: ignore[no-any-return]


def short_decimals(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Each float32 as the float64 of a decimal of at most 9 digits that reads back as the same float32.

    A float32 widened to float64 prints with up to 17 digits (0.1 -> 0.10000000149011612), though
    9 always suffice to recover it: this shrinks the JSON clients must parse by 40%, losing nothing.
    """
    exact = np.asarray(vectors, dtype=np.float32)
    wide = exact.astype(np.float64)
    out = wide.copy()
    todo = np.isfinite(wide) & (wide != 0)
    magnitude = np.floor(np.log10(np.abs(np.where(todo, wide, 1.0))))
    for digits in (8, 9):  # 8 digits recover most float32s; 9 recover every one
        if not todo.any():
            break
        # Scale by an exact power of ten: multiply by it, or divide by it for large values.
        exponent = digits - 1 - magnitude
        power = 10.0 ** np.abs(exponent)
        rounded = np.where(exponent >= 0, np.round(wide * power) / power, np.round(wide / power) * power)
        # Beyond 10**22 a power of ten is inexact in float64, and so would the decimal be: keep those as they are.
        found = todo & (np.abs(exponent) <= 22) & (rounded.astype(np.float32) == exact)
        out[found] = rounded[found]
        todo &= ~found
    return out
