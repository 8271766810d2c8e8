"""Issue 14, session 8: OpenVINO's own parallelism, sub-batches and int8, against eager fp32.

The model alone (``alcli.bench.ModelOnly``) on the first N MNIST test PNGs decoded once,
interleaved rounds, each variant driven from a fresh thread as the pipeline drives its model.
Baseline: eager fp32 torch in 2 streams x 1 thread (the pipeline's layout). Variants:

- ``ov bf16 split 2py``: ``OpenVinoForward`` as the pipeline runs it, two Python streams (in
  runs 1-2 of session 8 it still ran session 7's whole batches of 64; it now sub-batches);
- ``ov bf16 split w{W} s{S}``: one caller; the batch cut into sub-batches of S, W infer-request
  pairs in flight (worker threads, the GIL released inside ``infer``), compiled models with
  ``NUM_STREAMS`` = W over the 2 cores;
- ``ov bf16 whole ...``: the same without the fp32 front (cosine 0.9979 in session 7);
- ``ov int8 ...``: NNCF post-training quantisation of the converted model (``prepare``
  calibrates on 300 MNIST training PNGs, deterministic), with the first convolutions left fp32
  or not, run with the f32 (or bf16) hint for the ops left unquantised.

Runs 1-2 of session 8 fed NHWC (the converted model then had a transpose inside); it takes
NCHW now, as ``OpenVinoForward`` does. Cosine of every variant's embeddings to eager fp32,
image by image (mean, worst).

    nice -n 19 .venv/bin/python benchmarks/precision_ov_parallel.py prepare /tmp/ov
    flock /work/wt/bench.lock /work/wt/timed.sh .venv/bin/python \
        benchmarks/precision_ov_parallel.py measure /tmp/ov 2000 3 > out.json
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from alcli.bench.bound import ModelOnly, in_fresh_thread
from alcli.embedding import EmbedOptions
from alcli.models import runtimes
from alcli.models.backbone import Backbone
from alcli.numerics import FRONT_FP32_CONVOLUTIONS, Numerics

MNIST = Path(__file__).resolve().parents[1] / "benchmarks" / ".work" / "mnist"
OPTIONS = EmbedOptions(model="mobilenet_v2", image_size=112)


class Chained:
    """One caller; the batch cut into sub-batches pushed through the compiled stages by
    ``workers`` threads, each with its own infer requests (as many in flight)."""

    def __init__(self, stages: list[Any], workers: int, sub: int) -> None:
        self.stages, self.workers, self.sub = stages, workers, sub
        self.requests = [[s.create_infer_request() for s in stages] for _ in range(workers)]

    def __call__(self, batch: Any) -> np.ndarray:
        data = batch.contiguous().numpy()
        parts = [data[i : i + self.sub] for i in range(0, len(data), self.sub)]
        out: list[Any] = [None] * len(parts)
        position = iter(range(len(parts)))
        lock = threading.Lock()

        def work(requests: list[Any]) -> None:
            while True:
                with lock:
                    index = next(position, None)
                if index is None:
                    return
                value = parts[index]
                for request in requests:
                    value = request.infer({0: value})[0]
                out[index] = np.array(value, dtype=np.float32, copy=True)

        threads = [threading.Thread(target=work, args=(r,)) for r in self.requests[1:]]
        for thread in threads:
            thread.start()
        work(self.requests[0])
        for thread in threads:
            thread.join()
        return np.concatenate(out)


class PerCaller:
    """Each calling thread its own infer requests, whole batches (session 7's layout)."""

    def __init__(self, stages: list[Any]) -> None:
        self.stages = stages
        self.local = threading.local()

    def __call__(self, batch: Any) -> np.ndarray:
        requests = getattr(self.local, "requests", None)
        if requests is None:
            requests = self.local.requests = [s.create_infer_request() for s in self.stages]
        value = batch.contiguous().numpy()
        for request in requests:
            value = request.infer({0: value})[0]
        return np.array(value, dtype=np.float32, copy=True)


class Queued:
    """One caller; one compiled model, an ``AsyncInferQueue`` of ``jobs`` requests."""

    def __init__(self, compiled: Any, jobs: int, sub: int) -> None:
        import openvino as ov

        self.queue = ov.AsyncInferQueue(compiled, jobs)
        self.sub = sub
        self.out: dict[int, np.ndarray] = {}

        def done(request: Any, index: int) -> None:
            self.out[index] = np.array(request.get_output_tensor(0).data, copy=True)

        self.queue.set_callback(done)

    def __call__(self, batch: Any) -> np.ndarray:
        data = batch.contiguous().numpy()
        self.out = {}
        parts = [data[i : i + self.sub] for i in range(0, len(data), self.sub)]
        for index, part in enumerate(parts):
            self.queue.start_async({0: part}, index)
        self.queue.wait_all()
        return np.concatenate([self.out[i] for i in range(len(parts))])


def converted(fp32: Backbone) -> Any:
    import openvino as ov

    return runtimes._openvino_model(ov, fp32.module, 112, None)


def compile_stages(
    model: Any,
    precision: str,
    front: bool,
    streams: int,
    threads: int = 2,
    cut_at: int = FRONT_FP32_CONVOLUTIONS,
    front_only: bool = False,
) -> list[Any]:
    import openvino as ov

    core = ov.Core()
    config = {
        "NUM_STREAMS": streams,
        "INFERENCE_NUM_THREADS": threads,
        "ENABLE_CPU_PINNING": False,
    }
    stages = []
    if front:
        cut = runtimes.front_cut(model, cut_at)
        assert cut is not None
        head, model = runtimes.split_at(ov, model, cut)
        stages.append(
            core.compile_model(head, "CPU", {**config, "INFERENCE_PRECISION_HINT": "f32"})
        )
        if front_only:
            return stages
    stages.append(
        core.compile_model(model, "CPU", {**config, "INFERENCE_PRECISION_HINT": precision})
    )
    return stages


def prepare(folder: Path) -> None:
    """int8 models by NNCF, calibrated on 300 training PNGs (the first 300: deterministic)."""
    import nncf
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    bound = ModelOnly([p.read_bytes() for p in sorted((MNIST / "train").iterdir())[:320]], OPTIONS)
    model = converted(bound.backbone)
    calibration = [b.contiguous().numpy()[i : i + 1] for b in bound.batches for i in range(len(b))][
        :300
    ]
    convs = [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in ("Convolution", "GroupConvolution")
    ]
    recipes = {
        "int8": ([], nncf.QuantizationPreset.PERFORMANCE),
        "int8_front": (convs[:FRONT_FP32_CONVOLUTIONS], nncf.QuantizationPreset.PERFORMANCE),
        "int8_ends_mixed": (
            convs[:FRONT_FP32_CONVOLUTIONS] + convs[-1:],
            nncf.QuantizationPreset.MIXED,
        ),
    }
    for name, (ignored, preset) in recipes.items():
        if name not in os.environ.get("INT8", ",".join(recipes)).split(","):
            continue
        if True:
            quantized = nncf.quantize(
                model,
                nncf.Dataset(calibration),
                preset=preset,
                subset_size=300,
                ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
                fast_bias_correction=False,
            )
            ov.save_model(quantized, folder / f"{name}.xml", compress_to_fp16=False)
            print("saved", name, file=sys.stderr, flush=True)


def second_set(variants: dict[str, Any], model: Any, backbone: Any) -> None:
    """Session 8, run 2: sub-batch sizes of the whole model, where to cut, the front's cost."""
    for workers, sub in ((2, 8), (2, 16), (2, 32), (4, 8)):
        stages = compile_stages(model, "bf16", False, 2)
        variants[f"ov bf16 whole w{workers} s{sub}"] = (
            backbone(Chained(stages, workers, sub)),
            1,
            1,
        )
    for cut in (2, 3, 4):
        stages = compile_stages(model, "bf16", True, 2, cut_at=cut)
        variants[f"ov bf16 split k{cut} w2 s16"] = (backbone(Chained(stages, 2, 16)), 1, 1)
    stages = compile_stages(model, "bf16", True, 2, cut_at=2, front_only=True)
    variants["ov f32 front only k2 w2 s16"] = (backbone(FrontOnly(stages, 2, 16)), 1, 1)
    stages = compile_stages(model, "bf16", True, 1, threads=2, cut_at=2)
    variants["ov bf16 split k2 streams1 w2 s16"] = (backbone(Chained(stages, 2, 16)), 1, 1)


class FrontOnly:
    """The front alone (timing only): its output is dropped, a zero embedding returned."""

    def __init__(self, stages: list[Any], workers: int, sub: int) -> None:
        self.chained = Chained(stages, workers, sub)

    def __call__(self, batch: Any) -> np.ndarray:
        self.chained(batch)
        return np.ones((len(batch), 1280), dtype=np.float32)


def measure(folder: Path, n: int, rounds: int) -> dict[str, Any]:
    import openvino as ov

    files = sorted((MNIST / "test").iterdir())[:n]
    bound = ModelOnly([f.read_bytes() for f in files], OPTIONS)
    fp32 = bound.backbone
    model = converted(fp32)
    core = ov.Core()

    def backbone(forward: Any) -> Backbone:
        return Backbone(
            name="mobilenet_v2",
            fingerprint="-",
            module=fp32.module,
            dim=fp32.dim,
            transform=fp32.transform,
            device=fp32.device,
            numerics=Numerics("bf16", "openvino", "cpu"),
            forward=forward,
        )

    current = runtimes.OpenVinoForward(
        fp32.module, Numerics("bf16", "openvino", "cpu"), 112, export_dir=None, streams=2, threads=2
    )
    variants: dict[str, tuple[Backbone, int, int]] = {
        "fp32 torch 2x1": (fp32, 2, 1),
        "ov bf16 split 2py": (backbone(current), 2, 1),
    }
    if os.environ.get("SET") == "2":
        second_set(variants, model, backbone)
    for workers, sub in () if os.environ.get("SET") == "2" else ((2, 8), (2, 16), (2, 32), (4, 8)):
        stages = compile_stages(model, "bf16", True, min(workers, 2))
        variants[f"ov bf16 split w{workers} s{sub}"] = (
            backbone(Chained(stages, workers, sub)),
            1,
            1,
        )
    for workers, sub in () if os.environ.get("SET") == "2" else ((2, 16), (2, 64)):
        stages = compile_stages(model, "bf16", False, 2)
        variants[f"ov bf16 whole w{workers} s{sub}"] = (
            backbone(Chained(stages, workers, sub)),
            1,
            1,
        )
    tput = (
        None
        if os.environ.get("SET") == "2"
        else core.compile_model(
            model,
            "CPU",
            {
                "PERFORMANCE_HINT": "THROUGHPUT",
                "INFERENCE_PRECISION_HINT": "bf16",
                "ENABLE_CPU_PINNING": False,
            },
        )
    )
    if tput is not None:
        jobs = tput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        variants[f"ov bf16 whole THROUGHPUT queue{jobs} s16"] = (
            backbone(Queued(tput, jobs, 16)),
            1,
            1,
        )
    for name in () if os.environ.get("SET") == "2" else ("int8", "int8_front", "int8_ends_mixed"):
        path = folder / f"{name}.xml"
        if not path.is_file():
            continue
        quantized = core.read_model(path)
        stages = [
            core.compile_model(
                quantized,
                "CPU",
                {
                    "NUM_STREAMS": 2,
                    "INFERENCE_NUM_THREADS": 2,
                    "ENABLE_CPU_PINNING": False,
                    "INFERENCE_PRECISION_HINT": "f32",
                },
            )
        ]
        variants[f"ov {name} f32 w2 s16"] = (backbone(Chained(stages, 2, 16)), 1, 1)

    import torch

    torch.set_num_threads(1)
    reference = np.concatenate([fp32.embed(b) for b in bound.batches])
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    agreement = {}
    for key, (variant, _, _) in variants.items():
        got = np.concatenate([variant.embed(b) for b in bound.batches])
        cos = (got / np.linalg.norm(got, axis=1, keepdims=True) * unit).sum(axis=1)
        agreement[key] = {"mean": round(float(cos.mean()), 5), "worst": round(float(cos.min()), 5)}
        print(key, agreement[key], file=sys.stderr, flush=True)
    torch.set_num_threads(2)
    if os.environ.get("ONLY_AGREEMENT"):
        return {"agreement_vs_fp32": agreement}

    runs: list[dict[str, float]] = []
    for number in range(rounds):
        run = {
            key: float(in_fresh_thread(functools.partial(bound._measure, s, t, variant)))
            for key, (variant, s, t) in variants.items()
        }
        runs.append(run)
        print(number, {k: round(v, 1) for k, v in run.items()}, file=sys.stderr, flush=True)
    base = "fp32 torch 2x1"
    return {
        "model": "mobilenet_v2",
        "size": 112,
        "images": bound.count,
        "rounds": rounds,
        "median_ips": {k: round(statistics.median(r[k] for r in runs), 1) for k in variants},
        "median_vs_fp32_torch_2x1": {
            k: round(statistics.median(r[k] / r[base] for r in runs), 3) for k in variants
        },
        "rounds_ips": [{k: round(v, 1) for k, v in r.items()} for r in runs],
        "agreement_vs_fp32": agreement,
        "load_average": list(os.getloadavg()),
    }


def main() -> int:
    mode, folder = sys.argv[1], Path(sys.argv[2])
    if mode == "prepare":
        prepare(folder)
        return 0
    out = measure(folder, int(sys.argv[3]), int(sys.argv[4]))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
