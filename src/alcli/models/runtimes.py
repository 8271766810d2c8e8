"""The forward pass of a built backbone, by runtime: torch (eager, autocast) or OpenVINO.

Both take the batch the pipeline stacks (NCHW in shape, channels_last in memory) and return [B,
dim] float32. Measured on 2 EPYC cores (AVX512_BF16), model alone, two streams of one thread,
2,000 MNIST PNGs, ratios within rounds (benchmarks/precision.py, RESULTS.md issue 14, session
8), MobileNetV2 112 px against eager fp32: bf16 autocast 1.88x, OpenVINO fp32 1.54x, OpenVINO
bf16 2.13x with its fp32 front (2.6-3.3x whole); ResNet-18 224 px (500 PNGs): 1.61x, 1.36x,
2.19x. OpenVINO bf16 rounds the image and the first layers' weights to bf16, the largest error
of a bf16 pass (cosine to fp32 0.9979 on MNIST); its CPU plugin ignores per-node precision
marks, so ``--precision bf16 --runtime openvino`` runs the model split in two compiled models:
the front (through the first block's projection, ``FRONT_FP32_CONVOLUTIONS``) in fp32, the body
in bf16 (``front_cut``; cosine 0.9992). ONNX Runtime (fp32 only on CPUs) ran 1.6x on
MobileNetV2, never ahead of OpenVINO, so it is not offered. ``torch.compile`` (inductor with
freezing, bf16 autocast inside the graph, the same fp32 front in an autocast-free region of the
same graph, 16-image pieces, C++ wrapper) reached 2.24x at cosine 0.99925 in session 9, level
with OpenVINO's 2.32x in the same rounds and paying 9-30 s of compiling per process (its FX
graph cache carries across processes), so it is not offered either
(``benchmarks/precision_compile.py``). int8 (NNCF post-training quantisation,
VNNI) ran 3.3-4.1x but at cosine 0.958-0.988, so it is not offered either.

OpenVINO converts the torch module once per fingerprint and keeps the converted model
(``model.xml`` + ``.bin``, weights in float32) under the cache folder next to the embeddings
(``exported/<fingerprint>/OPENVINO_EXPORT/``): later runs read it instead of converting
(~5-15 s; a cold pipeline run that converts ran at about half the speed of one that reads).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alcli.errors import ModelError
from alcli.numerics import FRONT_FP32_CONVOLUTIONS, Numerics

#: Where a converted model lives under the cache folder.
EXPORT_FOLDER = "exported"
#: The converted model's folder in ``exported/<fingerprint>/``: NCHW input since session 8
#: (session 7's ``openvino/`` took NHWC and is never read: fed NCHW it would be wrong).
OPENVINO_EXPORT = "openvino-nchw"

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Images per OpenVINO inference: the pipeline's batch (64) is cut into sub-batches this size.
#: Measured on 2 EPYC cores, MobileNetV2 112 px, 2,000 MNIST PNGs, two callers (the pipeline's
#: two model streams), bf16 whole model against eager fp32: sub-batch 64 1.49x, 32 2.39x,
#: 16 2.56-3.32x, 8 2.67x (benchmarks/precision_s8_ov_*.json, RESULTS.md issue 14 session 8):
#: a 16-image sub-batch's activations stay in the caches, a 64-image one's do not. The
#: numbers are bit-identical for any sub-batch size (checked: 64, 16, 8, 1), so it is not
#: part of the fingerprint.
SUB_BATCH = 16


class FullPrecision(nn.Module):
    """A layer run in float32 inside an autocast region."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.inner(x.float())


