"""Run latency-bound loops with numpy's OpenBLAS on one thread.

Greedy strategies (k-center, k-means++ seeding, BADGE) issue thousands of small
matrix-vector products in sequence. OpenBLAS splits each across its threads and waits for
all of them; when the machine is busy (another process on the other core) every call stalls
until the descheduled thread runs again. Measured here on a loaded 2-core machine: one
k-center pick over 100k x 512 took 25 ms with 2 BLAS threads and 2.5 ms with one. Large
GEMMs (k-means assignment, ball graphs) are left multi-threaded. Where numpy is not linked
to OpenBLAS (or the library cannot be found) this is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Callable, Iterator

_SYMBOL_PAIRS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)

_lock = threading.Lock()
_depth = 0
_Getter = Callable[[], int]
_Setter = Callable[[int], None]
_saved: list[tuple[_Setter, int]] = []


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
                getter, setter = getattr(lib, get_name), getattr(lib, set_name)
                getter.restype = ctypes.c_int
                setter.argtypes = [ctypes.c_int]
                controls.append((getter, setter))
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
