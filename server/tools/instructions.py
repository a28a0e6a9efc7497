"""What `initialize` tells the model first: often all it sees before it picks a tool."""

from __future__ import annotations

from providers.settings import VectorsMode

__all__ = ["instructions"]

_INSTRUCTIONS = """\
Embeddings for semantic code search. Pick the tool by need:
- which snippets match a query: rank_texts (ranked indexes and scores)
- near-copies among texts: find_duplicates
- index a file or directory: start_embedding_job, then poll job_status
- price a job before running it: estimate_cost; money spent: get_cost
{vectors}
Never mix vectors of two `space` ids: `fallback: true` means another provider answered."""
_VECTORS = {
    "inline": "- vectors for a program to store: embed_text, embed_batch (they return the vectors)",
    "on_request": "- vectors for a program to store: embed_text, embed_batch with include_vectors: true; "
    "without it they answer count, space, tokens and cost but no vectors",
}


def instructions(vectors: VectorsMode) -> str:
    """What `initialize` tells the model first (often all it sees before it picks a tool): true under `vectors`."""
    return _INSTRUCTIONS.format(vectors=_VECTORS[vectors])
