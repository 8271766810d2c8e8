"""Issue 14, session 7: OpenVINO bf16 whole or with its fp32 front, by layout, against eager fp32.

The model alone (``alcli.bench.ModelOnly``) on the first N MNIST test PNGs decoded once,
interleaved rounds, each variant in a fresh thread as the pipeline runs its model: eager fp32
torch in 2 streams x 1 thread (the pipeline's layout) and 1 x 2; OpenVINO bf16 with the fp32
front (what ``--precision bf16 --runtime openvino`` runs) in 2x1 and 1x2; OpenVINO bf16 whole
(the front rounded to bf16 too); OpenVINO fp32. Medians and ratios to eager fp32 2x1.

    .venv/bin/python benchmarks/precision_layouts.py mobilenet_v2 112 default 1024 5
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from alcli.bench.bound import ModelOnly, in_fresh_thread
from alcli.embedding import EmbedOptions
from alcli.models import runtimes
from alcli.models.backbone import Backbone
from alcli.numerics import Numerics

MNIST_TEST = Path(__file__).resolve().parents[1] / "benchmarks" / ".work" / "mnist" / "test"


def main() -> int:
    name, size, weights = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    n, rounds = int(sys.argv[4]), int(sys.argv[5])
    files = sorted(MNIST_TEST.iterdir())[:n]
    options = EmbedOptions(
        model=name, weights=None if weights == "default" else weights, image_size=size
    )
    bound = ModelOnly([f.read_bytes() for f in files], options)
    fp32 = bound.backbone

    def openvino(precision: str, streams: int, threads: int, front: bool = True) -> Backbone:
        real = runtimes.front_cut
        if not front:
            runtimes.front_cut = lambda model, convolutions: None  # type: ignore[assignment]
        try:
            numerics = Numerics(precision, "openvino", "cpu")
            forward = runtimes.OpenVinoForward(
                fp32.module, numerics, size, export_dir=None, streams=streams, threads=threads
            )
        finally:
            runtimes.front_cut = real
        return Backbone(
            name=name,
            fingerprint="-",
            module=fp32.module,
            dim=fp32.dim,
            transform=fp32.transform,
            device=fp32.device,
            numerics=numerics,
            forward=forward,
        )

    variants: dict[str, tuple[Backbone, int, int]] = {
        "fp32 torch 2x1": (fp32, 2, 1),
        "fp32 torch 1x2": (fp32, 1, 2),
        "bf16 ov split 2x1": (openvino("bf16", 2, 2), 2, 1),
        "bf16 ov split 1x2": (openvino("bf16", 1, 2), 1, 2),
        "bf16 ov plain 2x1": (openvino("bf16", 2, 2, front=False), 2, 1),
        "fp32 ov 2x1": (openvino("fp32", 2, 2), 2, 1),
    }
    runs: list[dict[str, float]] = []
    for number in range(rounds):
        run = {
            key: float(in_fresh_thread(functools.partial(bound._measure, s, t, model)))
            for key, (model, s, t) in variants.items()
        }
        runs.append(run)
        print(number, {k: round(v, 1) for k, v in run.items()}, file=sys.stderr, flush=True)
    base = "fp32 torch 2x1"
    out: dict[str, Any] = {
        "model": name,
        "size": size,
        "images": bound.count,
        "rounds": rounds,
        "median_ips": {k: round(statistics.median(r[k] for r in runs), 1) for k in variants},
        "median_vs_fp32_torch_2x1": {
            k: round(statistics.median(r[k] / r[base] for r in runs), 3) for k in variants
        },
        "load_average": list(os.getloadavg()),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
