"""Reading a batch's output and error files into checked per-request outcomes. Pure: text in, outcomes out.

Each output line answers one request: `{"custom_id", "response": {"status_code", "body"}, "error"}`.
A 200 body is an embeddings response, checked like a synchronous one (count, index, dimensions,
finite values) before its vectors are kept. Any other answer is a failure, retryable or not, and
its message is made safe (`redaction.safe_message`) before it is stored or shown. A request a file
answers twice gets nothing from that file: which line is right cannot be told, so it is sent again.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from providers.batch_api.packing import parse_custom_id
from providers.redaction import safe_message

__all__ = ["RequestOutcome", "read_file", "read_results"]

# Answers a later identical request could get through; the rest fail for good.
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RETRYABLE_CODES = frozenset({"batch_cancelled", "batch_expired", "rate_limit_exceeded", "server_error", "timeout"})


@dataclass(frozen=True)
class RequestOutcome:
    """What became of one request: its vectors and billed tokens, or why it failed."""

    custom_id: str
    positions: range
    vectors: npt.NDArray[np.float32] | None = None
    tokens: int = 0
    error: str | None = None
    retryable: bool = False
    expired: bool = False

    @property
    def ok(self) -> bool:
        return self.vectors is not None


def read_file(text: str, dimensions: int) -> dict[str, RequestOutcome]:
    """custom_id → outcome of one output or error file; a custom_id on two lines is a retryable failure."""
    outcomes: dict[str, RequestOutcome] = {}
    repeated: set[str] = set()
    for outcome in read_results(text, dimensions):
        if outcome.custom_id in outcomes:
            repeated.add(outcome.custom_id)
        outcomes[outcome.custom_id] = outcome
    for request_id in repeated:
        outcomes[request_id] = RequestOutcome(
            request_id,
            outcomes[request_id].positions,
            error="the result file answers this request on more than one line; none of them was used",
            retryable=True,
        )
    return outcomes


def read_results(text: str, dimensions: int) -> Iterator[RequestOutcome]:
    """The outcome of each request one output or error file names (lines not ours are skipped)."""
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, Mapping) or (positions := parse_custom_id(entry.get("custom_id"))) is None:
            continue
        outcome = _outcome(str(entry["custom_id"]), positions, entry, dimensions)
        if outcome.error is not None:  # what the file says, as it is stored and shown
            outcome = dataclasses.replace(outcome, error=safe_message(outcome.error))
        yield outcome


def _outcome(request_id: str, positions: range, entry: Mapping[str, object], dimensions: int) -> RequestOutcome:
    error = entry.get("error")
    response = entry.get("response")
    if isinstance(error, Mapping):
        code = str(error.get("code") or "")
        return RequestOutcome(
            request_id,
            positions,
            error=f"{code}: {error.get('message')}",
            retryable=code in _RETRYABLE_CODES,
            expired=code == "batch_expired",
        )
    if not isinstance(response, Mapping):
        return RequestOutcome(request_id, positions, error="no response in the output line", retryable=True)
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        detail = body.get("error") if isinstance(body, Mapping) else None
        message = detail.get("message") if isinstance(detail, Mapping) else body
        return RequestOutcome(
            request_id, positions, error=f"HTTP {status}: {message}", retryable=status in _RETRYABLE_STATUS
        )
    try:
        vectors, tokens = _checked(body, len(positions), dimensions)
    except ValueError as exc:
        # A malformed answer is treated like a transient fault: the request is sent again.
        return RequestOutcome(request_id, positions, error=str(exc), retryable=True)
    return RequestOutcome(request_id, positions, vectors=vectors, tokens=tokens)


def _checked(body: object, expected: int, dimensions: int) -> tuple[npt.NDArray[np.float32], int]:
    if not isinstance(body, Mapping) or not isinstance(data := body.get("data"), list) or len(data) != expected:
        count = len(data) if isinstance(body, Mapping) and isinstance(data := body.get("data"), list) else "no"
        raise ValueError(f"{count} vectors for {expected} texts")
    usage = body.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, Mapping) else None
    if type(tokens) is not int or tokens < 0:
        raise ValueError("no usage.prompt_tokens in the answer")
    vectors = np.empty((expected, dimensions), dtype=np.float32)
    seen = np.zeros(expected, dtype=bool)
    for item in data:
        index = item.get("index") if isinstance(item, Mapping) else None
        if type(index) is not int or not 0 <= index < expected or seen[index]:
            raise ValueError(f"a vector with index {index} for {expected} texts")
        vector = _decode(item.get("embedding"))
        if vector.shape != (dimensions,):
            raise ValueError(f"a vector of length {vector.size}, expected {dimensions}")
        vectors[index] = vector
        seen[index] = True
    if not np.isfinite(vectors).all():
        raise ValueError("a vector with NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("an all-zero vector")
    vectors /= norms
    return vectors, tokens


def _decode(embedding: object) -> npt.NDArray[np.float32]:
    try:
        if isinstance(embedding, str):
            return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4").astype(np.float32)
        return np.asarray(embedding, dtype=np.float32).reshape(-1)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"a vector that is not floats or base64 float32 ({exc})") from exc
