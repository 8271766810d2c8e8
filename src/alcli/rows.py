"""A pool's embeddings as rows read a block at a time: memory bounded by a setting, not the pool.

10M cached items x 1,280 float32 is 51 GB, twice this machine's RAM, so ``select`` and
``auto`` never gather the pool: they hold a ``PoolRows`` (which rows, where they live) and
every pass over the pool (the scaler's, a head's predictions, a committee's) reads one block
into a reused buffer, converts it to float32, uses it and moves on. Buffers are reused because
faulting in fresh memory is what costs on this kind of VM (2 GiB: 5-9 s), not reading it.

``PoolRows`` looks enough like an ``[n, d]`` float32 array for the heads' block loops
(``len``, ``shape``, ``rows[a:b]``, ``rows[int_array]``), so the learner and the strategies'
callers keep their signatures; ``np.asarray(rows)`` gathers it, which ``materialize`` refuses
past the memory setting. A block returned by ``rows[a:b]`` is valid until the next read.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from alcli.errors import UsageError

if TYPE_CHECKING:
    from alcli.cache import EmbeddingCache
    from alcli.cache.reader import View

F32 = npt.NDArray[np.float32]
GIB = 1 << 30
#: The fraction of the memory setting one block's float32 buffer may take.
BLOCK_FRACTION = 32
#: Rows per block, whatever the setting: small enough to stay in a few MiB for tests, big
#: enough that a block's fixed costs (a read call, a BLAS call) vanish.
MIN_BLOCK_ROWS, MAX_BLOCK_ROWS = 1024, 65_536  # multiples of the scaler's SCALER_SUM_ROWS
#: The fraction of the memory setting a strategy's gathered float32 embeddings may take
#: before it runs on a candidate subset instead (see ``alcli.selection``).
GATHER_FRACTION = 0.5

#: Rows one reading thread reads and converts at a time (8 MiB of 512-d float16).
PART_ROWS = 8192
#: Threads reading and converting a block's parts: both cores here (and at most 4).
READ_THREADS = max(1, min(4, os.cpu_count() or 1))
#: Rows cast to float32 and multiplied at a time by ``CachedRows.project``: 1 MiB of 512-d
#: float32, so the cast's output is still in the core's cache when the matmul reads it.
CAST_ROWS = 512
_CAST_BUFFERS = threading.local()
_READ_POOL: ThreadPoolExecutor | None = None
_READ_POOL_LOCK = threading.Lock()

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_MEMORY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def _cast_buffer(dim: int) -> F32:
    """This thread's float32 buffer of ``CAST_ROWS`` rows (reused: faulting fresh memory in
    is what costs on this kind of VM)."""
    buffer: F32 | None = getattr(_CAST_BUFFERS, "buffer", None)
    if buffer is None or buffer.shape[1] != dim:
        buffer = np.empty((CAST_ROWS, dim), dtype=np.float32)
        _CAST_BUFFERS.buffer = buffer
    return buffer


def _read_pool() -> ThreadPoolExecutor:
    """The process's reading threads (made on first use; idle threads cost nothing)."""
    global _READ_POOL
    with _READ_POOL_LOCK:
        if _READ_POOL is None:
            _READ_POOL = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="alcli-rows")
        return _READ_POOL


