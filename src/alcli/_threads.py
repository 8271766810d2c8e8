"""Thread counts of torch and of the OpenBLAS copies numpy and scipy bring: one place for all.

alcli turns threads *down*, never up, and only around work it has measured. On a busy 2-core
machine a library that splits a small operation over every core waits at a barrier for a
thread the OS has descheduled, so a burst of small operations runs 10x slower on two threads
than on one. Three situations, three tools:

``single_threaded_blas()``
    Process-wide, nested and thread-safe: every OpenBLAS loaded in the process runs on one
    thread inside the block. For the strategies' greedy loops (k-center, k-means++ seeding,
    BADGE), thousands of small matrix-vector products in sequence: one k-center pick over
    100k x 512 took 25 ms with 2 BLAS threads and 2.5 ms with one, on a loaded 2-core
    machine. Large GEMMs (k-means assignment, ball graphs) stay multi-threaded.
``serial_blas(packages)``
    Thread-local: only the calling thread's BLAS calls, through the wheels' own copy
    (``numpy.libs`` / ``scipy.libs``) and ``openblas_set_num_threads_local``. For a head's
    L-BFGS, whose 12k-element dot products lost 10-20x to the thread handoff (``learner``).
``one_torch_thread()``
    torch's intra-op threads set to 1 for a burst of tiny tensor ops (building a model), then
    restored. torch's count is process-wide.

Where numpy or scipy are not linked to OpenBLAS (system BLAS, MKL), the BLAS tools do
nothing. torch is imported only by ``one_torch_thread``, so the strategies can use this
module without loading torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import importlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: (get, set) symbol pairs that OpenBLAS builds export, the wheels' prefixed names first.
_SYMBOL_PAIRS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)

_Getter = Callable[[], int]
_Setter = Callable[[int], Any]

_lock = threading.Lock()
_depth = 0
_saved: list[tuple[_Setter, int]] = []


def _c_function(lib: ctypes.CDLL, name: str, *, takes_int: bool) -> Any:
    """``lib.name`` typed as int -> int (a setter) or () -> int (a getter)."""
    function = getattr(lib, name)
    function.restype = ctypes.c_int
    if takes_int:
        function.argtypes = [ctypes.c_int]
    return function


@functools.cache
def _openblas_controls() -> tuple[tuple[_Getter, _Setter], ...]:
    """(get, set) thread-count functions of every OpenBLAS already loaded in this process."""
    import numpy  # noqa: F401  (numpy's BLAS must be loaded for us to find it)

    try:
        with open("/proc/self/maps") as fh:
            paths = sorted(
                {line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line}
            )
    except OSError:
        return ()
    controls: list[tuple[_Getter, _Setter]] = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _SYMBOL_PAIRS:
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                getter = _c_function(lib, get_name, takes_int=False)
                controls.append((getter, _c_function(lib, set_name, takes_int=True)))
                break
    return tuple(controls)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Within the block, numpy's OpenBLAS uses one thread (nested and thread-safe)."""
    global _depth
    with _lock:
        if _depth == 0:
            _saved.clear()
            for getter, setter in _openblas_controls():
                _saved.append((setter, int(getter())))
                setter(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for setter, threads in _saved:
                    setter(threads)


@functools.cache
def _blas_thread_setter(package: str) -> Callable[[int], int] | None:
    """``openblas_set_num_threads_local`` of the OpenBLAS a wheel bundles, if there is one.

    numpy and scipy wheels each ship their own copy (``numpy.libs`` / ``scipy.libs``), already
    loaded once the package is imported, so this only looks the symbol up. Other builds
    (system BLAS, MKL) get None and keep their own threading.
    """
    location = importlib.import_module(package).__file__
    if location is None:
        return None
    folder = os.path.join(os.path.dirname(os.path.dirname(location)), f"{package}.libs")
    for path in sorted(glob.glob(os.path.join(folder, "lib*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
            setter: Callable[[int], int] = _c_function(
                lib, "openblas_set_num_threads_local", takes_int=True
            )
        except (OSError, AttributeError):
            continue
        return setter
    return None


@contextlib.contextmanager
def serial_blas(packages: Sequence[str]) -> Iterator[None]:
    """Run the named packages' BLAS on one thread, for the calling thread only, in the block."""
    restore: list[tuple[Callable[[int], int], int]] = []
    for package in packages:
        setter = _blas_thread_setter(package)
        if setter is not None:
            restore.append((setter, setter(1)))
    try:
        yield
    finally:
        for setter, previous in reversed(restore):
            setter(previous)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run a burst of small tensor ops on one torch thread, then restore the count.

    Building a model (loading, folding, converting weights, one probe image) is hundreds of
    tiny ops; with two OpenMP threads each one ends in a barrier wait, and when another
    process shares the 2 cores those waits cost seconds (measured: the probe forward took
    1.2-1.7 s on two threads under load, 50 ms on one). The count is process-wide in torch.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
