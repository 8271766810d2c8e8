"""The bound: how fast the model alone embeds, on tensors decoded and stacked beforehand.

The pipeline can at best keep the model busy, so ``pipeline / bound`` is how much of the
model's own speed it delivers. torch and the model code are imported where a model is built,
not with this module.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from alcli.embedding import EmbedOptions
from alcli.errors import ItemError, UsageError

if TYPE_CHECKING:
    from alcli.models import Backbone

T = TypeVar("T")

#: The bound's pre-decoded tensors stop growing past this (whole batches, at least one), so a
#: large --limit at a large --image-size cannot exhaust memory; the bound is a rate anyway.
BOUND_TENSOR_BYTES = 512 << 20


def in_fresh_thread(function: Callable[[], T]) -> T:
    """Run ``function`` on a new thread, as the pipeline runs its model.

    On this 2-core machine, two OpenMP threads driven from the main thread measured 2x slower
    under load than the same two driven from a fresh thread; measuring the baselines where the
    pipeline runs its model keeps the comparison fair.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, name="bench-model")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def layout_key(streams: int, threads: int) -> str:
    """How a model run is laid out: ``"2x1"`` is two streams of one torch thread each."""
    return f"{streams}x{threads}"


def layout_cores(key: str) -> int:
    """Cores a layout keeps busy (streams times threads)."""
    streams, threads = key.split("x")
    return int(streams) * int(threads)


class ModelOnly:
    """The bound: the model alone on tensors decoded and stacked beforehand.

    Each measurement tries one stream on one torch thread, one on all of them, and the
    pipeline's own CPU layout (``cpu_streams()`` streams sharing the threads, each on its
    own batches), and keeps the best, so the pipeline's choice cannot flatter the ratio.
    Blobs that do not decode are left out (the pipeline reports them); ``max_bytes`` caps the
    decoded tensors at whole batches.
    """

    def __init__(
        self, blobs: Iterable[bytes], options: EmbedOptions, *, max_bytes: int | None = None
    ) -> None:
        import torch

        self.backbone = backbone_for(options)
        size = options.batch_size
        tensors: list[torch.Tensor] = []
        used = 0
        for blob in blobs:
            if max_bytes is not None and used >= max_bytes and len(tensors) % size == 0:
                break
            try:
                tensor = self.backbone.preprocess(blob)
            except ItemError:
                continue
            tensors.append(tensor)
            used += tensor.element_size() * tensor.nelement()
        if not tensors:
            raise UsageError("no image decoded: nothing to run the model on")
        self.batches = [torch.stack(tensors[i : i + size]) for i in range(0, len(tensors), size)]
        self.count = len(tensors)
        self.default_threads = torch.get_num_threads()
        self.runs: list[dict[str, float]] = []
        self.numerics_runs: list[dict[str, float]] = []
        self.variants: dict[str, Backbone] = {}

    def layouts(self) -> list[tuple[int, int]]:
        """(streams, threads per stream) to try: 1 x 1, 1 x all, the pipeline's CPU layout."""
        from alcli.pipeline import cpu_streams

        streams = cpu_streams(self.default_threads)
        shared = (streams, max(1, self.default_threads // streams))
        return sorted({(1, 1), (1, self.default_threads), shared})

    def _measure(self, streams: int, threads: int, backbone: Backbone | None = None) -> float:
        import torch

        model = backbone or self.backbone
        torch.set_num_threads(threads)
        try:
            model.embed(self.batches[0])  # warm-up: oneDNN builds kernels on first use
            batches = iter(self.batches)
            lock = threading.Lock()

            def stream() -> None:
                while True:
                    with lock:
                        batch = next(batches, None)
                    if batch is None:
                        return
                    model.embed(batch)

            started = time.perf_counter()
            others = [threading.Thread(target=stream) for _ in range(streams - 1)]
            for other in others:
                other.start()
            stream()
            for other in others:
                other.join()
            return self.count / (time.perf_counter() - started)
        finally:
            torch.set_num_threads(self.default_threads)

    def measure(self) -> dict[str, float]:
        """Images per second by layout (``layout_key``), one pass over the batches each."""
        run = {
            layout_key(streams, threads): float(
                in_fresh_thread(functools.partial(self._measure, streams, threads))
            )
            for streams, threads in self.layouts()
        }
        self.runs.append(run)
        return run

    def measure_numerics(self, options: EmbedOptions) -> dict[str, float]:
        """Images per second of each precision/runtime this machine can run (``candidates``),
        in the pipeline's CPU layout, one pass each; keys as ``Numerics.describe``."""
        from alcli.pipeline import cpu_streams

        streams = cpu_streams(self.default_threads)
        layout = (streams, max(1, self.default_threads // streams))
        if self.backbone.device.type != "cpu":
            layout = (1, self.default_threads)
        run: dict[str, float] = {}
        for precision, runtime in candidates(options):
            key = f"{precision}/{runtime}/{self.backbone.numerics.device_class}"
            if key == self.backbone.numerics.describe():
                model = self.backbone
            else:
                if key not in self.variants:
                    self.variants[key] = backbone_for(
                        dataclasses.replace(options, precision=precision, runtime=runtime)
                    )
                model = self.variants[key]
            run[key] = float(in_fresh_thread(functools.partial(self._measure, *layout, model)))
        self.numerics_runs.append(run)
        return run

    @property
    def best_threads(self) -> int:
        """The faster torch thread count for one stream (what a plain loop runs with)."""
        totals = {
            key: sum(run[key] for run in self.runs) for key in self.runs[0] if key.startswith("1x")
        }
        return int(max(totals, key=totals.__getitem__).split("x")[1])


def backbone_for(options: EmbedOptions) -> Backbone:
    """The model ``options`` names, built now (torch is imported here, not with the bench)."""
    from alcli.models import load_backbone

    return load_backbone(
        options.model,
        options.weights,
        options.image_size,
        options.device,
        precision=options.precision,
        runtime=options.runtime,
    )


def candidates(options: EmbedOptions) -> list[tuple[str, str]]:
    """(precision, runtime) pairs this machine runs fast enough to be worth a bound: fp32,
    the half precision ``auto`` would pick, and OpenVINO's when it is installed (CPU)."""
    from alcli.numerics import auto_precision, device_class

    cls = device_class(options.device)
    pairs = [("fp32", "torch")]
    if auto_precision("torch", cls) != "fp32":
        pairs.append((auto_precision("torch", cls), "torch"))
    if cls == "cpu" and importlib.util.find_spec("openvino") is not None:
        pairs += [("fp32", "openvino")]
        if auto_precision("openvino", cls) != "fp32":
            pairs.append((auto_precision("openvino", cls), "openvino"))
    return pairs
