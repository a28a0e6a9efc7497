"""What a finished batch's result files mean for each of its requests. Pure: rows and outcomes in, verdicts out."""

from __future__ import annotations

from collections.abc import Mapping

from providers.batch_api.remote import RemoteBatch
from providers.batch_api.results import RequestOutcome
from providers.batch_api.state import DONE, FAILED, PENDING, RequestRow
from providers.remote.capped import answer_bytes
from providers.remote.usage import plausible_tokens

__all__ = ["download_cap", "implausible", "verdicts"]

_LINE_BYTES = 4096
"""Of a result line, beyond its vectors: ids, status, usage, an error message."""


def download_cap(requests: Mapping[str, RequestRow], dimensions: int) -> int:
    """Bytes, decompressed, of the largest plausible output (or error) file of a batch of `requests`."""
    texts = sum(r.stop - r.start for r in requests.values())
    return answer_bytes(texts, dimensions) + _LINE_BYTES * len(requests)


def implausible(requests: Mapping[str, RequestRow], done: list[RequestOutcome]) -> list[RequestOutcome]:
    """Answers reporting more tokens than their texts can have (we counted each request when planning it)."""
    return [o for o in done if o.tokens > plausible_tokens(requests[o.custom_id].tokens, len(o.positions))]


def verdicts(
    remote: RemoteBatch,
    requests: Mapping[str, RequestRow],
    outcomes: Mapping[str, RequestOutcome],
    done: set[str],
    *,
    cancelled: bool,
    max_tries: int,
) -> dict[str, tuple[str, str | None]]:
    """Each request's next status: done, pending (sent again) or failed for good, with why."""
    result: dict[str, tuple[str, str | None]] = {}
    for request_id, row in requests.items():
        outcome = outcomes.get(request_id)
        if request_id in done:
            result[request_id] = (DONE, None)
        elif remote.status == "failed":
            result[request_id] = (FAILED, f"the batch failed validation: {remote.errors or 'no reason given'}")
        elif cancelled:  # a batch cancelled while its job is not (resumed since) is sent again, like an expiry
            result[request_id] = (FAILED, "cancelled")
        elif outcome is not None and not outcome.retryable:
            result[request_id] = (FAILED, outcome.error)
        elif row.tries >= max_tries:
            reason = outcome.error if outcome is not None else f"no answer from a {remote.status} batch"
            result[request_id] = (FAILED, f"{reason} (after {row.tries} tries)")
        else:
            result[request_id] = (PENDING, outcome.error if outcome is not None else None)
    return result
