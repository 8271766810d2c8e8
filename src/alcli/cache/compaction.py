"""Compaction: many small segments merged into one, superseded rows and bad segments dropped.

Many small segments (pipeline batches of 64-1,024 rows) are merged automatically once a
fingerprint has ``auto_compact_segments`` of them; ``compact`` merges everything. A merge
writes a new segment, swaps it into the manifest in one transaction (retiring the members),
then deletes the old files; a reader holding an older manifest that finds a file gone re-reads
the manifest and retries, and a file already open stays readable. One process compacts a
fingerprint at a time (a lease in the index, taken over from a killed holder).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from alcli.cache.index import Index
from alcli.cache.integrity import Integrity
from alcli.cache.keys import words_of
from alcli.cache.manifest import entries
from alcli.cache.reader import Reader, View
from alcli.cache.segments import (
    DTYPES,
    EMBEDDINGS,
    FAILURES,
    Array,
    Entry,
    Segment,
    SegmentCorruptError,
    SegmentVanishedError,
    write_failures,
    write_segment,
)

log = logging.getLogger(__name__)


#: Bytes read per step while merging. A merge holds about three such chunks (the one being
#: written, the next one read, a gathered copy), so this, not the pool, bounds its memory:
#: with lookups' 64 MiB chunks a 200,000-row compaction added ~240 MiB to the finishing
#: run's peak in the soak (benchmarks/RESULTS.md, "Soak (issue 11)").
MERGE_CHUNK_BYTES = 8 << 20


class Compactor:
    """Merges a fingerprint's segments: the small ones once there are enough, or all."""

    def __init__(
        self,
        index: Index,
        integrity: Integrity,
        reader: Reader,
        *,
        durable: bool,
        auto_compact_segments: int,
        small_segment_bytes: int,
    ) -> None:
        self._index = index
        self._layout = index.layout
        self._integrity = integrity
        self._reader = reader
        self._durable = durable
        self._auto_compact_segments = auto_compact_segments
        self._small_segment_bytes = small_segment_bytes

    def maybe_auto_compact(self, fingerprint: str, segments: tuple[Entry, ...]) -> None:
        small = sum(
            1
            for e in segments
            if e.kind == EMBEDDINGS and e.nbytes - e.data_offset < self._small_segment_bytes
        )
        failures = sum(1 for e in segments if e.kind == FAILURES)
        if max(small, failures) < self._auto_compact_segments:
            return
        self.compact_leased(fingerprint, small_only=True)

    def compact_leased(self, fingerprint: str, *, small_only: bool) -> None:
        """Compact unless another live process holds this fingerprint's lease. Errors only
        warn: the data is committed, and a merge can wait for the next store or open."""
        if not self._index.take_lease(fingerprint):
            return  # another process (or thread) is compacting this fingerprint
        try:
            self.compact(fingerprint, small_only=small_only)
        except OSError as exc:
            log.warning("could not compact the embedding cache for %s: %s", fingerprint, exc)
        finally:
            self._index.release_lease(fingerprint)

    def compact(self, fingerprint: str, *, small_only: bool) -> None:
        for _ in range(4):  # a member went bad or a concurrent merge took it: start over
            view, failures = self._integrity.retrying(
                fingerprint, partial(self._reader.current, fingerprint)
            )
            members = self._pick_members(view, small_only=small_only)
            if not members:
                break
            try:
                merged = self._merge(fingerprint, view, members, failures)
            except SegmentCorruptError as exc:
                self._integrity.mark_bad(fingerprint, exc.name, exc.reason)
                continue
            except SegmentVanishedError:
                continue
            if not self.swap(fingerprint, members, [e for e, _ in merged]):
                self._layout.delete(fingerprint, [e.name for e, _ in merged])
                continue
            for entry, words in merged:
                if words is not None:
                    self._reader.remember_words(fingerprint, entry.name, words)
            bad = self._integrity.bad(fingerprint)
            for entry in members:
                path = self._layout.segment_path(fingerprint, entry.name)
                if entry.name in bad:  # kept aside for inspection; clear() removes it
                    with contextlib.suppress(FileNotFoundError):
                        path.replace(path.with_name(path.name + ".corrupt"))
                else:
                    path.unlink(missing_ok=True)
            break
        self._index.reconcile(fingerprint)

    def _pick_members(self, view: View, *, small_only: bool) -> list[Entry]:
        """Segments to merge: every one, or the small ones once there are enough of them;
        failure records are always merged whole; known-bad segments always go."""
        bad = [e for e in view.segments if e.name in view.bad]
        embedding = view.embedding_segments
        failures = [e for e in view.segments if e.kind == FAILURES and e.name not in view.bad]
        if small_only:
            small = [e for e in embedding if e.nbytes - e.data_offset < self._small_segment_bytes]
            embedding = small if len(small) >= self._auto_compact_segments else []
            if len(failures) < self._auto_compact_segments:
                failures = []
        else:
            stored = sum(e.rows for e in embedding)
            superseded = stored > sum(index.items for index in view.indexes.values())
            if len(embedding) < 2 and not superseded:
                embedding = []
            if len(failures) < 2:
                failures = []
        members = {e.name for e in [*bad, *embedding, *failures]}
        return [e for e in view.segments if e.name in members]

    def _merge(
        self,
        fingerprint: str,
        view: View,
        members: list[Entry],
        failures: dict[str, str],
    ) -> list[tuple[Entry, npt.NDArray[np.uint64] | None]]:
        """Write the merged segments. Only rows that currently win go in, so a merged segment
        placed where its last member was never shadows a later store of the same key."""
        names = {e.name for e in members}
        merged: list[tuple[Entry, npt.NDArray[np.uint64] | None]] = []
        try:
            is_member = np.array([e.name in names for e in view.embedding_segments], dtype=bool)
            for width, index in view.indexes.items():
                words, gids = index.entries()
                keep = is_member[view.segment_of(gids)] if len(gids) else np.zeros(0, bool)
                if not keep.any():
                    continue
                words, gids = words[keep], gids[keep]
                order = np.argsort(gids, kind="stable")
                words, gids = words[order], gids[order]
                raw = np.ascontiguousarray(words.view(np.uint8)[:, :width])
                sources = [
                    (view.embedding_segments[i], int(view.bases[i]))
                    for i in np.unique(view.segment_of(gids))
                ]
                dtype_code = min(e.dtype_code for e, _ in sources)
                dim = sources[0][0].dim
                entry = write_segment(
                    self._layout.segment_dir(fingerprint),
                    kind=EMBEDDINGS,
                    raw_keys=raw,
                    rows=len(gids),
                    dim=dim,
                    dtype_code=dtype_code,
                    payload=self._winning_rows(fingerprint, sources, gids, DTYPES[dtype_code]),
                    payload_bytes=len(gids) * dim * DTYPES[dtype_code].itemsize,
                    durable=self._durable,
                )
                merged.append((entry, words_of(raw)))
            if failures and any(e.kind == FAILURES for e in members):
                entry = write_failures(
                    self._layout.segment_dir(fingerprint),
                    list(failures),
                    list(failures.values()),
                    durable=self._durable,
                )
                merged.append((entry, None))
        except BaseException:
            self._layout.delete(fingerprint, [e.name for e, _ in merged])
            raise
        return merged

    def _winning_rows(
        self,
        fingerprint: str,
        sources: list[tuple[Entry, int]],
        gids: npt.NDArray[np.int64],
        dtype: np.dtype[Any],
    ) -> Iterator[Array]:
        """The rows ``gids`` (ascending) in order, read whole per source so that each
        source's data checksum is verified."""
        for entry, base in sources:
            rows = gids[(gids >= base) & (gids < base + entry.rows)] - base
            with Segment(self._layout.segment_path(fingerprint, entry.name), entry) as segment:
                chunk_rows = max(1, MERGE_CHUNK_BYTES // segment.row_bytes)
                for start, chunk in segment.checked_chunks(chunk_rows):
                    a, b = np.searchsorted(rows, [start, start + len(chunk)])
                    if a < b:
                        yield chunk[rows[a:b] - start].astype(dtype, copy=False)

    def swap(self, fingerprint: str, members: list[Entry], merged: list[Entry]) -> bool:
        """Replace members by merged segments in one transaction; False if someone else
        changed those members first. Each merged segment takes its last member's place."""
        names = {e.name for e in members}
        new_names = {e.name for e in merged}
        with self._index.transaction():
            manifest = self._index.manifest(fingerprint)
            current = [e for e in entries(manifest) if e.name not in new_names]
            if not names <= {e.name for e in current}:
                return False
            last_at = {(e.kind, e.key_width): i for i, e in enumerate(current) if e.name in names}
            segments: list[tuple[Any, ...]] = []
            for i, entry in enumerate(current):
                if entry.name not in names:
                    segments.append(tuple(entry))
                    continue
                segments.extend(tuple(m) for m in merged if last_at.get((m.kind, m.key_width)) == i)
            manifest["segments"] = segments
            # The members' files are deleted next; retired, a crash cannot make them adopted.
            manifest["retired"] = sorted({*manifest["retired"], *names})
            self._index.put_manifest(fingerprint, manifest)
        return True

    # --- after a crash: temp files, unlisted segments, unfinished compactions ---
