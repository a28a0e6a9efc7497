"""The Files and Batches APIs through the official `openai` SDK, and the one place their errors become ours.

Messages are redacted and cut where every error's are (`EmbeddingError`, `redaction.safe_message`);
the batch's own validation errors, which are no exception, go through `safe_message` here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import openai

from providers.batch_api.packing import ENDPOINT
from providers.errors import (
    AuthenticationError,
    ConfigurationError,
    EmbeddingError,
    InputError,
    ProviderError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from providers.openai import api_message
from providers.redaction import safe_message
from providers.remote.capped import DEFAULT_CAP, response_cap

__all__ = ["BatchRemote", "RemoteBatch", "is_transient"]

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})


@dataclass(frozen=True)
class RemoteBatch:
    """What the Batches API says about one batch."""

    id: str
    status: str
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    errors: str | None
    """Why a batch failed validation, as the API put it."""

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class BatchRemote:
    """Uploads input files, creates, reads, finds and cancels batches, downloads result files."""

    def __init__(
        self, client: openai.AsyncOpenAI, *, completion_window: str = "24h", page_size: int = 100, pages: int = 20
    ) -> None:
        self.client = client
        self.completion_window = completion_window
        # Looking for an unrecorded batch reads at most `pages` pages of `page_size`, newest first.
        self.page_size = page_size
        self.pages = pages

    async def upload(self, name: str, content: bytes) -> str:
        try:
            uploaded = await self.client.files.create(file=(name, content, "application/jsonl"), purpose="batch")
        except (openai.OpenAIError, TimeoutError) as exc:
            raise translate(exc, "uploading a batch input file") from exc
        return uploaded.id

    async def create(self, input_file_id: str, metadata: Mapping[str, str]) -> RemoteBatch:
        try:
            batch = await self.client.batches.create(
                input_file_id=input_file_id,
                endpoint=ENDPOINT,
                completion_window=self.completion_window,  # type: ignore[arg-type]
                metadata=dict(metadata),
            )
        except (openai.OpenAIError, TimeoutError) as exc:
            raise translate(exc, "creating a batch") from exc
        return _remote(batch)

    async def retrieve(self, batch_id: str) -> RemoteBatch:
        """The batch's status; transient failures are raised as the SDK's own errors (see `is_transient`)."""
        return _remote(await self.client.batches.retrieve(batch_id))

    async def cancel(self, batch_id: str) -> RemoteBatch:
        try:
            return _remote(await self.client.batches.cancel(batch_id))
        except openai.ConflictError:  # already finished or cancelling: nothing left to stop
            return await self.retrieve(batch_id)
        except (openai.OpenAIError, TimeoutError) as exc:
            raise translate(exc, f"cancelling batch {batch_id}") from exc

    async def find(self, input_file_id: str) -> RemoteBatch | None:
        """The batch created from `input_file_id`, if any: how a restarted run finds an unrecorded batch."""
        try:
            page = await self.client.batches.list(limit=self.page_size)
            for _ in range(self.pages):
                for batch in page.data:
                    if batch.input_file_id == input_file_id:
                        return _remote(batch)
                if not page.has_next_page():
                    return None
                page = await page.get_next_page()
        except (openai.OpenAIError, TimeoutError) as exc:
            raise translate(exc, "listing batches") from exc
        raise ProviderError(
            f"could not tell whether input file {input_file_id} already has a batch: too many batches to list; "
            "nothing was submitted. Cancel old batches or retry later."
        )

    async def download(self, file_id: str, cap: int = DEFAULT_CAP) -> str:
        """The file's text; `cap` bounds its size, decompressed (the largest plausible one for its batch)."""
        try:
            with response_cap(cap):
                content = await self.client.files.content(file_id)
        except (openai.OpenAIError, TimeoutError) as exc:
            raise translate(exc, f"downloading file {file_id}") from exc
        return content.text


def is_transient(exc: BaseException) -> bool:
    """A failure a later poll can get past: 5xx, 408, 429 (not quota), timeouts, dropped connections."""
    if isinstance(exc, openai.RateLimitError):
        return exc.code != "insufficient_quota"
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 408 or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError | TimeoutError)


def translate(exc: BaseException, doing: str) -> EmbeddingError:
    """The one place SDK exceptions of the Batch API become ours (`EmbeddingError` redacts and cuts them)."""
    detail = api_message(exc)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return AuthenticationError(f"OpenAI rejected the API key while {doing}: {detail} Check OPENAI_API_KEY.")
    if isinstance(exc, openai.RateLimitError) and exc.code == "insufficient_quota":
        return QuotaExceededError(f"the OpenAI account has no credit left ({doing}): {detail} Add credit, then retry.")
    if isinstance(exc, openai.RateLimitError):
        return RateLimitError(
            f"OpenAI rate limited {doing}: {detail} The Batch API queue may be full; wait for running batches."
        )
    if isinstance(exc, openai.NotFoundError):
        return ConfigurationError(f"OpenAI found nothing while {doing}: {detail} Check OPENAI_BASE_URL.")
    if isinstance(exc, openai.APIStatusError) and exc.status_code < 500 and exc.status_code != 408:
        return InputError(f"OpenAI refused {doing} ({exc.status_code}): {detail}")
    if is_transient(exc):
        return ProviderUnavailableError(f"OpenAI failed while {doing}: {detail} Retry later; the job re-attaches.")
    return ProviderError(f"the OpenAI SDK failed while {doing}: {detail}")


def _remote(batch: openai.types.Batch) -> RemoteBatch:
    counts = batch.request_counts
    errors = None
    if batch.errors is not None and batch.errors.data:
        errors = safe_message(
            "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in batch.errors.data)
        )
    return RemoteBatch(
        id=batch.id,
        status=batch.status,
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        total=counts.total if counts else 0,
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        errors=errors,
    )
