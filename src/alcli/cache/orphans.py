"""Files no writer will commit: abandoned temp files, and whole segments no manifest lists.

A store killed (or interrupted) between writing a segment and listing it leaves a temp file
or an unlisted segment. Neither may be touched while its writer lives: a writer holds an
``flock`` on its temp file from creating it to closing it, and a segment's name carries its
writer's pid. Once the writer is gone, temp files are deleted and whole segments adopted
(``Index.adopt``), so nothing an interrupted run paid for is lost.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

from alcli.cache.segments import (
    SEGMENT_NAME,
    TEMP_PREFIX,
    Entry,
    SegmentCorruptError,
    SegmentVanishedError,
    entry_from_file,
)

log = logging.getLogger(__name__)

ORPHAN_GRACE_S = 3600  # files not in the manifest younger than this may be mid-store


def writer_gone(name: str, mtime: float) -> bool:
    """Whether the process that wrote a segment or temp file can no longer be about to commit
    it: its pid (in the name) is dead on this host, or the file is older than any live write.
    A live pid may be an unrelated process that reused it; the age rule covers that case."""
    if time.time() - mtime > ORPHAN_GRACE_S:
        return True
    match = SEGMENT_NAME.fullmatch(name.removeprefix(TEMP_PREFIX))
    if match is None:
        return False
    return not pid_alive(int(match.group(1), 16))


def remove_if_abandoned(path: Path) -> bool:
    """Delete a temp segment whose writer is gone: nobody holds its lock (a writer holds it
    from creating the file to closing it) and its pid is dead, or it is older than any write."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        if not writer_gone(path.name, os.fstat(fd).st_mtime):
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or not a pid at all
        return True
    return True


def tidy_folder(directory: Path, names: list[str], manifest: dict[str, Any]) -> bool:
    """Delete temp files whose writer is gone (no lock held, pid dead) and files a compaction
    or clear retired. Returns whether an abandoned temp file was found (a write cut short)."""
    listed = {t[0] for t in manifest["segments"]}
    interrupted = False
    for name in names:
        path = directory / name
        if name.startswith(TEMP_PREFIX):
            interrupted |= remove_if_abandoned(path)
        elif name in manifest["retired"] and name not in listed:
            path.unlink(missing_ok=True)
    return interrupted


def unlisted_segments(
    directory: Path, names: list[str], manifest: dict[str, Any], *, everything: bool
) -> list[Entry]:
    """Whole segments among ``names`` that the manifest neither lists nor retired, oldest
    first: only those whose writer is gone, or all of them with ``everything`` (a lost or
    malformed index). Files that are not whole segments are deleted once older than any
    live write."""
    skip = {t[0] for t in manifest["segments"]} | set(manifest["retired"])
    found: list[Entry] = []
    for name in names:
        if name in skip or name.startswith(TEMP_PREFIX) or name.endswith(".corrupt"):
            continue
        path = directory / name
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            continue
        if not everything and not writer_gone(name, mtime):
            continue
        try:
            if not SEGMENT_NAME.fullmatch(name):
                raise SegmentCorruptError(name, "not a segment file name")
            found.append(entry_from_file(path))
        except SegmentCorruptError as exc:
            if everything:
                log.warning("not adopting embedding-cache file %s: %s", path, exc.reason)
            if time.time() - mtime > ORPHAN_GRACE_S:
                path.unlink(missing_ok=True)
        except SegmentVanishedError:
            continue
    return found
