"""Why the pipeline runs at the speed it does: a kind and a one-line hint for the user.

From ``pipeline / bound`` and the stages' utilization (busy seconds over the run's wall time
per thread): close enough to the bound, the model itself is the limit; below it, the stage the
model waited on, or contention for the cores, or a sample too small to fill the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping

#: pipeline / bound at or above this: the model itself is the limit.
MODEL_BOUND_RATIO = 0.85
#: A stage whose threads were busy this share of the run held the model up.
SATURATED = 0.8


def diagnose(
    ratio: float,
    stages: Mapping[str, Mapping[str, float]],
    *,
    bound_ips: float,
    io_threads: int,
    decode_threads: int,
    cores: int,
    build_wait_s: float = 0.0,
    wall_s: float = 0.0,
) -> tuple[str, str]:
    """(kind, one-line hint) from pipeline / bound and the stages' utilization.

    Kinds: ``model`` (the pipeline keeps up with the model), ``build`` (it would, but for the
    first batch waiting ``build_wait_s`` of the pipeline's ``wall_s`` for the network: a
    small sample's artefact), ``contention`` (the model thread was busy but slower than
    alone), ``io`` / ``decode`` (the model waited on that stage), ``ramp`` (nothing
    saturated: a sample this small is mostly filling and draining).
    """
    if ratio >= MODEL_BOUND_RATIO:
        return "model", (
            f"model bound: the pipeline runs at {ratio:.0%} of the model's own speed; a smaller "
            "--image-size, a lighter --model or a GPU (--device cuda) is what makes it faster"
        )
    if 0 < build_wait_s < wall_s and ratio * wall_s / (wall_s - build_wait_s) >= MODEL_BOUND_RATIO:
        after = ratio * wall_s / (wall_s - build_wait_s)
        return "build", (
            f"the first batch waited {build_wait_s:.2f} s for the model to build; after it the "
            f"pipeline ran at {after:.0%} of the model's own speed, and a large pool amortises "
            "the build (raise --limit to see it)"
        )
    return _held_up_by(
        stages,
        bound_ips=bound_ips,
        io_threads=io_threads,
        decode_threads=decode_threads,
        cores=cores,
    )


def _held_up_by(
    stages: Mapping[str, Mapping[str, float]],
    *,
    bound_ips: float,
    io_threads: int,
    decode_threads: int,
    cores: int,
) -> tuple[str, str]:
    """Below the bound: what held the model up, by the stages' utilization."""
    infer = stages.get("infer", {})
    read = stages.get("prefetch", {})
    decode = stages.get("preprocess", {})
    if infer.get("utilization", 0.0) >= SATURATED:
        inside = infer.get("items_per_busy_s", 0.0)
        return "contention", (
            f"CPU contention: the model was kept busy but ran at {inside:,.0f} items/s against "
            f"{bound_ips:,.0f} alone; other processes or the {decode_threads} decode threads "
            f"compete for the {cores} cores (a quieter machine, or fewer --decode-threads)"
        )
    read_use, decode_use = read.get("utilization", 0.0), decode.get("utilization", 0.0)
    if read_use >= SATURATED and read_use >= decode_use:
        return "io", (
            f"I/O bound: the model waited on reads ({read_use:.0%} of the I/O threads' time "
            f"busy); raise --io-threads (now {io_threads})"
        )
    if decode_use >= SATURATED:
        if decode_threads < cores:
            return "decode", (
                f"decode bound: the model waited on decoding ({decode_use:.0%} busy); raise "
                f"--decode-threads (now {decode_threads}, {cores} cores)"
            )
        return "decode", (
            f"decode bound: the model waited on decoding and the {decode_threads} decode "
            f"threads already match the {cores} cores; smaller source images would help"
        )
    return "ramp", (
        f"no stage saturated (model busy {infer.get('utilization', 0.0):.0%} of the run): a "
        "sample this small is mostly the pipeline filling and draining; raise --limit"
    )
