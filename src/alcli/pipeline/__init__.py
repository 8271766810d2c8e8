"""The embedding pipeline: prefetch -> preprocess -> infer, each stage on its own threads.

This is the paper's stage-level parallelism. Reading (network or disk, GIL released) runs on
many I/O threads; decoding (PIL and numpy, GIL mostly released) on a few decode threads; the
model runs on full batches in one or more model threads (streams). While the model works
on batch k, batches k+1.. are being read and decoded, so a run costs about max(stage costs)
per item instead of their sum. Batches come out in input order, memory stays bounded
whatever the pool size, a worker's error is wrapped (``StageError``) and re-raised in the
consumer, and a stop event ends the run at a batch boundary. The stages are plain callables,
so the same functions can later be mapped by a distributed engine.

One concept per module, each with the measurements that justify it:

- ``reading``: the prefetch stage, its bounded window, read deadlines, the store watch;
- ``decoding``: the preprocess stage, on decode threads or inline on the model streams;
- ``infer``: the model streams, collecting batches in order and stacking them;
- ``ordering``: the two reorder buffers (items into batches, batches out) in input order;
- ``threads``: model streams, torch's thread count and its tuner, the workers' priority;
- ``control``: the one lock, the stop and the first error; what each condition means;
- ``engine``: the stages wired together for one run, and its shutdown;
- ``results``: ``BatchResult``, ``Failure``, ``StageError``, ``PipelineStats``;
- ``interrupt``: ``CtrlCStops``, Ctrl-C as a stop request;
- ``run``: ``run_pipeline`` and the consumer's handle, ``PipelineRun``;
- ``ray_engine``, ``ray_workers``: the same consumer contract on Ray Data (``RayRun``,
  ``--engine ray``), its driver and what its workers run; ray is imported only when one runs.

Importing this package does not import torch (a warm run never loads it). The names below
are the module's public API, as they were when it was one file.
"""

from alcli.pipeline.engine import THREAD_PREFIX
from alcli.pipeline.interrupt import CtrlCStops
from alcli.pipeline.ray_engine import RayRun, RaySettings
from alcli.pipeline.reading import UNREACHABLE_LIMIT
from alcli.pipeline.results import (
    STAGES,
    BatchResult,
    Failure,
    PipelineStats,
    StageError,
    StageStats,
)
from alcli.pipeline.run import PipelineRun, run_pipeline
from alcli.pipeline.threads import (
    MAX_CPU_STREAMS,
    ThreadTuner,
    cpu_streams,
    lower_thread_priority,
    machine_idle_seconds,
)

__all__ = [
    "MAX_CPU_STREAMS",
    "STAGES",
    "THREAD_PREFIX",
    "UNREACHABLE_LIMIT",
    "BatchResult",
    "CtrlCStops",
    "Failure",
    "PipelineRun",
    "PipelineStats",
    "RayRun",
    "RaySettings",
    "StageError",
    "StageStats",
    "ThreadTuner",
    "cpu_streams",
    "lower_thread_priority",
    "machine_idle_seconds",
    "run_pipeline",
]
