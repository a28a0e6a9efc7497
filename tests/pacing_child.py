"""A process that paces through a shared data directory, for tests/test_pacing_processes.py.

    python -m tests.pacing_child embed DATA_DIR BASE_URL KEY FIRST COUNT   # embed texts FIRST..FIRST+COUNT
    python -m tests.pacing_child wait DATA_DIR ENDPOINT KEY                # queue for the buckets, forever

`embed` prints a JSON line: the texts embedded and how many vectors were not the loopback's.
`wait` drains a 6000-TPM bucket, then waits in the queue for a full one (a minute) with 1 s leases.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import numpy as np

from providers.openai import OpenAIOptions, OpenAIProvider, openai_options
from providers.remote.pacing import PACER_FILE, SharedPacer
from providers.settings import Settings
from tests.loopback_openai import embedding_for

MODEL = "text-embedding-3-small"


def text(number: int) -> str:
    """A distinct code-like text of about 200 loopback tokens."""
    body = " ".join(f"value_{number}_{part} = compute(value_{part}, {number})" for part in range(20))
    return f"def function_{number}(items):\n    {body}\n    return items"


async def embed(data_dir: Path, base_url: str, key: str, first: int, count: int) -> None:
    settings = Settings(
        provider="openai",
        data_dir=data_dir,
        openai_base_url=base_url,
        openai_api_key=key,
        provider_options={"openai": OpenAIOptions(rate_window=1.0, encoding_format="float")},
    )
    provider = OpenAIProvider.from_settings(settings, options=openai_options(settings))
    texts = [text(number) for number in range(first, first + count)]
    try:
        result = await provider.embed(texts)
    finally:
        await provider.aclose()
    expected = np.stack([embedding_for(item, MODEL) for item in texts])
    wrong = int((np.abs(result.vectors - expected).max(axis=1) > 1e-5).sum())
    print(json.dumps({"embedded": len(texts), "wrong": wrong}), flush=True)


async def wait(data_dir: Path, endpoint: str, key: str) -> None:
    pacer = SharedPacer(data_dir / PACER_FILE, endpoint, key, tpm=6000)
    pacer.lease = 1.0
    await pacer.acquire(6000, interactive=False)
    await pacer.acquire(6000, interactive=False)  # a minute's wait: the parent kills us first


def main() -> None:
    mode, data_dir, *rest = sys.argv[1:]
    if mode == "embed":
        base_url, key, first, count = rest
        anyio.run(embed, Path(data_dir), base_url, key, int(first), int(count))
    else:
        endpoint, key = rest
        anyio.run(wait, Path(data_dir), endpoint, key)


if __name__ == "__main__":
    main()
