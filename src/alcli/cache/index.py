"""The index: each fingerprint's manifest in diskcache, healed from the segment files.

The index is rebuildable: segments carry their keys, shape and checksums, and their names
start with a time stamp, so a ``cache.db`` that is not a database is set aside and every
manifest rebuilt from the files (``database.replace_damaged``, then ``adopt``); a manifest
value of the wrong shape is rebuilt alone. A folder this user cannot write opens read-only:
warm reads work, rebuilt manifests live in memory, and a write raises a UsageError (exit 2).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache

from alcli.cache.database import (
    READ_ONLY_ERRNOS,
    ReadOnlyMeta,
    can_write,
    open_meta,
    replace_damaged,
)
from alcli.cache.manifest import (
    checked_manifest,
    lease_key,
    manifest_dim,
    manifest_key,
)
from alcli.cache.orphans import pid_alive, tidy_folder, unlisted_segments
from alcli.cache.paths import Layout
from alcli.cache.segments import EMBEDDINGS, Entry
from alcli.errors import RunError, UsageError

log = logging.getLogger(__name__)

_LEASE_S = 600  # an auto-compaction lease held by a killed process expires after this


class Index:
    """The manifests (and check stamps, compaction leases) of one cache folder.

    ``directory`` is the cache folder the user named, for messages. Callers serialise access
    (``EmbeddingCache`` holds one lock around every call).
    """

    def __init__(self, layout: Layout, directory: Path) -> None:
        self.layout = layout
        self.directory = directory
        self._in_transaction = 0  # a damaged index is not replaced under an open transaction
        self._meta, self.read_only, damage = open_meta(layout)
        if damage is not None:
            self._rebuild(damage)

    def close(self) -> None:
        self._meta.close()

    # --- reading and writing keys ---

    def get(self, key: str) -> Any:
        """``meta.get``; a cache.db found damaged while running is replaced as on opening."""
        try:
            return self._meta.get(key)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            if self._in_transaction:
                raise
            self._meta.close()
            if self.read_only is None and can_write(self.layout.meta):
                self._meta = replace_damaged(self.layout, exc)
            else:
                self.read_only = self.read_only or "its damaged index cannot be replaced"
                self._meta = ReadOnlyMeta(self.layout.meta, database=False)
            self._rebuild(str(exc))
            return self._meta.get(key)

    def set(self, key: str, value: Any) -> None:
        if isinstance(self._meta, ReadOnlyMeta):
            self._meta.overrides[key] = value
        else:
            self._meta.set(key, value)

    def delete(self, key: str) -> None:
        self._meta.delete(key)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if isinstance(self._meta, ReadOnlyMeta):  # rebuilt manifests only, in memory
            yield
        else:
            self._in_transaction += 1
            try:
                with self._meta.transact(retry=True):
                    yield
            finally:
                self._in_transaction -= 1

    def manifest(self, fingerprint: str) -> dict[str, Any]:
        """The fingerprint's manifest, checked; one that is not a manifest (a value of the
        wrong type, a malformed entry) is rebuilt from the segment files, with a warning."""
        try:
            return checked_manifest(self.get(manifest_key(fingerprint)))
        except (sqlite3.OperationalError, diskcache.Timeout):
            raise
        except Exception as exc:  # ValueError, or a value that does not unpickle
            reason = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
        log.warning(
            "the embedding-cache index %s holds %s for model %s; rebuilt that list of "
            "segments from the files in %s",
            self.layout.index_path,
            reason,
            fingerprint,
            self.layout.segment_dir(fingerprint),
        )
        return self.adopt(fingerprint, everything=True, reset=True)

    def put_manifest(self, fingerprint: str, manifest: dict[str, Any]) -> None:
        self.set(manifest_key(fingerprint), manifest)

    def fingerprints(self) -> list[str]:
        prefix = manifest_key("")
        return sorted(
            k.removeprefix(prefix)
            for k in self._meta.iterkeys()
            if isinstance(k, str) and k.startswith(prefix)
        )

    # --- compaction leases ---

    def take_lease(self, fingerprint: str) -> bool:
        """Whether this process may compact the fingerprint now: no other live process holds
        its lease (a lease whose holder was killed is taken over)."""
        lease = lease_key(fingerprint)
        if not self._meta.add(lease, os.getpid(), expire=_LEASE_S, retry=True):
            with self.transaction():
                holder = self._meta.get(lease)
                if isinstance(holder, int) and pid_alive(holder):
                    return False  # another process (or thread) is compacting this fingerprint
                self._meta.set(lease, os.getpid(), expire=_LEASE_S)  # its holder was killed
        return True

    def release_lease(self, fingerprint: str) -> None:
        self._meta.delete(lease_key(fingerprint), retry=True)

    # --- writes: read-only caches, and errors as one line ---

    def check_writable(self) -> None:
        """Raise the read-only UsageError now, before work whose results could not be kept."""
        if self.read_only is not None:
            raise self._read_only_error(self.read_only)

    def _read_only_error(self, why: str) -> UsageError:
        return UsageError(
            f"the embedding cache at {self.directory} is read-only ({why}): cached items can "
            "be read, new ones cannot be stored",
            hint="pass --cache-dir or set ALCLI_CACHE_DIR to a writable folder",
        )

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A write: refused at once when the cache is read-only; an OSError (disk full,
        permissions) or a damaged cache.db becomes a one-line error."""
        self.check_writable()
        try:
            yield
        except OSError as exc:
            if exc.errno in READ_ONLY_ERRNOS:
                raise self._read_only_error(exc.strerror or str(exc)) from exc
            raise RunError(
                f"cannot write to the embedding cache at {self.layout.root}: {exc.strerror or exc}",
                hint="free disk space or point ALCLI_CACHE_DIR elsewhere",
            ) from exc
        except sqlite3.OperationalError as exc:
            if not can_write(self.layout.meta):
                raise self._read_only_error(str(exc)) from exc
            raise RunError(
                f"cannot write the embedding-cache index {self.layout.index_path}: {exc}"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise RunError(
                f"the embedding-cache index {self.layout.index_path} is damaged ({exc})",
                hint="run the command again: it is rebuilt from the segment files on opening",
            ) from exc

    # --- healing: the manifests rebuilt from the segment files ---

    def _rebuild(self, problem: str) -> None:
        """List every whole segment on disk again, per fingerprint (after replace_damaged,
        or in memory when a read-only folder holds an unreadable cache.db)."""
        if self.read_only is not None:
            log.warning(
                "the embedding-cache index %s is unreadable (%s) and the cache is read-only: "
                "reading the segment files without it",
                self.layout.index_path,
                problem,
            )
        for fingerprint in self.layout.fingerprint_dirs():
            self.adopt(fingerprint, everything=True)

    def reconcile(self, fingerprint: str) -> bool:
        """Bring the segment folder and the manifest into agreement after a crash: delete
        abandoned temp files and retired files, adopt whole segments that no manifest lists.
        Returns whether an abandoned temp was found (a write, maybe a merge, was cut short)."""
        if not self.layout.segment_dir(fingerprint).is_dir():
            return False
        names = self.layout.segment_names(fingerprint)
        directory = self.layout.segment_dir(fingerprint)
        interrupted = tidy_folder(directory, names, self.manifest(fingerprint))
        self.adopt(fingerprint, everything=False)
        return interrupted

    def adopt(self, fingerprint: str, *, everything: bool, reset: bool = False) -> dict[str, Any]:
        """List whole segments that the manifest lacks, oldest first, and return the manifest.

        A store killed or interrupted between its rename and its commit keeps its batch once
        its writer is gone; with ``everything`` (a lost or malformed index) every whole
        segment is listed, whoever wrote it, into an empty list when ``reset``. Retired names
        whose files are gone are forgotten."""
        directory = self.layout.segment_dir(fingerprint)
        names = self.layout.segment_names(fingerprint)
        manifest = checked_manifest(None) if reset else self.manifest(fingerprint)
        found = unlisted_segments(directory, names, manifest, everything=everything)
        forgotten = set(manifest["retired"]) - set(names)
        if not (found or forgotten or reset):
            return manifest
        with self.transaction():
            if not reset:
                manifest = self.manifest(fingerprint)
            adopted = self._adoptable(fingerprint, manifest, found)
            manifest["segments"] = [*manifest["segments"], *adopted]
            manifest["retired"] = [n for n in manifest["retired"] if n not in forgotten]
            self.put_manifest(fingerprint, manifest)
        if adopted:
            log.info(
                "kept %d segment(s) of %s that an interrupted run had written but not listed",
                len(adopted),
                fingerprint,
            )
        return manifest

    def _adoptable(
        self, fingerprint: str, manifest: dict[str, Any], found: list[Entry]
    ) -> list[tuple[Any, ...]]:
        """The found segments still unlisted and unretired whose dim agrees with the rest."""
        taken = {t[0] for t in manifest["segments"]} | set(manifest["retired"])
        dim = manifest_dim(manifest)
        adopted = []
        for entry in found:
            if entry.name in taken:  # listed or retired meanwhile
                continue
            if entry.kind == EMBEDDINGS and dim not in (None, entry.dim):
                log.warning(
                    "not adopting embedding-cache segment %s: dim %d, the others have %d",
                    self.layout.segment_path(fingerprint, entry.name),
                    entry.dim,
                    dim,
                )
                continue
            if entry.kind == EMBEDDINGS:
                dim = entry.dim
            adopted.append(tuple(entry))
        return adopted
