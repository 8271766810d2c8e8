"""Integrity: the cache never serves rows it has not checked, and sets bad segments aside.

Every open checks a segment's header (own crc32), size and keys crc32. Rows are served only
after the data crc32 matched since the file last changed: a check is remembered in the index
(``verified:<fingerprint>``) with the file's inode, size, mtime and ctime, so a warm read of
an unchanged segment costs one ``fstat``, and the first read after any change (rows
overwritten or permuted in place, a restore, a ``chmod``) one pass at ≈ 2.5 GB/s (crc32;
blake2b ≈ 0.6, sha1 ≈ 1.3; ≈ 0.9 s per 1M × 512 float32). A stamp taken within ``_RACY_NS``
of the file's last change is never trusted (git's "racily clean" rule). Damage that leaves a
file's times alone (bit rot) shows only to ``verify`` (``alcli cache verify``), which reads
everything. A segment that fails a check is logged by path and ignored (its items are
embedded again), never served, never fatal; compaction sets the file aside as ``*.corrupt``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import diskcache

from alcli.cache.index import Index
from alcli.cache.manifest import entries, verified_key
from alcli.cache.segments import (
    EMBEDDINGS,
    FAILURES,
    Entry,
    Segment,
    SegmentCorruptError,
    SegmentVanishedError,
    failure_records,
)
from alcli.errors import RunError

log = logging.getLogger(__name__)

T = TypeVar("T")

# A file changed within this long of its last stamp may carry the same time stamps (coarse
# file-system clocks: 1-10 ms on Linux, 1-2 s on some file systems), so such a stamp is never
# trusted: the segment is checked again on its next read (git's "racily clean" rule).
_RACY_NS = 2_000_000_000
_MAX_VANISHED = 8  # manifest changes survived by one lookup before giving up


class Integrity:
    """Which segments are trusted (data checked since their file last changed) and which
    are known bad, in this process; the checks themselves."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self._layout = index.layout
        # segment -> file stamp at its last (non-racy) data check, in this process
        self._trusted: dict[tuple[str, str], tuple[int, int, int, int]] = {}
        self._bad: dict[str, set[str]] = {}

    def bad(self, fingerprint: str) -> frozenset[str]:
        return frozenset(self._bad.get(fingerprint, ()))

    def forget(self, fingerprint: str, keep: set[str] | None = None) -> None:
        """Drop what is remembered of the fingerprint's segments (all, or those not in
        ``keep``: segments a compaction or clear removed)."""
        if keep is None:
            self._bad.pop(fingerprint, None)
        for key in [k for k in self._trusted if k[0] == fingerprint]:
            if keep is None or key[1] not in keep:
                del self._trusted[key]

    def check_data(self, fingerprint: str, segment: Segment, *, always: bool = False) -> None:
        """Verify a segment's data checksum before its rows are served, unless its file is
        unchanged (inode, size, mtime, ctime) since a check that was not racy: a warm read of
        an unchanged segment costs one fstat, the first read after any change one full pass."""
        key = (fingerprint, segment.entry.name)
        stamp, stamped_at = segment.stamp(), time.time_ns()
        if not always:
            if self._trusted.get(key) == stamp:
                return
            recorded = self._stamps(fingerprint).get(key[1])
            if isinstance(recorded, list | tuple) and tuple(recorded) == stamp:
                self._trusted[key] = stamp
                return
        self._trusted.pop(key, None)
        segment.verify_data()
        if stamped_at - max(stamp[2], stamp[3]) < _RACY_NS:
            return  # changed moments before the stamp: a change in the same tick would not show
        self._remember_verified(fingerprint, key[1], stamp)
        self._trusted[key] = stamp

    def _stamps(self, fingerprint: str) -> dict[str, Any]:
        """{segment: stamp at its last check}, as any process recorded them (a hint only:
        anything unreadable counts as never checked)."""
        try:
            stamps = self._index.get(verified_key(fingerprint))
        except (sqlite3.OperationalError, diskcache.Timeout):
            raise
        except Exception:  # a value that does not unpickle: check the data
            return {}
        return stamps if isinstance(stamps, dict) else {}

    def _remember_verified(self, fingerprint: str, name: str, stamp: tuple[int, ...]) -> None:
        """Record a check so later processes skip it; best effort (a read-only or busy index
        only means the next read checks again)."""
        if self._index.read_only is not None:
            return
        try:
            with self._index.transaction():
                live = {t[0] for t in self._index.manifest(fingerprint)["segments"]}
                stamps = {n: v for n, v in self._stamps(fingerprint).items() if n in live}
                stamps[name] = list(stamp)
                self._index.set(verified_key(fingerprint), stamps)
        except (sqlite3.Error, diskcache.Timeout, OSError) as exc:
            log.debug("could not record the check of %s: %s", name, exc)

    def retrying(self, fingerprint: str, action: Callable[[], T]) -> T:
        """Run a read; a segment found corrupt is set aside, one found gone (a concurrent
        compaction) makes the manifest be read again, and the read starts over."""
        vanished = 0
        while True:
            try:
                return action()
            except SegmentCorruptError as exc:  # noqa: PERF203 (the retry loop is the point)
                self.mark_bad(fingerprint, exc.name, exc.reason)
            except SegmentVanishedError as exc:
                vanished += 1
                names = {e.name for e in entries(self._index.manifest(fingerprint))}
                if exc.name in names:
                    self.mark_bad(fingerprint, exc.name, "listed in the manifest but missing")
                elif vanished > _MAX_VANISHED:
                    raise RunError(
                        f"the embedding cache for {fingerprint} kept changing during a read",
                        hint="run the command again",
                    ) from None

    def mark_bad(self, fingerprint: str, name: str, reason: str, *, quiet: bool = False) -> None:
        if not quiet:
            log.warning(
                "ignoring unusable embedding-cache segment %s: %s (its items will be embedded "
                "again; compaction sets the file aside)",
                self._layout.segment_path(fingerprint, name),
                reason,
            )
        self._bad.setdefault(fingerprint, set()).add(name)

    def verify(self, fingerprint: str) -> list[dict[str, Any]]:
        """One report row per listed segment, every byte read; the bad ones are marked bad
        (quietly: the report says why), for a compaction to set aside."""
        report = []
        bad = {}
        for entry in entries(self._index.manifest(fingerprint)):
            reason = self._verify_segment(fingerprint, entry)
            if reason is not None:
                bad[entry.name] = reason
            report.append(
                {
                    "fingerprint": fingerprint,
                    "file": str(self._layout.segment_path(fingerprint, entry.name)),
                    "kind": "embeddings" if entry.kind == EMBEDDINGS else "failures",
                    "rows": entry.rows,
                    "ok": reason is None,
                    "reason": reason,
                }
            )
        for name, reason in bad.items():
            self.mark_bad(fingerprint, name, reason, quiet=True)
        return report

    def _verify_segment(self, fingerprint: str, entry: Entry) -> str | None:
        """Why a segment is unusable, every byte read; None when it is whole."""
        try:
            with Segment(self._layout.segment_path(fingerprint, entry.name), entry) as segment:
                if entry.kind == FAILURES:
                    failure_records(segment)
                else:
                    segment.read_keys()
                    self.check_data(fingerprint, segment, always=True)
        except SegmentCorruptError as exc:
            return exc.reason
        except SegmentVanishedError:
            if entry.name in {e.name for e in entries(self._index.manifest(fingerprint))}:
                return "listed in the index but missing"
        return None
