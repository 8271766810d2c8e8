"""Issue 14, session 9: torch.compile (inductor, CPU) against eager torch and OpenVINO.

A model (default MobileNetV2 at 112 px, ImageNet V1; ``--model resnet18 --weights none --size
224`` for ResNet-18) runs in the pipeline's layout (2 streams x 1 torch thread, batch 64) on
the first --n MNIST test PNGs decoded once, each variant interleaved per round with eager fp32
on whole 64-image batches (``eager_fp32``, the baseline). Variants (``--variants``, comma list):

- ``compile_<fp32|bf16>[_front|_whole][_sN][_cw]``: ``torch.compile`` with freezing (oneDNN
  weight prepacking, conv fusion); bf16 autocast inside the graph, ``front`` = the first
  ``FRONT_FP32_CONVOLUTIONS`` convolutions in an autocast-free region of the same graph (the
  default), ``whole`` = only the stem in fp32; ``sN`` = N-image pieces (the compiled shape is
  fixed, short pieces zero-padded: nothing recompiles); ``cw`` = inductor's C++ wrapper.
  Compile time is recorded (``compile_s``; ``TORCHINDUCTOR_CACHE_DIR`` decides cold or warm);
- ``eager_<fp32|bf16>[_sN]``: eager torch (``TorchForward``) on whole batches or N-image pieces;
- ``ov_bf16`` / ``ov_fp32``: OpenVINO as shipped (bf16 with its fp32 front).

Also the cosine of each to eager fp32 (mean / worst) over the same images, and inductor's cache
counters.

    .venv/bin/python benchmarks/precision_compile.py --json \
        --variants compile_bf16_front_s16_cw,eager_bf16_s16,ov_bf16 > out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alcli.models.runtimes import FullPrecision
from alcli.numerics import FRONT_FP32_CONVOLUTIONS

ROOT = Path(__file__).resolve().parents[1]
MNIST_TEST = ROOT / "benchmarks" / ".work" / "mnist" / "test"


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def convolutions_in_full_precision(module: nn.Module, count: int) -> int:
    """Wrap the first ``count`` Conv2d layers in ``FullPrecision``; how many were wrapped."""
    found = [
        (path, child) for path, child in module.named_modules() if isinstance(child, nn.Conv2d)
    ][:count]
    for path, child in found:
        parent_path, _, attribute = path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        setattr(parent, attribute, FullPrecision(child))
    return len(found)


class Autocast(nn.Module):
    """The inner module run under autocast, inside the graph torch.compile traces."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=self.dtype):
            return self.inner(x).float()


