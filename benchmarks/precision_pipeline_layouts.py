"""Issue 14, session 8: the pipeline (``alcli.embedding.embed``, cold) by layout, OpenVINO bf16.

The first N MNIST test PNGs (MobileNetV2 112 px), each configuration in interleaved rounds on a
fresh cache: the defaults (2 model streams, 2 decode threads) with ``--precision bf16
--runtime openvino``, one model stream, one decode thread, both; and eager fp32 torch at its
defaults. ``SET=2``: a second set, OpenVINO fp32 and torch bf16 beside them; ``SET=3``:
OpenVINO bf16 on a fresh cache with and without the converted model already in it. Items per second
as the pipeline reports them (``stages["items_per_s"]``), medians.

    .venv/bin/python benchmarks/precision_pipeline_layouts.py 2000 2
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from alcli.bench import timed_embed
from alcli.embedding import EmbedOptions
from alcli.models.runtimes import EXPORT_FOLDER
from alcli.sources import resolve_pool

MNIST_TEST = Path(__file__).resolve().parents[1] / "benchmarks" / ".work" / "mnist" / "test"


def main() -> int:
    n, rounds = int(sys.argv[1]), int(sys.argv[2])
    files = sorted(MNIST_TEST.iterdir())[:n]
    folder = Path(tempfile.mkdtemp(prefix="i14-layouts-"))
    manifest = folder / "pool.txt"
    manifest.write_text("".join(f"{path}\n" for path in files))
    pool = resolve_pool(str(manifest))
    ov = EmbedOptions(model="mobilenet_v2", image_size=112, precision="bf16", runtime="openvino")
    configs = {
        "ov bf16 defaults": ov,
        "ov bf16 1 model stream": dataclasses.replace(ov, model_streams=1),
        "ov bf16 1 decode thread": dataclasses.replace(ov, decode_threads=1),
        "ov bf16 1 stream 1 decode": dataclasses.replace(ov, model_streams=1, decode_threads=1),
        "fp32 torch defaults": EmbedOptions(model="mobilenet_v2", image_size=112),
    }
    if os.environ.get("SET") == "2":  # run 2: is it the split (two compiled models)?
        configs = {
            "ov bf16 defaults": ov,
            "ov fp32 defaults": dataclasses.replace(ov, precision="fp32"),
            "ov bf16 1 decode thread": dataclasses.replace(ov, decode_threads=1),
            "bf16 torch defaults": dataclasses.replace(ov, runtime="torch"),
            "fp32 torch defaults": EmbedOptions(model="mobilenet_v2", image_size=112),
        }
    if os.environ.get("SET") == "3":  # run 3: the OpenVINO conversion inside a cold run
        configs = {
            "ov bf16 defaults": ov,
            "ov bf16 defaults, export present": ov,
            "bf16 torch defaults": dataclasses.replace(ov, runtime="torch"),
        }
    for key, options in configs.items():  # one-time costs (conversion), not measured
        timed_embed(pool, options, folder / f"warm-{key}")
    runs: list[dict[str, float]] = []
    for number in range(rounds):
        run = {}
        for key, options in configs.items():
            cache = folder / f"cold-{number}-{key}"
            if key.endswith("export present"):  # the converted model kept by the warm-up
                warm = folder / f"warm-{key}"
                for kept in warm.rglob(EXPORT_FOLDER):
                    shutil.copytree(kept, cache / kept.relative_to(warm))
            result, seconds = timed_embed(pool, options, cache)
            run[key] = float(result.stages.get("items_per_s", len(files) / seconds))
        runs.append(run)
        print(number, {k: round(v, 1) for k, v in run.items()}, file=sys.stderr, flush=True)
    out = {
        "model": "mobilenet_v2",
        "image_size": 112,
        "images": len(files),
        "rounds": rounds,
        "median_ips": {k: round(statistics.median(r[k] for r in runs), 1) for k in configs},
        "rounds_ips": [{k: round(v, 1) for k, v in r.items()} for r in runs],
        "load_average": list(os.getloadavg()),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