def stem_in_full_precision(module: nn.Module) -> bool:
    """Run the first ``Conv2d`` (the stem, applied to the image) in float32; True if found.

    Rounding the normalised pixels to bfloat16 is the largest single error of a bf16 pass:
    on 128 MNIST digits, mobilenet_v2 at 112 px, cosine to fp32 rose from 0.9980 (worst
    0.9920) to 0.9990 (worst 0.9953) with the stem in fp32, at no measurable cost (the stem
    is one small convolution). In every torchvision classifier the first Conv2d registered
    is the stem (resnet conv1, mobilenet features.0, vit conv_proj, ...).
    """
    for path, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            parent_path, _, attribute = path.rpartition(".")
            parent = module.get_submodule(parent_path) if parent_path else module
            setattr(parent, attribute, FullPrecision(child))
            return True
    return False


class TorchForward:
    """Eager torch: fp32, or autocast to bf16/fp16 (matrix work in half precision, reductions
    and the output in float32; the stem in float32, ``stem_in_full_precision``). On CUDA the
    pinned batch is copied without blocking and runs in channels_last with cuDNN.

    On the CPU the batch runs in ``SUB_BATCH``-image pieces, as OpenVINO's does: session 9
    measured MobileNetV2 112 px (2,000 MNIST PNGs, 2 streams x 1 thread, 3 interleaved rounds)
    at 1.37x in fp32 and 2.06x in bf16 against whole 64-image batches in fp32 (bf16 whole:
    1.67x), with embeddings bit-identical to the whole batch's (fp32 and bf16, 2,000 digits).
    """

    def __init__(self, module: nn.Module, numerics: Numerics, device: torch.device) -> None:
        self.module = module
        self.device = device
        self.dtype = _DTYPES.get(numerics.precision)
        self.sub_batch = SUB_BATCH if device.type == "cpu" else None
        if self.dtype is not None:
            stem_in_full_precision(module)

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            if self.device.type != "cpu":
                batch = batch.to(self.device, non_blocking=True)
            batch = batch.contiguous(memory_format=torch.channels_last)
            size = self.sub_batch or len(batch)
            parts = [self._run(batch[start : start + size]) for start in range(0, len(batch), size)]
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run(self, batch: torch.Tensor) -> np.ndarray:
        if self.dtype is None:
            features = self.module(batch)
        else:
            with torch.autocast(self.device.type, dtype=self.dtype):
                features = self.module(batch)
        return features.float().cpu().numpy()


class OpenVinoForward:
    """OpenVINO on the CPU, one infer request per model stream (thread), the batch run in
    ``SUB_BATCH``-image pieces.

    The converted model takes NCHW input: the channels_last batch is copied to NCHW on the
    model stream. Session 7 fed NHWC (a transpose inside the graph, no copy); session 8
    measured the copy faster (bf16 with its fp32 front, 2,000 PNGs, 3 rounds: 1.16-1.31x per
    round, the same bits). ``streams`` is how many threads call at once (the pipeline's model
    streams), ``threads`` the cores they share.
    """

    def __init__(
        self,
        module: nn.Module,
        numerics: Numerics,
        image_size: int,
        *,
        export_dir: Path | None,
        streams: int,
        threads: int,
    ) -> None:
        import openvino as ov

        model = _openvino_model(ov, module, image_size, export_dir)
        config = {
            "NUM_STREAMS": max(1, streams),
            "INFERENCE_NUM_THREADS": max(1, threads),
            # a shared machine: threads pinned to cores wait whenever another process runs
            "ENABLE_CPU_PINNING": False,
        }
        core = ov.Core()
        self.stages = []
        if numerics.precision == "bf16":
            cut = front_cut(model, FRONT_FP32_CONVOLUTIONS)
            if cut is not None:
                front, model = split_at(ov, model, cut)
                self.stages.append(
                    core.compile_model(front, "CPU", {**config, "INFERENCE_PRECISION_HINT": "f32"})
                )
        precision = "bf16" if numerics.precision == "bf16" else "f32"
        self.stages.append(
            core.compile_model(model, "CPU", {**config, "INFERENCE_PRECISION_HINT": precision})
        )
        self._local = threading.local()
        shape = self.stages[-1].output(0).get_partial_shape()
        self.dim = (
            shape[1].get_length() if shape.rank.get_length() == 2 and shape[1].is_static else 0
        )

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = [s.create_infer_request() for s in self.stages]
        images: Any = batch.contiguous().numpy()  # NCHW: a copy of the channels_last batch
        out = np.empty((len(images), self.dim), dtype=np.float32) if self.dim else None
        parts = []
        for start in range(0, len(images), SUB_BATCH):
            data = images[start : start + SUB_BATCH]
            for request in requests:
                data = request.infer({0: data})[0]
            if out is None:
                parts.append(np.array(data, dtype=np.float32, copy=True))
            else:
                out[start : start + len(data)] = data
        return out if out is not None else np.concatenate(parts)