class CompiledForward:
    """torch.compile (inductor, freezing) of ``module``, autocast inside the graph with the
    first ``FRONT_FP32_CONVOLUTIONS`` convolutions (or only the stem) in fp32; batches padded
    to one fixed size (``sub_batch`` or the first batch's) so nothing recompiles."""

    def __init__(
        self,
        module: nn.Module,
        precision: str,
        image_size: int,
        *,
        front: bool = True,
        sub_batch: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        dtype = _DTYPES.get(precision)
        if dtype is not None:
            convolutions_in_full_precision(module, FRONT_FP32_CONVOLUTIONS if front else 1)
            module = Autocast(module, dtype)
        self.image_size = image_size
        self.sub_batch = sub_batch
        self.size: int | None = sub_batch
        self.compiled: Any = torch.compile(module, options={"freezing": True, **(options or {})})

    def prepare(self, batch_size: int) -> None:
        self.size = self.size or batch_size
        self(torch.zeros(self.size, 3, self.image_size, self.image_size))

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        size = self.size = self.size or len(batch)
        batch = batch.contiguous(memory_format=torch.channels_last)
        parts = []
        with torch.no_grad():
            for start in range(0, len(batch), size):
                piece = batch[start : start + size]
                n = len(piece)
                if n < size:
                    pad = piece.new_zeros((size - n, *piece.shape[1:]))
                    piece = torch.cat([piece, pad]).contiguous(memory_format=torch.channels_last)
                parts.append(self.compiled(piece)[:n].float())
        return torch.cat(parts).numpy()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def in_thread(function: Any, threads: int = 1) -> Any:
    out: dict[str, Any] = {}

    def run() -> None:
        torch.set_num_threads(threads)
        try:
            out["value"] = function()
        except BaseException as error:
            out["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def measure(forward: Any, batches: list[Any], streams: int = 2) -> float:
    """Images per second, ``streams`` threads of one torch thread each taking batches."""
    count = sum(len(b) for b in batches)
    it = iter(batches)
    lock = threading.Lock()

    def stream() -> None:
        torch.set_num_threads(1)
        forward(batches[0])
        while True:
            with lock:
                batch = next(it, None)
            if batch is None:
                return
            forward(batch)

    # warm-up outside the clock, on each thread (thread-local state)
    def warm() -> None:
        torch.set_num_threads(1)
        forward(batches[0])

    warmers = [threading.Thread(target=warm) for _ in range(streams)]
    for w in warmers:
        w.start()
    for w in warmers:
        w.join()
    started = time.perf_counter()
    workers = [threading.Thread(target=stream) for _ in range(streams)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return count / (time.perf_counter() - started - 0.0)


def split_forward(forward: Any, sub: int | None) -> Any:
    if not sub:
        return forward

    def run(batch: Any) -> Any:
        return np.concatenate([forward(batch[i : i + sub]) for i in range(0, len(batch), sub)])

    return run


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--variants", default="compile_fp32,compile_bf16_front,compile_bf16_whole")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sub-batch", type=int, default=0)
    args = parser.parse_args()

    from alcli.models import load_backbone

    files = sorted(MNIST_TEST.iterdir())[: args.n]
    fp32 = load_backbone(args.model, args.weights, args.size, "cpu")
    fp32.forward.sub_batch = None  # type: ignore[attr-defined]  # eager fp32 as before session 9
    tensors = [fp32.preprocess(p.read_bytes()) for p in files]
    batches = [torch.stack(tensors[i : i + 64]) for i in range(0, len(tensors), 64)]
    variants: dict[str, Any] = {"eager_fp32": fp32.embed}
    compile_s: dict[str, float] = {}
    for name in [v for v in args.variants.split(",") if v]:
        parts = name.split("_")
        sub = next((int(p[1:]) for p in parts if p.startswith("s") and p[1:].isdigit()), None)
        if parts[0] == "compile":
            precision = parts[1]
            front = "whole" not in parts
            options = {"cpp_wrapper": True} if "cw" in parts else {}
            backbone = load_backbone(args.model, args.weights, args.size, "cpu")
            started = time.perf_counter()
            forward = CompiledForward(
                backbone.module, precision, args.size, front=front, sub_batch=sub, options=options
            )
            in_thread(lambda f=forward: f.prepare(64))
            compile_s[name] = round(time.perf_counter() - started, 1)
            log(f"{name}: compiled in {compile_s[name]} s")
            variants[name] = forward
        elif parts[0] == "eager":
            backbone = load_backbone(args.model, args.weights, args.size, "cpu", precision=parts[1])
            backbone.forward.sub_batch = None  # type: ignore[attr-defined]  # split_forward's
            variants[name] = split_forward(backbone.embed, sub)
        elif name.startswith("ov_"):
            backbone = load_backbone(
                args.model,
                args.weights,
                args.size,
                "cpu",
                precision=name.split("_")[1],
                runtime="openvino",
                threads=2,
            )
            variants[name] = backbone.embed
    # agreement
    reference = np.concatenate([in_thread(lambda b=b: fp32.embed(b)) for b in batches])
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    agreement = {}
    for name, forward in variants.items():
        got = np.concatenate([in_thread(lambda b=b, f=forward: f(b)) for b in batches])
        cos = (got / np.linalg.norm(got, axis=1, keepdims=True) * unit).sum(axis=1)
        agreement[name] = {"mean": round(float(cos.mean()), 5), "worst": round(float(cos.min()), 5)}
        log(f"{name}: cosine {agreement[name]}")
    runs = []
    for number in range(args.rounds):
        run = {name: measure(forward, batches) for name, forward in variants.items()}
        runs.append(run)
        log(f"round {number + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in run.items()))
    medians = {k: round(statistics.median(r[k] for r in runs), 1) for k in variants}
    ratios = {
        k: round(statistics.median(r[k] / r["eager_fp32"] for r in runs), 3) for k in variants
    }
    report = {
        "model": args.model,
        "image_size": args.size,
        "images": len(tensors),
        "rounds": args.rounds,
        "layout": "2x1",
        "torch": torch.__version__,
        "ips": medians,
        "vs_eager_fp32": ratios,
        "per_round": [{k: round(v, 1) for k, v in r.items()} for r in runs],
        "compile_s": compile_s,
        "agreement_vs_fp32": agreement,
        "load_average": list(os.getloadavg()),
        "inductor_counters": {
            k: v
            for k, v in torch._dynamo.utils.counters["inductor"].items()
            if "cache" in k or "bypass" in k
        },
        "dynamo_stats": dict(torch._dynamo.utils.counters["stats"]),
        "graph_breaks": dict(torch._dynamo.utils.counters["graph_break"]),
    }
    print(json.dumps(report, indent=1) if args.json else report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
