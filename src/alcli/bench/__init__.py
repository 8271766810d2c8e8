"""What ``alcli bench`` measures: how fast alcli embeds and selects on this machine, and why.

On the first ``limit`` items of the pool, each round measures the cold pipeline, the bound
(the model alone) and a plain sequential loop; the ratio pipeline / bound and the stages' busy
seconds name the bottleneck. Then each strategy is timed once at the whole pool's size, on
synthetic arrays of the model's width. One concept per module:

- ``run``: ``run_bench``, the whole command: cheap checks, listing, both sides, the report;
- ``embedding_side``: the rounds: cold pipeline (``timed_embed``), bound, plain loop
  (``sequential_ips``), warm-up and warm rerun, all in a throw-away cache;
- ``bound``: ``ModelOnly``, the model alone on pre-decoded tensors, by thread layout;
- ``diagnosis``: ``diagnose``, the bottleneck's kind and a one-line hint;
- ``report``: ``Round`` and ``BenchReport``, the medians and the ``--json`` object;
- ``strategy_timing``: ``strategy_names``, ``time_strategy``, ``time_strategies``;
- ``synthetic``: ``synthetic_inputs``, the seeded stand-ins the strategies run on.

``benchmarks/embed_throughput.py`` builds its MNIST, local-vs-S3 measurements from the same
pieces (``ModelOnly``, ``in_fresh_thread``, ``timed_embed``, ``sequential_ips``). torch and the
model code are imported where a model is built, not with this package, so a process that only
times strategies stays as light as the strategies themselves. The names below are the public
API, as they were when bench was one module; ``STRATEGY_INPUT_BYTES`` is read from here at
call time, so setting it here takes effect.
"""

from alcli.bench.bound import (
    BOUND_TENSOR_BYTES,
    ModelOnly,
    in_fresh_thread,
    layout_cores,
    layout_key,
)
from alcli.bench.diagnosis import MODEL_BOUND_RATIO, SATURATED, diagnose
from alcli.bench.embedding_side import sequential_ips, timed_embed
from alcli.bench.report import FAILURES_SHOWN, BenchReport, Round
from alcli.bench.run import run_bench
from alcli.bench.strategy_timing import (
    DEFAULT_STRATEGIES,
    STRATEGY_COMMITTEE,
    STRATEGY_INPUT_BYTES,
    StrategyBench,
    StrategyTiming,
    default_budget,
    strategy_names,
    time_strategies,
    time_strategy,
)
from alcli.bench.synthetic import STRATEGY_CLASSES, input_bytes_per_row, synthetic_inputs

__all__ = [
    "BOUND_TENSOR_BYTES",
    "DEFAULT_STRATEGIES",
    "FAILURES_SHOWN",
    "MODEL_BOUND_RATIO",
    "SATURATED",
    "STRATEGY_CLASSES",
    "STRATEGY_COMMITTEE",
    "STRATEGY_INPUT_BYTES",
    "BenchReport",
    "ModelOnly",
    "Round",
    "StrategyBench",
    "StrategyTiming",
    "default_budget",
    "diagnose",
    "in_fresh_thread",
    "input_bytes_per_row",
    "layout_cores",
    "layout_key",
    "run_bench",
    "sequential_ips",
    "strategy_names",
    "synthetic_inputs",
    "time_strategies",
    "time_strategy",
    "timed_embed",
]
