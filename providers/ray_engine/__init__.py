"""Ray Data as the engine for local-model embedding jobs: one machine or a cluster, no code change.

```python
from providers.ray_engine import RayJobOptions, run_ray_job

report = run_ray_job(RayJobOptions(inputs=("chunks.jsonl",), output=Path("vectors")), Settings.from_env())
```

Ray is an optional extra (`pip install 'signal-hub-embeddings[ray]'`); nothing here imports it
until a job runs. From a shell: `python -m providers.ray_engine chunks.jsonl -o vectors/`.
"""

from __future__ import annotations

from providers.ray_engine.connect import INSTALL_HINT
from providers.ray_engine.job import (
    InputFormat,
    JobCancelled,
    RayJobOptions,
    RayJobReport,
    run_ray_job,
    size_actor_pool,
)
from providers.ray_engine.output import SHARD_FORMATS, ShardFormat, read_shards

__all__ = [
    "INSTALL_HINT",
    "SHARD_FORMATS",
    "InputFormat",
    "JobCancelled",
    "RayJobOptions",
    "RayJobReport",
    "ShardFormat",
    "read_shards",
    "run_ray_job",
    "size_actor_pool",
]
