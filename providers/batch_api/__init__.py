"""The OpenAI Batch API as an engine for embedding jobs: half price, run on OpenAI's fleet within 24 h."""

from providers.batch_api.engine import BatchApiEngine
from providers.batch_api.entry import batch_engine, embed_with_batch_api
from providers.batch_api.options import BatchApiOptions
from providers.batch_api.packing import BATCH_API_LIMITS, BatchLimits, custom_id, parse_custom_id, plan_files
from providers.batch_api.state import BatchState
from providers.batch_api.status import BatchCostEstimate, BatchJobResult, BatchJobStatus, BatchProgress

__all__ = [
    "BATCH_API_LIMITS",
    "BatchApiEngine",
    "BatchApiOptions",
    "BatchCostEstimate",
    "BatchJobResult",
    "BatchJobStatus",
    "BatchLimits",
    "BatchProgress",
    "BatchState",
    "batch_engine",
    "custom_id",
    "embed_with_batch_api",
    "parse_custom_id",
    "plan_files",
]
