"""EmbeddingCache: the embedding store's API, a thin facade over its parts.

An embedding run over a pool of millions of images happens once; every later command reads
the embeddings back, so reading a warm pool must cost seconds, not minutes. Rows live in raw
segment files (``segments``); diskcache holds only what must be process-safe, per fingerprint
a manifest of the committed segments (``index``, ``manifest``). The facade takes one lock per
call and, on a process's first use of a fingerprint, tidies what a crash left (``orphans``,
``Index.reconcile``) and finishes a compaction a kill interrupted (``compaction``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from alcli.cache.compaction import Compactor
from alcli.cache.database import READ_ONLY_ERRNOS
from alcli.cache.index import Index
from alcli.cache.integrity import Integrity
from alcli.cache.keys import encode_keys
from alcli.cache.manifest import manifest_key, verified_key
from alcli.cache.paths import Layout, check_fingerprint, default_cache_dir
from alcli.cache.reader import Reader, View
from alcli.cache.segments import DTYPE_CODES, DTYPES, Array
from alcli.cache.writer import Writer

if TYPE_CHECKING:
    from alcli.rows import CachedRows

log = logging.getLogger(__name__)


class StaleViewError(Exception):
    """A streamed read's view names a segment a compaction has since replaced."""


class EmbeddingCache:
    """Embeddings per (model fingerprint, item key), and the items that failed to embed.

    Safe to share between processes and threads. ``storage_dtype="float16"`` halves disk and
    read time; lookups always return float32. ``durable=False`` skips the fsync per segment
    (tests, benchmarks). ``auto_compact_segments`` small segments (data under
    ``small_segment_bytes``) trigger a merge when a store adds one more.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        storage_dtype: str = "float32",
        durable: bool = True,
        auto_compact_segments: int = 64,
        small_segment_bytes: int = 32 << 20,
    ) -> None:
        if storage_dtype not in DTYPE_CODES:
            raise ValueError(f"storage_dtype {storage_dtype!r} is not one of float32, float16")
        if auto_compact_segments < 2:
            raise ValueError("auto_compact_segments must be at least 2")
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._dtype = DTYPES[DTYPE_CODES[storage_dtype]]
        self._lock = threading.RLock()
        self._touched: set[str] = set()  # fingerprints already tidied after crashes
        self._layout = Layout(self.directory / "embeddings")
        self._index = Index(self._layout, self.directory)
        self._integrity = Integrity(self._index)
        self._reader = Reader(self._index, self._integrity)
        self._writer = Writer(
            self._index, self._reader, dtype_code=DTYPE_CODES[storage_dtype], durable=durable
        )
        self._compactor = Compactor(
            self._index,
            self._integrity,
            self._reader,
            durable=durable,
            auto_compact_segments=auto_compact_segments,
            small_segment_bytes=small_segment_bytes,
        )

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._reader.close()
            self._index.close()

    @property
    def index_path(self) -> Path:
        """The SQLite file that lists each fingerprint's segments (diskcache's cache.db)."""
        return self._layout.index_path

    @property
    def read_only(self) -> str | None:
        """Why this cache cannot be written (warm reads still work), or None."""
        return self._index.read_only

    def check_writable(self) -> None:
        """Raise the read-only UsageError now, before work whose results could not be kept."""
        self._index.check_writable()

    # --- reading ---

    def lookup(self, fingerprint: str, keys: Sequence[str]) -> tuple[Array, Array]:
        """(embeddings [n, D] float32 with zero rows where missing, found mask [n]).

        When nothing is cached for the fingerprint, the embeddings are an [n, 0] array. When
        every key is found as one in-order run of one segment, the result is a read-only
        memmap of that segment (zero copy); otherwise a fresh array. Do not write into it.
        """
        check_fingerprint(fingerprint)
        groups = encode_keys(keys)
        with self._lock:
            self._first_touch(fingerprint)
            read = partial(self._reader.lookup, fingerprint, groups, len(keys))
            return self._integrity.retrying(fingerprint, read)

    def rows(self, fingerprint: str, keys: Sequence[str]) -> CachedRows:
        """The cached rows of ``keys`` as a chunked reader (``alcli.rows.CachedRows``): which
        keys are found, and their rows read a block at a time, float32 whatever the storage,
        so a pool larger than memory is never gathered at once (``lookup`` gathers)."""
        from alcli.rows import CachedRows

        check_fingerprint(fingerprint)
        groups = encode_keys(keys)
        with self._lock:
            self._first_touch(fingerprint)
            read = partial(self._reader.locate, fingerprint, groups, len(keys))
            view, gids = self._integrity.retrying(fingerprint, read)
        return CachedRows(self, fingerprint, view, gids, keys=keys)

    def read_rows(
        self,
        fingerprint: str,
        view: View,
        gids: Array,
        out: Array,
        *,
        run: tuple[int, int] | None = None,
    ) -> None:
        """out[i] = row ``gids[i]`` of ``view`` (``rows``' reads). A segment that turns out
        corrupt or gone mid-stream is set aside and the read fails: the rows already used
        cannot be taken back, so the command is run again (its items re-embedded)."""
        from alcli.cache.segments import SegmentCorruptError, SegmentVanishedError
        from alcli.errors import RunError

        with self._lock:
            try:
                if run is None:
                    self._reader.read_gids(fingerprint, view, gids, out)
                else:
                    self._reader.read_run(fingerprint, view, run[0], run[1], out)
            except SegmentVanishedError as exc:
                names = {e.name for e in self._reader.view(fingerprint).segments}
                if exc.name not in names:  # compacted away meanwhile: the caller looks again
                    raise StaleViewError(exc.name) from None
                self._integrity.mark_bad(fingerprint, exc.name, "listed but missing")
                raise RunError(
                    f"an embedding-cache segment went missing during the read ({exc})",
                    hint="run the command again: its items are embedded again",
                ) from None
            except SegmentCorruptError as exc:
                self._integrity.mark_bad(fingerprint, exc.name, str(exc))
                raise RunError(
                    f"an embedding-cache segment became unusable during the read ({exc})",
                    hint="run the command again: its items are embedded again",
                ) from None

    def read_run(
        self, fingerprint: str, view: View, segment: int, start_row: int, out: Array
    ) -> None:
        """out[:] = consecutive rows of one segment of ``view``, in the segment's own dtype:
        ``rows``' fast path (one ``readinto``, no gather, no conversion here)."""
        self.read_rows(
            fingerprint, view, np.empty(0, dtype=np.int64), out, run=(segment, start_row)
        )

    def advise_run(
        self, fingerprint: str, view: View, segment: int, start_row: int, rows: int
    ) -> None:
        """Have the kernel read ahead rows ``read_run`` will ask for next (a hint, no error)."""
        with self._lock:
            self._reader.advise(fingerprint, view, segment, start_row, rows)

    def contains(self, fingerprint: str, keys: Sequence[str]) -> Array:
        """The found mask [n] of ``lookup`` without gathering a row: what ``alcli embed``
        needs (counts), at no memory per item; a corrupt segment's keys are not found."""
        check_fingerprint(fingerprint)
        groups = encode_keys(keys)
        with self._lock:
            self._first_touch(fingerprint)
            read = partial(self._reader.contains, fingerprint, groups, len(keys))
            return self._integrity.retrying(fingerprint, read)

    def lookup_failures(self, fingerprint: str, keys: Sequence[str]) -> dict[str, str]:
        """{key: reason} for the given keys that have a recorded failure (latest reason)."""
        check_fingerprint(fingerprint)
        with self._lock:
            _, failures = self._current(fingerprint)
        if not failures:
            return {}
        result = {}
        for key in keys:
            reason = failures.get(key.lower())
            if reason is not None:
                result[key] = reason
        return result

    def stats(self, fingerprint: str | None = None) -> dict[str, dict[str, Any]]:
        """{fingerprint: {dim, items, rows, failures, segments, bytes}}; all of them by default.

        ``items`` counts distinct keys; ``rows`` counts stored rows, including rows a later
        store of the same key superseded (compaction drops those).
        """
        with self._lock:
            fingerprints = [fingerprint] if fingerprint is not None else self._index.fingerprints()
            result = {}
            for fp in fingerprints:
                check_fingerprint(fp)
                view, failures = self._current(fp)
                result[fp] = {
                    "dim": view.dim,
                    "items": sum(index.items for index in view.indexes.values()),
                    "rows": sum(e.rows for e in view.embedding_segments),
                    "failures": len(failures),
                    "segments": len(view.segments),
                    "bytes": sum(e.nbytes for e in view.segments),
                }
            return result

    def verify(self, fingerprint: str | None = None) -> list[dict[str, Any]]:
        """Read every byte of every listed segment and check its checksums (``alcli cache
        verify``), whatever the stamps say: damage that left a file's times alone, such as
        bit rot, shows only here. One row per segment; corrupt ones are set aside as a read
        sets them aside, so their items are embedded again by the next run."""
        with self._lock:
            fingerprints = [fingerprint] if fingerprint is not None else self._index.fingerprints()
            report = []
            for fp in fingerprints:
                check_fingerprint(fp)
                self._first_touch(fp)
                rows = self._integrity.verify(fp)
                report.extend(rows)
                if not all(row["ok"] for row in rows) and self.read_only is None:
                    with self._index.writing():  # unlists them, sets the files aside
                        self._compactor.compact(fp, small_only=True)
            return report

    def _current(self, fingerprint: str) -> tuple[View, dict[str, str]]:
        self._first_touch(fingerprint)
        return self._integrity.retrying(fingerprint, partial(self._reader.current, fingerprint))

    # --- writing ---

    def store(self, fingerprint: str, keys: Sequence[str], embeddings: Array) -> None:
        """Append one batch as a segment; it is durable and visible once this returns."""
        check_fingerprint(fingerprint)
        data = np.asarray(embeddings)
        if data.ndim != 2 or data.shape[0] != len(keys):
            raise ValueError(
                f"embeddings have shape {data.shape}, expected ({len(keys)}, dim): one row per key"
            )
        if data.shape[1] == 0:
            raise ValueError("embeddings have zero columns; nothing to store")
        if len(keys) == 0:
            return
        self._writer.check_dim(fingerprint, int(data.shape[1]))
        data = np.ascontiguousarray(data, dtype=self._dtype)
        groups = encode_keys(keys)
        with self._lock, self._index.writing():
            self._first_touch(fingerprint)
            segments = self._writer.store(fingerprint, groups, data)
            self._compactor.maybe_auto_compact(fingerprint, segments)

    def store_failures(self, fingerprint: str, keys: Sequence[str], reasons: Sequence[str]) -> None:
        """Record why items could not be embedded, so a rerun can skip or report them."""
        check_fingerprint(fingerprint)
        if len(keys) != len(reasons):
            raise ValueError(f"{len(keys)} keys but {len(reasons)} reasons: give one per key")
        if len(keys) == 0:
            return
        encode_keys(keys)  # validates
        with self._lock, self._index.writing():
            self._first_touch(fingerprint)
            segments = self._writer.store_failures(
                fingerprint, [str(k).lower() for k in keys], [str(r) for r in reasons]
            )
            self._compactor.maybe_auto_compact(fingerprint, segments)

    def compact(self, fingerprint: str) -> None:
        """Merge all of a fingerprint's segments into one (and its failure records into one),
        dropping superseded rows and segments that fail their checks."""
        check_fingerprint(fingerprint)
        with self._lock, self._index.writing():
            self._first_touch(fingerprint)
            self._compactor.compact(fingerprint, small_only=False)

    def clear(self, fingerprint: str | None = None) -> None:
        """Forget one fingerprint's embeddings and failures, or everything."""
        with self._lock, self._index.writing():
            if fingerprint is not None:
                check_fingerprint(fingerprint)
                fingerprints = [fingerprint]
            else:
                fingerprints = [*self._index.fingerprints(), *self._layout.fingerprint_dirs()]
            for fp in dict.fromkeys(fingerprints):
                self._clear(fp)

    def _clear(self, fingerprint: str) -> None:
        directory = self._layout.segment_dir(fingerprint)
        files = self._layout.segment_names(fingerprint)
        # Retire every file first, so that a crash before the last unlink cannot have the
        # next open adopt (resurrect) what was being cleared.
        with self._index.transaction():
            self._index.put_manifest(fingerprint, {"version": 1, "segments": [], "retired": files})
            self._index.delete(verified_key(fingerprint))
        self._reader.forget(fingerprint)
        self._integrity.forget(fingerprint)
        self._layout.delete(fingerprint, files)
        with contextlib.suppress(OSError):  # a concurrent store just wrote into it
            directory.rmdir()
        with self._index.transaction():
            self._index.delete(manifest_key(fingerprint))

    # --- after a crash ---

    def _first_touch(self, fingerprint: str) -> None:
        """Once per process and fingerprint: tidy what a crash left (``Index.reconcile``), and
        when a write was cut short, finish the compaction it may have been (the one ``embed``
        ends with is never started again by a rerun that has nothing left to embed)."""
        if fingerprint in self._touched or self.read_only is not None:
            return
        self._touched.add(fingerprint)
        try:
            if self._index.reconcile(fingerprint):
                self._compactor.compact_leased(fingerprint, small_only=False)
        except OSError as exc:
            if exc.errno not in READ_ONLY_ERRNOS:
                log.warning("could not tidy the embedding cache for %s: %s", fingerprint, exc)
