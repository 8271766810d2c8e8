"""Opening the index's SQLite file: writable, read-only, or damaged and set aside.

diskcache holds only what must be process-safe (the manifests, in SQLite transactions). A
folder this user cannot write opens read-only (SQLite ``mode=ro``, else ``immutable``): warm
reads work. A ``cache.db`` that is not a database is moved aside, under a lock, and an empty
one started; the caller then rebuilds the manifests from the segment files.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import diskcache

from alcli.cache.paths import Layout
from alcli.errors import RunError

log = logging.getLogger(__name__)

READ_ONLY_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}
META_SETTINGS: dict[str, Any] = {
    "eviction_policy": "none",
    "size_limit": 1 << 62,
    "cull_limit": 0,
    "statistics": 0,
    "disk_min_file_size": 1 << 30,  # manifests inline in SQLite, never side files
}


class Opened(NamedTuple):
    """What ``open_meta`` found: the store, why it is read-only (or None), what was damaged."""

    meta: Any  # diskcache.Cache, or ReadOnlyMeta
    read_only: str | None
    damage: str | None


def can_write(directory: Path) -> bool:
    """Whether this user may write the index folder and its cache.db (root always may, unless
    the file system itself is read-only, which ``access`` reports too)."""
    db = directory / "cache.db"
    folder = directory if directory.exists() else directory.parent
    return os.access(folder, os.W_OK) and (not db.exists() or os.access(db, os.W_OK))


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


class ReadOnlyMeta:
    """The manifests read straight from SQLite, for a cache folder this user cannot write.

    ``diskcache.Cache`` writes its settings as it opens, so it cannot open a read-only folder;
    reading needs only diskcache's encoding of keys and values (``Disk``). A WAL database with
    no ``-shm`` file next to it opens only as ``immutable``, which is safe here: nobody can
    write this folder. Manifests rebuilt from the segments (the index is damaged too) live in
    ``overrides``, in memory.
    """

    def __init__(self, directory: Path, *, database: bool = True) -> None:
        self.overrides: dict[str, Any] = {}
        self._disk = diskcache.Disk(str(directory))
        self._db: sqlite3.Connection | None = None
        path = directory / "cache.db"
        if not database or not path.is_file():
            return
        error: sqlite3.OperationalError | None = None
        for flags in ("mode=ro", "mode=ro&immutable=1"):
            db = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True)
            try:
                db.execute("SELECT key FROM Cache LIMIT 1").fetchall()
            except sqlite3.OperationalError as exc:
                db.close()
                error = exc
                continue
            except BaseException:
                db.close()
                raise
            self._db = db
            return
        assert error is not None
        raise error

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.overrides:
            return self.overrides[key]
        if self._db is None:
            return default
        db_key, raw = self._disk.put(key)
        row = self._db.execute(
            "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = ?"
            " AND (expire_time IS NULL OR expire_time > ?)",
            (db_key, raw, time.time()),
        ).fetchone()
        return default if row is None else self._disk.fetch(row[0], row[1], row[2], False)

    def iterkeys(self) -> Iterator[Any]:
        yield from self.overrides
        if self._db is not None:
            for key, raw in self._db.execute("SELECT key, raw FROM Cache ORDER BY rowid"):
                decoded = self._disk.get(key, raw)
                if decoded not in self.overrides:
                    yield decoded

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_meta(layout: Layout) -> Opened:
    """The manifest store. A folder this user cannot write opens read-only; a cache.db that is
    not a database is set aside (``damage`` says why: rebuild the index from the segment
    files, which carry their own keys, shape and checksums)."""
    directory = layout.meta
    try:
        layout.segments.mkdir(parents=True, exist_ok=True)
        return Opened(diskcache.Cache(str(directory), **META_SETTINGS), None, None)
    except OSError as exc:
        if exc.errno not in READ_ONLY_ERRNOS:
            raise RunError(
                f"cannot open the embedding cache at {layout.root}: {exc.strerror or exc}",
                hint="set ALCLI_CACHE_DIR to a writable directory",
            ) from exc
        read_only = exc.strerror or str(exc)
    except sqlite3.OperationalError as exc:
        if can_write(directory):
            raise RunError(
                f"cannot open the embedding-cache index {layout.index_path}: {exc}",
                hint="run the command again; another alcli may hold it",
            ) from exc
        read_only = "the folder is not writable"
    except sqlite3.DatabaseError as exc:
        if can_write(directory):
            return Opened(replace_damaged(layout, exc), None, str(exc))
        read_only = "the folder is not writable"
    try:
        return Opened(ReadOnlyMeta(directory), read_only, None)
    except sqlite3.DatabaseError as exc:
        return Opened(ReadOnlyMeta(directory, database=False), read_only, str(exc))


def replace_damaged(layout: Layout, problem: sqlite3.DatabaseError) -> diskcache.Cache:
    """Set a damaged cache.db aside (kept for inspection) and start an empty one; under a
    lock, so that two processes healing at once do not set each other's new index aside."""
    directory = layout.meta
    damaged = _inode(layout.index_path)
    with open(layout.meta_lock, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if _inode(layout.index_path) != damaged:  # another process replaced it
            return diskcache.Cache(str(directory), **META_SETTINGS)
        aside = directory.with_name(f"meta.unreadable-{time.time_ns():x}")
        directory.rename(aside)
        log.warning(
            "the embedding-cache index %s is unreadable (%s); moved it to %s and rebuilt "
            "the index from the segment files (anything they lack will be embedded again)",
            layout.index_path,
            problem,
            aside,
        )
        return diskcache.Cache(str(directory), **META_SETTINGS)
