"""Storing: a batch of rows (or failure records) written as segments, then committed.

A segment counts once the manifest lists it: ``append`` is the commit point, one transaction.
A batch that fails before its commit is undone; one stopped by a Ctrl-C or exit between its
rename and its commit is kept (it is whole on disk), committed at once or adopted later.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import numpy.typing as npt

from alcli.cache.index import Index
from alcli.cache.keys import KeyGroup
from alcli.cache.manifest import entries, manifest_dim
from alcli.cache.reader import Reader
from alcli.cache.segments import EMBEDDINGS, Array, Entry, write_failures, write_segment


class Writer:
    """Appends segments to a fingerprint and commits them to its manifest."""

    def __init__(self, index: Index, reader: Reader, *, dtype_code: int, durable: bool) -> None:
        self._index = index
        self._layout = index.layout
        self._reader = reader
        self._dtype_code = dtype_code
        self._durable = durable

    def store(self, fingerprint: str, groups: list[KeyGroup], data: Array) -> tuple[Entry, ...]:
        """One segment per key length (usually one), committed together; returns the
        fingerprint's segments as committed."""
        dim = int(data.shape[1])
        written: list[tuple[Entry, npt.NDArray[np.uint64]]] = []
        try:
            for group in groups:
                rows = data if len(group.positions) == len(data) else data[group.positions]
                entry = write_segment(
                    self._layout.segment_dir(fingerprint),
                    kind=EMBEDDINGS,
                    raw_keys=group.raw,
                    rows=len(rows),
                    dim=dim,
                    dtype_code=self._dtype_code,
                    payload=[rows],
                    payload_bytes=rows.nbytes,
                    durable=self._durable,
                )
                written.append((entry, group.words))
            manifest = self.append(fingerprint, [e for e, _ in written], dim)
        except BaseException as exc:
            self._undo_or_keep(fingerprint, [e for e, _ in written], dim, exc)
            raise
        for entry, words in written:
            self._reader.remember_words(fingerprint, entry.name, words)
        return entries(manifest)

    def store_failures(
        self, fingerprint: str, keys: list[str], reasons: list[str]
    ) -> tuple[Entry, ...]:
        """One failure-record segment, committed; returns the fingerprint's segments."""
        directory = self._layout.segment_dir(fingerprint)
        entry = write_failures(directory, keys, reasons, durable=self._durable)
        try:
            manifest = self.append(fingerprint, [entry], None)
        except BaseException as exc:
            self._undo_or_keep(fingerprint, [entry], None, exc)
            raise
        return entries(manifest)

    def check_dim(self, fingerprint: str, dim: int) -> None:
        existing = manifest_dim(self._index.manifest(fingerprint))
        if existing is not None and existing != dim:
            raise ValueError(
                f"embeddings have dim {dim} but fingerprint {fingerprint} holds dim {existing}; "
                "a fingerprint covers one model, so its dim cannot change"
            )

    def append(self, fingerprint: str, entries: list[Entry], dim: int | None) -> dict[str, Any]:
        """Commit written segments to the manifest, in one transaction (the commit point).
        Idempotent: a segment already listed (adopted, or committed before a Ctrl-C landed)
        is not listed twice."""
        with self._index.transaction():
            manifest = self._index.manifest(fingerprint)
            if dim is not None:
                self.check_dim(fingerprint, dim)
            listed = {t[0] for t in manifest["segments"]}
            new = [tuple(e) for e in entries if e.name not in listed]
            manifest["segments"] = [*manifest["segments"], *new]
            self._index.put_manifest(fingerprint, manifest)
        return manifest

    def _undo_or_keep(
        self, fingerprint: str, entries: list[Entry], dim: int | None, error: BaseException
    ) -> None:
        """A store failed after writing ``entries``. An error (a dim clash, a full disk) undoes
        them. A Ctrl-C or exit between a rename and its commit keeps the batch, which is whole
        on disk: commit it now, or, if that is interrupted too, leave the files for the next
        open to adopt (``Index.reconcile``)."""
        if isinstance(error, Exception):
            self._layout.delete(fingerprint, [e.name for e in entries])
        elif entries:
            with contextlib.suppress(Exception):
                self.append(fingerprint, entries, dim)
