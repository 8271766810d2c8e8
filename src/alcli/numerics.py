"""How a forward pass runs: precision, runtime and device class (``--precision``, ``--runtime``).

The same model gives slightly different numbers in bfloat16 than in float32, on OpenVINO
than on torch, on a GPU than on a CPU, so all three are part of the cache fingerprint
(``Numerics.identity``): a bf16 run never serves fp32 embeddings, nor the reverse.

``auto`` picks the fast precision of the hardware: bf16 autocast on CPUs that run bfloat16
natively (AVX512_BF16 or AMX; 1.4-1.9x eager fp32 for MobileNetV2 on 2 EPYC cores over 2,000
images, depending on the machine's load, 1.77x for ResNet-18; 1.47x against fp32 in 16-image
pieces, session 9; cosine to fp32 0.9990 on MNIST),
fp16 autocast on CUDA, fp32 elsewhere
(emulated bf16 is slower than fp32). It is opt-in: the default is fp32 (benchmarks/RESULTS.md,
issue 14). Resolving it reads ``/proc/cpuinfo``, not torch, so a warm run imports no torch.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from alcli.errors import ModelError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: torch is built in; the others are optional extras (``pip install 'alcli[openvino]'``).
RUNTIMES = ("torch", "openvino")
#: What a run without options used before precisions existed: its fingerprint is unchanged.
DEFAULT_NUMERICS_PRECISION = "fp32"
DEFAULT_RUNTIME = "torch"
#: pip extra that installs each optional runtime.
EXTRAS = {"openvino": "openvino"}
#: Precisions each runtime can run, by device class.
_SUPPORTED = {
    ("torch", "cpu"): ("fp32", "bf16"),
    ("torch", "cuda"): ("fp32", "bf16", "fp16"),
    ("openvino", "cpu"): ("fp32", "bf16"),
}
#: Convolutions OpenVINO bf16 runs in fp32 at the front of the model (``runtimes.front_cut``).
#: On 256 MNIST digits, MobileNetV2 at 112 px, cosine to fp32 (mean / worst): 0 (plain bf16)
#: 0.9979 / 0.9915, 1 (the stem) 0.9990 / 0.9957, 2 0.9992 / 0.9978, 4 0.9994 / 0.9981. In
#: torch the same layer-by-layer sweep showed the error is spread over the body except for
#: these first two. Session 8 (2,000 digits, 16-image sub-batches): 2 0.99926 / 0.99644 at
#: 1.78x eager fp32, **3** (through the first block's projection, 16 channels handed over
#: instead of 32) 0.99924 / 0.99605 at 2.02x, 4 (96 channels) 0.99943 / 0.99728 at 1.13x:
#: the hand-over between the two compiled models, not the front's arithmetic, is the cost.
FRONT_FP32_CONVOLUTIONS = 3

#: How a precision/runtime runs beyond its name, where that changed after its first release: a
#: new recipe changes the numbers, so it is part of the fingerprint (old caches are not served).
#: bf16 on OpenVINO: the front through the ``FRONT_FP32_CONVOLUTIONS``-th convolution in fp32
#: (``runtimes.front_cut``); changing that count changes the fingerprint with it.
RECIPES = {("bf16", "openvino"): f"front-fp32-{FRONT_FP32_CONVOLUTIONS}"}
#: CPU flags (Linux ``/proc/cpuinfo``) meaning bfloat16 matrix work runs in hardware.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True, slots=True)
class Numerics:
    """A resolved precision ("fp32", "bf16", "fp16"), runtime and device class ("cpu", "cuda")."""

    precision: str = DEFAULT_NUMERICS_PRECISION
    runtime: str = DEFAULT_RUNTIME
    device_class: str = "cpu"

    def identity(self) -> dict[str, str]:
        """The fields the fingerprint adds: none for fp32/torch/cpu, so the fingerprints of
        every cache written before precisions existed stay valid (those caches stay warm)."""
        if self == Numerics():
            return {}
        identity = {
            "precision": self.precision,
            "runtime": self.runtime,
            "device_class": self.device_class,
        }
        recipe = RECIPES.get((self.precision, self.runtime))
        return identity if recipe is None else {**identity, "recipe": recipe}

    def describe(self) -> str:
        """``bf16/torch/cpu``: how ``--json`` and ``bench`` name it."""
        return f"{self.precision}/{self.runtime}/{self.device_class}"


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 matrix work natively (AVX512_BF16 or AMX).

    Without them oneDNN emulates bf16, slower than fp32, so ``auto`` stays fp32 there.
    """
    return bool(cpu_flags() & BF16_CPU_FLAGS)


def device_class(device: str) -> str:
    """ "cpu" or "cuda" for a ``--device`` value; "auto" asks torch whether CUDA is there."""
    text = str(device)
    if text == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if text.startswith("cuda") else "cpu"


def auto_precision(runtime: str, device_cls: str) -> str:
    """What ``--precision auto`` means for this runtime on this device."""
    if device_cls == "cuda":
        return "fp16"
    if cpu_has_native_bf16() and "bf16" in _SUPPORTED.get((runtime, device_cls), ()):
        return "bf16"
    return "fp32"


def resolve_numerics(
    precision: str = "auto", runtime: str = "torch", device: str = "cpu"
) -> Numerics:
    """``--precision``, ``--runtime``, ``--device`` checked and resolved; ``ModelError`` (exit 2)
    for an unknown name or a combination that cannot run. Imports torch only for ``auto``
    devices."""
    if precision not in PRECISIONS:
        raise ModelError(
            f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}"
        )
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}", hint=f"use one of {', '.join(RUNTIMES)}")
    cls = device_class(device)
    supported = _SUPPORTED.get((runtime, cls))
    if supported is None:
        raise ModelError(
            f"runtime {runtime} runs on the CPU only, not on {device}",
            hint="use --runtime torch on a GPU",
        )
    resolved = auto_precision(runtime, cls) if precision == "auto" else precision
    if resolved not in supported:
        where = "a GPU" if cls == "cuda" else "the CPU"
        raise ModelError(
            f"precision {resolved} is not available with runtime {runtime} on {where}",
            hint=f"use --precision {' or '.join(supported)} (or auto)",
        )
    return Numerics(resolved, runtime, cls)


def check_runtime_installed(runtime: str) -> None:
    """A one-line ``ModelError`` (exit 2) naming the extra when an optional runtime is missing;
    checked before any image is read (``find_spec`` imports nothing)."""
    if runtime == "torch":
        return
    if importlib.util.find_spec(runtime) is None:
        raise ModelError(
            f"runtime {runtime} is not installed",
            hint=f"pip install 'alcli[{EXTRAS[runtime]}]', or use --runtime torch",
        )
