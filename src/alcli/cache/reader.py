"""Reading: a fingerprint as of one manifest (its key index), and the rows of a lookup.

The key index is built once per manifest version and kept with the segments' keys, so a warm
lookup is the index's gathers plus one read per segment touched: contiguous ``readinto``
straight into the result when the rows land in order, a memmap gather when sparse, and a
zero-copy memmap when the keys are one in-order run of one float32 segment.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from alcli.cache.index import Index
from alcli.cache.integrity import Integrity
from alcli.cache.keys import KeyGroup, KeyIndex, key_hash, words_of
from alcli.cache.manifest import entries
from alcli.cache.segments import (
    DTYPES,
    EMBEDDINGS,
    FAILURES,
    Array,
    Entry,
    Segment,
    SegmentCorruptError,
    SegmentVanishedError,
    failure_records,
)


@dataclass
class View:
    """A fingerprint's committed segments (minus known-bad ones) and the key index over them."""

    segments: tuple[Entry, ...]
    bad: frozenset[str]
    embedding_segments: list[Entry]
    bases: npt.NDArray[np.int64]  # gid of each embedding segment's first row; last = total
    # key width -> each segment's key words and row ids, in storage order
    stored: dict[int, tuple[list[npt.NDArray[np.uint64]], list[npt.NDArray[np.int64]]]]
    failures: dict[str, str] | None = field(default=None)
    _indexes: dict[int, KeyIndex] | None = field(default=None, repr=False)

    @property
    def indexes(self) -> dict[int, KeyIndex]:
        """Key width -> index, built on first use (~0.5 s per 1M keys): a pool that is the
        cache's keys in storage order (``in_storage_order``) never needs it."""
        if self._indexes is None:
            self._indexes = {
                width: KeyIndex.build(np.concatenate(w), np.concatenate(g))
                for width, (w, g) in self.stored.items()
            }
        return self._indexes

    def in_storage_order(self, group: KeyGroup, n: int) -> bool:
        """Whether a query of ``n`` keys is exactly the stored keys, each once, in storage
        order (the pool ``alcli embed`` filled, compacted or not): then key i is row i. The
        usual warm ``select``: a comparison and a sort of the keys' hashes instead of
        building the index and searching it."""
        if len(self.stored) != 1 or group.width not in self.stored or len(group.positions) != n:
            return False
        words, _ = self.stored[group.width]
        if int(self.bases[-1]) != n or sum(map(len, words)) != n:
            return False
        at = 0
        for segment_words in words:
            if not np.array_equal(group.words[at : at + len(segment_words)], segment_words):
                return False
            at += len(segment_words)
        hashes = np.sort(key_hash(group.words))  # distinct hashes: distinct keys; else the
        return not (hashes[1:] == hashes[:-1]).any()  # index decides (a key stored twice?)

    @property
    def dim(self) -> int | None:
        return self.embedding_segments[0].dim if self.embedding_segments else None

    def segment_of(self, gids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.searchsorted(self.bases, gids, side="right").astype(np.int64) - 1


class Reader:
    """Views per fingerprint, rebuilt only when the manifest changed, and lookups over them."""

    def __init__(self, index: Index, integrity: Integrity) -> None:
        self._index = index
        self._layout = index.layout
        self._integrity = integrity
        self._views: dict[str, View] = {}
        self._words: dict[tuple[str, str], npt.NDArray[np.uint64]] = {}

    def close(self) -> None:
        self._views.clear()
        self._words.clear()

    def remember_words(self, fingerprint: str, name: str, words: npt.NDArray[np.uint64]) -> None:
        """The keys of a segment this process just wrote, so the next view need not read them."""
        self._words[(fingerprint, name)] = words

    def forget(self, fingerprint: str) -> None:
        self._views.pop(fingerprint, None)
        for key in [k for k in self._words if k[0] == fingerprint]:
            del self._words[key]

    # --- views ---

    def view(self, fingerprint: str) -> View:
        """The fingerprint as the manifest says now; rebuilt only when the manifest changed."""
        segments = entries(self._index.manifest(fingerprint))
        bad = self._integrity.bad(fingerprint)
        current = self._views.get(fingerprint)
        if current is not None and current.segments == segments and current.bad == bad:
            return current
        live = {e.name for e in segments}
        for key in [k for k in self._words if k[0] == fingerprint and k[1] not in live]:
            del self._words[key]
        self._integrity.forget(fingerprint, keep=live)
        embedding = [e for e in segments if e.kind == EMBEDDINGS and e.name not in bad]
        bases = np.zeros(len(embedding) + 1, dtype=np.int64)
        np.cumsum([e.rows for e in embedding], out=bases[1:])
        by_width: dict[int, tuple[list[npt.NDArray[np.uint64]], list[npt.NDArray[np.int64]]]]
        by_width = {}
        for i, entry in enumerate(embedding):
            words_list, gid_list = by_width.setdefault(entry.key_width, ([], []))
            words_list.append(self._segment_words(fingerprint, entry))
            gid_list.append(np.arange(bases[i], bases[i + 1], dtype=np.int64))
        view = View(segments, bad, embedding, bases, by_width)
        self._views[fingerprint] = view
        return view

    def current(self, fingerprint: str) -> tuple[View, dict[str, str]]:
        """The view and its failure records ({key: latest reason})."""
        view = self.view(fingerprint)
        return view, self._failures(fingerprint, view)

    def _failures(self, fingerprint: str, view: View) -> dict[str, str]:
        """{key: latest reason}, read once per manifest version."""
        if view.failures is None:
            failures: dict[str, str] = {}
            for entry in view.segments:
                if entry.kind != FAILURES or entry.name in view.bad:
                    continue
                with self._open(fingerprint, entry) as segment:
                    keys, reasons = failure_records(segment)
                failures.update(zip(keys, reasons, strict=True))
            view.failures = failures
        return view.failures

    def _segment_words(self, fingerprint: str, entry: Entry) -> npt.NDArray[np.uint64]:
        cached = self._words.get((fingerprint, entry.name))
        if cached is None:
            with self._open(fingerprint, entry) as segment:
                cached = words_of(segment.read_keys())
            self._words[(fingerprint, entry.name)] = cached
        return cached

    def _open(self, fingerprint: str, entry: Entry) -> Segment:
        return Segment(self._layout.segment_path(fingerprint, entry.name), entry)

    # --- rows ---

    @staticmethod
    def _gids(view: View, groups: list[KeyGroup], n: int) -> npt.NDArray[np.int64]:
        """Each key's row id in the view, -1 where it is not cached."""
        if len(groups) == 1 and view.in_storage_order(groups[0], n):
            return np.arange(n, dtype=np.int64)
        gids = np.full(n, -1, dtype=np.int64)
        for group in groups:
            index = view.indexes.get(group.width)
            if index is not None:
                gids[group.positions] = index.find(group.words)
        return gids

    def contains(self, fingerprint: str, groups: list[KeyGroup], n: int) -> Array:
        """The found mask of ``lookup`` without gathering a row. The segments holding found
        keys are checked as ``lookup`` checks them, so a corrupt one is set aside."""
        view = self.view(fingerprint)
        gids = self._gids(view, groups, n)
        for i in np.unique(view.segment_of(gids[gids >= 0])):
            with self._open(fingerprint, view.embedding_segments[int(i)]) as segment:
                self._integrity.check_data(fingerprint, segment)
        return gids >= 0

    def lookup(self, fingerprint: str, groups: list[KeyGroup], n: int) -> tuple[Array, Array]:
        """(embeddings [n, D] float32 with zero rows where missing, found mask [n])."""
        view = self.view(fingerprint)
        dim = view.dim
        if dim is None:
            return np.zeros((n, 0), dtype=np.float32), np.zeros(n, dtype=bool)
        gids = self._gids(view, groups, n)
        found = gids >= 0
        if n and found.all():
            mapped = self._mapped_run(fingerprint, view, gids)
            if mapped is not None:
                return mapped, found
        out = np.zeros((n, dim), dtype=np.float32)
        queries = np.flatnonzero(found)
        self._fill(fingerprint, view, gids[queries], queries, out)
        return out, found

    def locate(
        self, fingerprint: str, groups: list[KeyGroup], n: int
    ) -> tuple[View, npt.NDArray[np.int64]]:
        """The view and each key's row id in it (-1 where not cached), no row read: what a
        caller that streams the rows later (``read_gids``) keeps instead of the rows."""
        view = self.view(fingerprint)
        return view, self._gids(view, groups, n)

    def read_gids(
        self, fingerprint: str, view: View, gids: npt.NDArray[np.int64], out: Array
    ) -> None:
        """out[i] = row ``gids[i]`` of ``view`` as float32 (every gid found): one chunk of a
        pool read out of core, with the same reads and checks as ``lookup``."""
        self._fill(fingerprint, view, gids, np.arange(len(gids)), out)

    def read_run(
        self, fingerprint: str, view: View, segment: int, start_row: int, out: Array
    ) -> None:
        """out[:] = rows start_row.. of the view's ``segment``, in its own dtype (one read)."""
        with self._open(fingerprint, view.embedding_segments[segment]) as opened:
            self._integrity.check_data(fingerprint, opened)
            opened.read_rows_into(start_row, out)

    def advise(self, fingerprint: str, view: View, segment: int, start_row: int, rows: int) -> None:
        """Ask the kernel to read these rows of the view's ``segment`` ahead (``Segment.advise``);
        a segment that cannot be opened is the next read's problem, not this hint's."""
        with contextlib.suppress(SegmentCorruptError, SegmentVanishedError, OSError):
            entry = view.embedding_segments[segment]
            with self._open(fingerprint, entry) as opened:
                opened.advise(start_row, min(rows, entry.rows - start_row))

    def _fill(
        self,
        fingerprint: str,
        view: View,
        wanted: npt.NDArray[np.int64],
        queries: npt.NDArray[np.int64],
        out: Array,
    ) -> None:
        """out[queries] = rows ``wanted``, read segment by segment in row order."""
        if len(wanted) > 1 and not (wanted[1:] >= wanted[:-1]).all():
            order = np.argsort(wanted, kind="stable")
            wanted, queries = wanted[order], queries[order]
        cuts = np.searchsorted(wanted, view.bases)
        for i, entry in enumerate(view.embedding_segments):
            a, b = int(cuts[i]), int(cuts[i + 1])
            if a < b:
                self._read_rows(fingerprint, entry, wanted[a:b] - view.bases[i], queries[a:b], out)

    def _mapped_run(
        self, fingerprint: str, view: View, gids: npt.NDArray[np.int64]
    ) -> Array | None:
        """A read-only memmap of the rows when the keys are one run of one float32 segment.

        That is the common warm case (a pool embedded in order, then compacted), and on this
        kind of VM it matters: faulting in a fresh 2 GiB array costs 5-9 s, while mapping the
        page-cached segment costs about 1.3 s for the first full pass over it.
        """
        first, last = int(gids[0]), int(gids[-1])
        if last - first != len(gids) - 1 or (len(gids) > 1 and not (np.diff(gids) == 1).all()):
            return None
        i = int(view.segment_of(np.array([first]))[0])
        entry = view.embedding_segments[i]
        start = first - int(view.bases[i])
        if start + len(gids) > entry.rows or DTYPES[entry.dtype_code] != np.dtype("<f4"):
            return None
        with self._open(fingerprint, entry) as segment:
            self._integrity.check_data(fingerprint, segment)
            return segment.memmap()[start : start + len(gids)]

    def _read_rows(
        self,
        fingerprint: str,
        entry: Entry,
        rows: npt.NDArray[np.int64],
        queries: npt.NDArray[np.int64],
        out: Array,
    ) -> None:
        """out[queries] = segment rows ``rows`` (ascending): contiguous reads when dense,
        straight into ``out`` when the rows land in order, a memmap gather when sparse."""
        with self._open(fingerprint, entry) as segment:
            self._integrity.check_data(fingerprint, segment)
            # Sparse against the span read, not the segment: a dense run of a big segment
            # (one chunk of a streamed pool) is read, not gathered through a memmap.
            if len(rows) * 4 < int(rows[-1]) - int(rows[0]) + 1:
                out[queries] = segment.memmap()[rows]
                return
            chunk_rows = segment.chunk_rows
            direct = segment.dtype == out.dtype
            i = 0
            while i < len(rows):
                first = int(rows[i])
                j = int(np.searchsorted(rows, first + chunk_rows, side="left"))
                stop = int(rows[j - 1]) + 1
                count = j - i
                q = queries[i:j]
                if direct and count == stop - first and (count == 1 or (np.diff(q) == 1).all()):
                    segment.read_rows_into(first, out[int(q[0]) : int(q[0]) + count])
                else:
                    buffer = np.empty((stop - first, entry.dim), dtype=segment.dtype)
                    segment.read_rows_into(first, buffer)
                    out[q] = buffer if count == stop - first else buffer[rows[i:j] - first]
                i = j
