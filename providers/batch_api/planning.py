"""A job's plan (requests over its work list) and each request's JSONL line. Runs in a worker thread."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from providers.batch_api.options import BatchApiOptions
from providers.batch_api.packing import custom_id, request_line
from providers.batch_api.state import RequestRow
from providers.remote.batching import overlong_items, plan_batches
from providers.text.tokens import Tokenizer

__all__ = ["JobPlan", "plan_job", "request_body"]


@dataclass(frozen=True)
class JobPlan:
    requests: list[tuple[str, int, int, int]]
    """(custom_id, start, stop, tokens) of each request, over contiguous work-list positions."""
    dropped: dict[int, int]
    """Work-list position → tokens cut from that over-long text."""


def plan_job(texts: Sequence[str], tokenizer: Tokenizer, options: BatchApiOptions) -> JobPlan:
    """Count, cut over-long texts (or refuse them), and pack the texts into requests in order."""
    limits = options.limits.request
    counts = [tokenizer.count(text) for text in texts]
    dropped: dict[int, int] = {}
    for index in overlong_items(counts, limits, options.overlong):
        kept = tokenizer.count(tokenizer.truncate(texts[index], limits.max_input_tokens))
        dropped[index] = counts[index] - kept
        counts[index] = kept
    requests = []
    for group in plan_batches(counts, limits):
        start, stop = group[0], group[-1] + 1
        requests.append((custom_id(start, stop), start, stop, sum(counts[start:stop])))
    return JobPlan(requests, dropped)


def request_body(
    request: RequestRow,
    work: Sequence[str],
    tokenizer: Tokenizer,
    model: str,
    dimensions: int,
    options: BatchApiOptions,
) -> bytes:
    """The input-file line of one request, its over-long texts cut exactly as when it was planned."""
    limit = options.limits.request.max_input_tokens
    inputs = []
    for text in work[request.start : request.stop]:
        # No text has more tokens than UTF-8 bytes: only longer ones can need cutting.
        if len(text) > limit // 4 and len(text.encode("utf-8", "surrogatepass")) > limit:
            text = tokenizer.truncate(text, limit) if tokenizer.count(text) > limit else text
        inputs.append(text)
    body: dict[str, Any] = {"model": model, "input": inputs, "encoding_format": options.encoding_format}
    if (param := options.dimensions_param(model)) is not None and param == dimensions:
        body["dimensions"] = param
    return request_line(request.custom_id, body)