_CONVOLUTIONS = ("Convolution", "GroupConvolution")


def front_cut(model: Any, convolutions: int) -> Any | None:
    """The first node, at or after the ``convolutions``-th convolution, whose output is the
    only tensor alive at that point of the graph (so the model splits in two there: a
    residual block is never cut); None if there is none (the model stays whole)."""
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() != "Constant"]
    last_use: dict[int, int] = {}
    for position, op in enumerate(ops):
        for port in op.inputs():
            last_use[id(port.get_source_output().get_node())] = position
    alive: set[int] = set()
    seen = 0
    for position, op in enumerate(ops):
        alive = {node for node in alive if last_use.get(node, -1) > position}
        if last_use.get(id(op), -1) > position:
            alive.add(id(op))
        seen += op.get_type_name() in _CONVOLUTIONS
        if seen >= convolutions and alive == {id(op)} and op.get_output_size() == 1:
            return op
    return None


def split_at(ov: Any, model: Any, cut: Any) -> tuple[Any, Any]:
    """Two models: the front (the inputs to ``cut``'s output) and the back (``cut``'s output to
    the results), each on its own copy of the graph."""
    name = cut.get_friendly_name()

    def find(copy: Any) -> Any:
        return next(op for op in copy.get_ordered_ops() if op.get_friendly_name() == name)

    front_graph = model.clone()
    node = find(front_graph)
    front = ov.Model([ov.opset13.result(node.output(0))], front_graph.get_parameters(), "front")
    back_graph = model.clone()
    node = find(back_graph)
    middle = ov.opset13.parameter(
        node.get_output_partial_shape(0), node.get_output_element_type(0), "front_output"
    )
    for port in list(node.output(0).get_target_inputs()):
        port.replace_source_output(middle.output(0))
    back = ov.Model(back_graph.get_results(), [middle], "body")
    return front, back


def _openvino_model(ov: Any, module: nn.Module, image_size: int, export_dir: Path | None) -> Any:
    """The converted model: read from ``export_dir`` when a run saved it, else converted now
    (and saved there, atomically: a folder renamed into place)."""
    target = export_dir / OPENVINO_EXPORT if export_dir is not None else None
    if target is not None and (target / "model.xml").is_file():
        try:
            return ov.Core().read_model(target / "model.xml")
        except Exception:  # a damaged export is converted again, never trusted
            shutil.rmtree(target, ignore_errors=True)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace, which it uses
            model = ov.convert_model(
                module,
                example_input=torch.zeros(1, 3, image_size, image_size),
                input=[ov.PartialShape([-1, 3, image_size, image_size])],
            )
    except Exception as error:
        raise ModelError(
            f"openvino cannot convert this model: {str(error).splitlines()[0][:120]}",
            hint="use --runtime torch",
        ) from error
    if target is not None:
        _save_atomically(ov, model, target)
    return model


def _save_atomically(ov: Any, model: Any, target: Path) -> None:
    """Write the model into a temporary folder, then rename it into place; a failure to
    write (read-only cache) only costs the next run a conversion."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, temporary / "model.xml", compress_to_fp16=False)
        temporary.rename(target)
    except OSError:
        pass  # another process saved it first, or the folder is read-only
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(temporary)
