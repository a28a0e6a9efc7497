"""Packing texts into Batch API input files: pure functions of sizes and limits, no I/O.

```python
requests = plan_batches(token_counts, limits.request)          # index ranges, one per request
lines = [request_line(custom_id(r[0], r[-1] + 1), body(r)) for r in requests]
files = plan_files([(len(r), len(line)) for r, line in zip(requests, lines)], limits)
```

A request's `custom_id` names its texts: `texts-<start>-<stop>` is the half-open range of
positions in the job's work list, so any answer maps back to exactly the texts it embeds, in
whatever order the output file lists it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from providers.remote.batching import OPENAI_LIMITS, RequestLimits

__all__ = [
    "BATCH_API_LIMITS",
    "BatchLimits",
    "custom_id",
    "parse_custom_id",
    "plan_files",
    "request_line",
]

ENDPOINT: Final = "/v1/embeddings"
_CUSTOM_ID = re.compile(r"texts-(\d+)-(\d+)")


@dataclass(frozen=True, kw_only=True)
class BatchLimits:
    """What one Batch API input file (one batch) may hold."""

    max_requests: int = 50_000
    """Requests (JSONL lines) per file."""
    max_file_bytes: int = 200 * 1024 * 1024
    """Size of one input file."""
    max_inputs: int = 50_000
    """Embedding inputs summed over all requests of one batch."""
    request: RequestLimits = field(default=OPENAI_LIMITS)
    """What each request's body may hold: the `/v1/embeddings` limits."""

    def __post_init__(self) -> None:
        if min(self.max_requests, self.max_file_bytes, self.max_inputs) < 1:
            raise ValueError(f"every batch limit must be positive: {self}")
        if self.request.max_inputs > self.max_inputs:
            raise ValueError(f"a request may not hold more inputs than a batch: {self}")


BATCH_API_LIMITS = BatchLimits()
"""OpenAI's documented limits for `/v1/embeddings` batches."""


def custom_id(start: int, stop: int) -> str:
    """The id of the request embedding work-list positions `start` up to (not including) `stop`."""
    if not 0 <= start < stop:
        raise ValueError(f"a request holds at least one text: {start}..{stop}")
    return f"texts-{start}-{stop}"


def parse_custom_id(value: object) -> range | None:
    """The positions a `custom_id` names, or None when it is not one of ours."""
    match = _CUSTOM_ID.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    start, stop = int(match[1]), int(match[2])
    return range(start, stop) if start < stop else None


def request_line(request_id: str, body: dict[str, Any]) -> bytes:
    """One JSONL line of an input file (newline included)."""
    line = {"custom_id": request_id, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass") + b"\n"


def plan_files(requests: Sequence[tuple[int, int]], limits: BatchLimits) -> list[list[int]]:
    """Group requests, given as (inputs, line bytes), into files, in order, each within the batch limits.

    Greedy like `plan_batches`: a file closes when the next request would break any limit, which
    for requests in a fixed order gives the fewest files.
    """
    files: list[list[int]] = []
    current: list[int] = []
    inputs = size = 0
    for index, (count, line_bytes) in enumerate(requests):
        if not 1 <= count <= limits.max_inputs or not 1 <= line_bytes <= limits.max_file_bytes:
            raise ValueError(
                f"request {index} ({count} inputs, {line_bytes} bytes) cannot fit in any batch file: {limits}"
            )
        if current and (
            len(current) == limits.max_requests
            or inputs + count > limits.max_inputs
            or size + line_bytes > limits.max_file_bytes
        ):
            files.append(current)
            current, inputs, size = [], 0, 0
        current.append(index)
        inputs += count
        size += line_bytes
    if current:
        files.append(current)
    return files