def parse_memory(value: str | int | None) -> int:
    """Bytes from ``4GiB``, ``512M``, ``2.5g`` or a plain byte count; None: the default."""
    if value is None or value in {"", "auto"}:
        return default_memory()
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = _MEMORY.match(value)
        if match is None:
            raise UsageError(
                f"--memory must be a size such as 4GiB, 512MiB or 2g, not {value!r}",
                hint="units: KiB, MiB, GiB, TiB (k, m, g, t); 'auto' derives it from the machine",
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size < 16 << 20:
        raise UsageError(f"--memory {value} is below 16 MiB, too little to read a pool through")
    return size


def default_memory() -> int:
    """A quarter of the machine's RAM, between 1 and 16 GiB: room left for the page cache that
    serves the segments and for whatever else the machine runs."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        total = 8 * GIB
    return int(min(16 * GIB, max(GIB, total // 4)))


def size_text(size: int) -> str:
    """Bytes as people write them: 1.5 GiB, 300 MiB, 12 KiB."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def block_rows_for(memory: int, dim: int) -> int:
    """Rows per block: a float32 block takes at most 1/``BLOCK_FRACTION`` of ``memory``."""
    rows = memory // BLOCK_FRACTION // max(1, dim * 4)
    rows = int(min(MAX_BLOCK_ROWS, max(MIN_BLOCK_ROWS, rows)))
    return rows - rows % MIN_BLOCK_ROWS


class PoolRows:
    """``n`` rows of ``dim`` floats, read a block at a time (subclasses say from where).

    ``memory``: the bytes this pool's reader and its callers may hold (``--memory``);
    ``on_read(rows)`` (set with ``watching``) is told each block read, for progress bars.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, n: int, dim: int, *, memory: int | None = None) -> None:
        self.n = int(n)
        self.dim = int(dim)
        self.memory = memory if memory is not None else default_memory()
        self.block_rows = block_rows_for(self.memory, self.dim)
        self._window: F32 | None = None
        self._window_start, self._window_stop = 0, 0
        self.on_read: Callable[[int], None] | None = None
        self.rows_read = 0

    # --- what subclasses provide ---

    def _read_into(self, start: int, out: F32) -> None:
        """out[:] = rows start .. start + len(out), as float32."""
        raise NotImplementedError

    def _take_into(self, rows: npt.NDArray[np.int64], out: F32) -> None:
        """out[i] = row rows[i] (any order)."""
        raise NotImplementedError

    @property
    def storage_itemsize(self) -> int:
        """Bytes per stored value (2 for float16 storage)."""
        return 4

    # --- the array-like surface the heads use ---

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.dim)

    def __len__(self) -> int:
        return self.n

    @property
    def gathered_bytes(self) -> int:
        """What ``materialize`` would allocate: the pool as one float32 array."""
        return self.n * self.dim * 4

    def fits(self, fraction: float = GATHER_FRACTION) -> bool:
        return self.gathered_bytes <= self.memory * fraction

    def __getitem__(self, key: Any) -> F32:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.n)
            if step != 1:
                return self.take(np.arange(start, stop, step, dtype=np.int64))
            return self.read(start, stop)
        if isinstance(key, (int, np.integer)):
            index = int(key) + (self.n if int(key) < 0 else 0)
            return self.take(np.array([index], dtype=np.int64))[0]
        return self.take(np.asarray(key))

    def read(self, start: int, stop: int) -> F32:
        """Rows start..stop as float32: a view of the reused block buffer when they fit in one
        block (valid until the next read), else a fresh array."""
        stop = max(start, min(stop, self.n))
        if self._window is not None and self._window_start <= start and stop <= self._window_stop:
            return self._window[start - self._window_start : stop - self._window_start]
        count = stop - start
        if count > self.block_rows:
            out = np.empty((count, self.dim), dtype=np.float32)
            self._read_into(start, out)
            self._advance(count)
            return out
        if self._window is None:
            self._window = np.empty((self.block_rows, self.dim), dtype=np.float32)
        end = min(self.n, start + self.block_rows)
        block = self._window[: end - start]
        self._window_start, self._window_stop = start, start  # invalid while being filled
        self._read_into(start, block)
        self._window_start, self._window_stop = start, end
        self._advance(end - start)
        return block[:count]

    def take(self, rows: npt.ArrayLike) -> F32:
        """A fresh float32 array of the given rows (bool mask or indices), any order."""
        arr = np.asarray(rows)
        if arr.dtype == bool:
            arr = np.flatnonzero(arr)
        index = arr.astype(np.int64, copy=False).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.n):
            raise IndexError(f"row index out of range for a pool of {self.n} rows")
        out = np.empty((index.size, self.dim), dtype=np.float32)
        for start in range(0, index.size, self.block_rows):
            self._take_into(index[start : start + self.block_rows], out[start:][: self.block_rows])
        return out

    def blocks(self) -> Iterator[tuple[int, F32]]:
        """(first row, float32 block) over the whole pool, in order; each block is valid until
        the next one is read."""
        for start in range(0, self.n, self.block_rows):
            yield start, self.read(start, start + self.block_rows)

    def project(self, matrix: F32, out: F32 | None = None) -> F32:
        """``pool @ matrix`` [n, k] float32 (a head's logits), one block at a time, into
        ``out`` when given."""
        if out is None:
            out = np.empty((self.n, matrix.shape[1]), dtype=np.float32)
        for _ in self.project_blocks([matrix], outs=[out]):
            pass
        return out

    def project_blocks(
        self, matrices: Sequence[F32], *, outs: Sequence[F32] | None = None
    ) -> Iterator[tuple[int, list[F32]]]:
        """(first row, [``block @ m`` for each matrix]) over the pool, in order: K heads'
        logits from one read of each block (into ``outs`` when given, else reused buffers
        valid until the next block)."""
        mats = [np.ascontiguousarray(m, dtype=np.float32) for m in matrices]
        buffers = (
            [] if outs else [np.empty((self.block_rows, m.shape[1]), np.float32) for m in mats]
        )
        for start in range(0, self.n, self.block_rows):
            stop = min(self.n, start + self.block_rows)
            targets = (
                [o[start:stop] for o in outs] if outs else [b[: stop - start] for b in buffers]
            )
            self._project_block(start, stop, mats, targets)
            yield start, targets

    def _project_block(self, start: int, stop: int, mats: list[F32], targets: list[F32]) -> None:
        """targets[k] = rows ``start:stop`` @ mats[k]; a cache overrides it to cast and
        multiply in cache-sized pieces on all cores."""
        block = self.read(start, stop)
        for m, target in zip(mats, targets, strict=True):
            np.matmul(block, m, out=target)

    def materialize(self, what: str = "this step") -> F32:
        """The whole pool as one float32 array, if it fits the memory setting."""
        if not self.fits():
            raise UsageError(
                f"{what} needs the pool's embeddings in memory ({size_text(self.gathered_bytes)} "
                f"as float32), more than half of --memory ({size_text(self.memory)})",
                hint="raise --memory, or use a strategy that streams (see 'alcli strategies')",
            )
        out = np.empty((self.n, self.dim), dtype=np.float32)
        for start, block in self.blocks():
            out[start : start + len(block)] = block
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> F32:
        arr = self.materialize()
        return arr if dtype is None else arr.astype(dtype, copy=False)

    @contextmanager
    def watching(self, on_read: Callable[[int], None]) -> Iterator[None]:
        """Tell ``on_read(rows)`` of every block read meanwhile (a progress bar per pass)."""
        previous = self.on_read
        self.on_read = on_read
        try:
            yield
        finally:
            self.on_read = previous

    def _advance(self, count: int) -> None:
        self.rows_read += count
        if self.on_read is not None:
            self.on_read(count)


class ArrayRows(PoolRows):
    """An array (in memory, a ``np.memmap``, float16 or float32) behind the same reader, so a
    user's own ``--embeddings .npy`` streams like the cache."""

    def __init__(self, array: npt.ArrayLike, *, memory: int | None = None) -> None:
        arr = array if isinstance(array, np.ndarray) else np.asarray(array)
        if arr.ndim != 2:
            raise UsageError(f"embeddings must be [n, d], got shape {arr.shape}")
        super().__init__(arr.shape[0], arr.shape[1], memory=memory)
        self.array = arr

    @property
    def storage_itemsize(self) -> int:
        return int(self.array.dtype.itemsize)

    def read(self, start: int, stop: int) -> F32:
        if self.array.dtype == np.float32 and not isinstance(self.array, np.memmap):
            stop = max(start, min(stop, self.n))
            self._advance(stop - start)
            return self.array[start:stop]
        return super().read(start, stop)

    def _read_into(self, start: int, out: F32) -> None:
        out[...] = self.array[start : start + len(out)]

    def _take_into(self, rows: npt.NDArray[np.int64], out: F32) -> None:
        out[...] = self.array[rows]


class CachedRows(PoolRows):
    """Rows of an ``EmbeddingCache`` fingerprint: each pool position's row id (``gids``) in the
    view it was located in. A block that is one run of one segment is one ``readinto`` into a
    reused buffer of the segment's dtype, converted into the float32 block; anything else
    goes through the cache's gathering read."""

    def __init__(
        self,
        cache: EmbeddingCache,
        fingerprint: str,
        view: View,
        gids: npt.NDArray[np.int64],
        *,
        memory: int | None = None,
        keys: Sequence[str] | None = None,
        positions: npt.NDArray[np.int64] | None = None,
    ) -> None:
        super().__init__(len(gids), view.dim or 0, memory=memory)
        self.cache = cache
        self.fingerprint = fingerprint
        self.view = view
        self.gids = gids
        # The keys (at ``positions`` of ``keys`` when given): to find the rows again when a
        # compaction (this process's, say auto's eval set embedding, or another's) replaced
        # the segments the view names. Same keys, same rows: the stream carries on.
        self.keys = keys
        self.positions = positions
        self._native: npt.NDArray[Any] | None = None

    @property
    def found(self) -> npt.NDArray[np.bool_]:
        return self.gids >= 0

    def subset(self, positions: npt.NDArray[np.int64], *, memory: int | None = None) -> CachedRows:
        """The rows at ``positions`` (the found ones, say), as a reader of their own."""
        return CachedRows(
            self.cache,
            self.fingerprint,
            self.view,
            self.gids[positions],
            memory=memory or self.memory,
            keys=self.keys,
            positions=positions if self.positions is None else self.positions[positions],
        )

    def with_memory(self, memory: int) -> CachedRows:
        return CachedRows(
            self.cache,
            self.fingerprint,
            self.view,
            self.gids,
            memory=memory,
            keys=self.keys,
            positions=self.positions,
        )

    def _again(self, read: Callable[[], None]) -> None:
        """Run a read; when the view's segments were replaced meanwhile, find the same keys'
        rows again (once per replacement) and re-run it."""
        from alcli.cache.store import StaleViewError

        for _ in range(3):
            try:
                read()
                return
            except StaleViewError:  # noqa: PERF203 (the retry loop is the point)
                if self.keys is None:
                    raise
                keys = (
                    self.keys
                    if self.positions is None
                    else [self.keys[int(i)] for i in self.positions]
                )
                fresh = self.cache.rows(self.fingerprint, keys)
                if not fresh.found.all():
                    raise
                self.view, self.gids = fresh.view, fresh.gids
        read()

    @property
    def storage_itemsize(self) -> int:
        segments = self.view.embedding_segments
        if not segments:
            return 4
        from alcli.cache.segments import DTYPES

        return max(int(DTYPES[e.dtype_code].itemsize) for e in segments)

    def _read_into(self, start: int, out: F32) -> None:
        def read() -> None:
            gids = self.gids[start : start + len(out)]
            if len(gids) and self._read_run(gids, out):
                return
            self.cache.read_rows(self.fingerprint, self.view, gids, out)

        self._again(read)

    def _read_run(
        self,
        gids: npt.NDArray[np.int64],
        out: F32 | None,
        product: tuple[list[F32], list[F32]] | None = None,
    ) -> bool:
        """One in-order run of one segment: read it natively, convert; False otherwise.

        The run is read and converted in parts of ``PART_ROWS`` by ``READ_THREADS`` threads
        (reads and numpy's casts release the GIL: one thread converts while another reads),
        and the kernel is asked to read the next run ahead meanwhile (``advise_run``), so
        the disk, the copy and the float16 -> float32 cast overlap. With ``product``
        (matrices, logits) the parts are multiplied instead of kept (``project_blocks``)."""
        first, last = int(gids[0]), int(gids[-1])
        if last - first != len(gids) - 1 or first < 0:
            return False
        if len(gids) > 1 and not (np.diff(gids) == 1).all():
            return False
        segment = int(np.searchsorted(self.view.bases, first, side="right")) - 1
        if last >= int(self.view.bases[segment + 1]):
            return False
        entry = self.view.embedding_segments[segment]
        from alcli.cache.segments import DTYPES

        native = DTYPES[entry.dtype_code]
        start_row = first - int(self.view.bases[segment])
        self._advise_after(segment, start_row + len(gids), len(gids))
        if native != np.float32 or product is not None:
            need = len(gids) * self.dim
            if self._native is None or self._native.dtype != native or self._native.size < need:
                self._native = np.empty(max(need, self.block_rows * self.dim), dtype=native)
        staging = self._native if native != np.float32 or product is not None else None

        def part(bounds: tuple[int, int]) -> None:
            a, b = bounds
            if staging is None:  # float32 storage: read straight into the block
                assert out is not None
                self.cache.read_run(self.fingerprint, self.view, segment, start_row + a, out[a:b])
                return
            target = staging[a * self.dim : b * self.dim].reshape(b - a, self.dim)
            self.cache.read_run(self.fingerprint, self.view, segment, start_row + a, target)
            if product is None:
                assert out is not None
                out[a:b] = target
                return
            matrices, targets = product
            scratch = _cast_buffer(self.dim)
            for c in range(0, b - a, CAST_ROWS):
                piece = scratch[: min(CAST_ROWS, b - a - c)]
                np.copyto(piece, target[c : c + len(piece)])
                for matrix, logits in zip(matrices, targets, strict=True):
                    np.matmul(piece, matrix, out=logits[a + c : a + c + len(piece)])

        parts = [(a, min(a + PART_ROWS, len(gids))) for a in range(0, len(gids), PART_ROWS)]
        if len(parts) == 1 or READ_THREADS == 1:
            for bounds in parts:
                part(bounds)
        else:
            list(_read_pool().map(part, parts))  # in order; the first failure is raised
        return True

    def _advise_after(self, segment: int, start_row: int, rows: int) -> None:
        """The kernel reads the next run ahead (this segment's next rows, else the next
        segment's first) while this one is converted and used."""
        entries = self.view.embedding_segments
        if start_row >= entries[segment].rows:
            segment, start_row = segment + 1, 0
        if segment < len(entries):
            self.cache.advise_run(self.fingerprint, self.view, segment, start_row, rows)

    def _project_block(self, start: int, stop: int, mats: list[F32], targets: list[F32]) -> None:
        """``PoolRows._project_block`` without a float32 copy of the block: each in-order
        run's parts are read in their stored dtype, cast ``CAST_ROWS`` rows at a time into a
        per-thread buffer that stays in the CPU's cache, and multiplied there by each matrix,
        on ``READ_THREADS`` threads. The same products (row by row, same dtype and shape)."""
        from alcli._threads import single_threaded_blas

        # One BLAS thread per caller: OpenBLAS's own threads make a 512-row product ~8x
        # slower here (benchmarks/RESULTS.md, issue 16, session 7); the parts are threads.
        with single_threaded_blas():
            if self._project_run(start, stop, mats, targets):
                self._advance(stop - start)
            else:
                super()._project_block(start, stop, mats, targets)

    def _project_run(self, start: int, stop: int, matrices: list[F32], targets: list[F32]) -> bool:
        done = False

        def run() -> None:
            nonlocal done  # the row ids as they are now: a compaction meanwhile re-locates
            done = self._read_run(self.gids[start:stop], None, (matrices, targets))

        self._again(run)
        return done

    def _take_into(self, rows: npt.NDArray[np.int64], out: F32) -> None:
        self._again(lambda: self.cache.read_rows(self.fingerprint, self.view, self.gids[rows], out))

    def identity(self) -> str:
        """What these rows are, as a digest: the fingerprint, the segments (immutable files:
        new rows, a compaction or a corrupt one set aside all change the list) and each
        position's row id. Equal identities hold equal rows."""
        import hashlib

        digest = hashlib.blake2b(digest_size=20)
        digest.update(self.fingerprint.encode())
        for entry in self.view.embedding_segments:
            digest.update(entry.name.encode() + b"\n")
        digest.update(np.ascontiguousarray(self.gids).data)
        return digest.hexdigest()

    def memo_path(self, what: str) -> Path:
        """Where a result computed from these rows is remembered (``<cache>/pools/``)."""
        return self.cache.directory / "pools" / f"{what}-{self.identity()}.npz"


def as_rows(embeddings: npt.ArrayLike | PoolRows, *, memory: int | None = None) -> PoolRows:
    """``embeddings`` as a ``PoolRows`` (an array is wrapped, not copied)."""
    if isinstance(embeddings, PoolRows):
        return embeddings
    return ArrayRows(embeddings, memory=memory)
