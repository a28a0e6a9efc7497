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
    return vectors.tolist()  # type: ignore[no-any-return]
