"""``resolve_pool``: which form a POOL spec has, the items it gives, duplicates, content keys.

Its own module rather than in ``pool.py``: it dispatches to listing and manifests, which both
build on ``Pool`` and ``Item``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from alcli.errors import ItemError, PoolError
from alcli.sources.keys import Unreadable, content_key, key_from_info, map_chunked
from alcli.sources.listing import (
    call_store,
    forget_listings,
    glob_local,
    glob_remote,
    list_local_folder,
    list_remote,
)
from alcli.sources.manifests import ManifestEntry, ManifestReader
from alcli.sources.pool import Item, Pool, make_item
from alcli.sources.reading import read_remote
from alcli.sources.s3inventory import InventoryReader, is_report
from alcli.sources.table import ItemTable
from alcli.sources.uris import (
    GLOB_MAGIC,
    MANIFEST_EXTENSIONS,
    BadEntryError,
    canonical,
    has_image_extension,
    looked_for,
    protocol_names,
    split_uri,
)


def resolve_pool(
    spec: str,
    *,
    content_hash: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    stdin: Iterable[str] | None = None,
    io_threads: int = 32,
    memo_dir: str | os.PathLike[str] | None = None,
    inventory_prefix: str | None = None,
) -> Pool:
    """Resolve a POOL spec into ordered, keyed items (see ``alcli.sources`` for the forms).

    ``stdin`` replaces ``sys.stdin`` for the ``-`` spec. ``io_threads`` bounds the threads
    used for remote metadata look-ups and for ``content_hash`` reads. ``memo_dir`` (a folder,
    created on demand) remembers large manifests' and inventory reports' items
    (``etag_manifests.py``, ``s3inventory.py``).
    ``inventory_prefix`` keeps an S3 Inventory report's keys under it (``s3inventory.py``).
    Raises ``PoolError`` when the spec as a whole cannot give any item.
    """
    spec = spec.strip()
    if not spec:
        raise PoolError("POOL is empty", hint="give a directory, a glob, a URI or a manifest")
    pool = Pool(spec=spec, items=[], storage_options=dict(storage_options or {}))
    threads = max(1, io_threads)
    memo = None if memo_dir is None else str(memo_dir)
    manifests = ManifestReader(pool, threads, memo)
    if inventory_prefix and (spec == "-" or not is_report(spec)):
        raise PoolError(
            "--prefix applies to an S3 Inventory report (manifest.json or symlink.txt) only",
            hint="for a bucket prefix, give it in POOL: s3://bucket/prefix/",
        )
    listed: Sequence[Item]
    if spec == "-":
        listed = manifests.from_stdin(sys.stdin if stdin is None else stdin)
    else:
        inventory = InventoryReader(partial(_fetch, pool), prefix=inventory_prefix, memo_dir=memo)
        listed = _Spec(pool, manifests, inventory).items(spec)
    pool.items = _drop_duplicates(listed, pool.duplicates)
    if any(item.uri.startswith("s3://") for item in [*pool.items[:1], *pool.items[-1:]]):
        # The S3 client (credentials: botocore's chain) is built now, not inside the first
        # reads, whose item deadline would otherwise count its seconds on a busy machine.
        pool.filesystems.fast_s3()
    if content_hash:
        pool.items = _content_keyed(pool, pool.items, threads)
    return pool


class _Spec:
    """Turns one spec (not ``-``) into items by its form: folder, glob, file, manifest."""

    def __init__(self, pool: Pool, manifests: ManifestReader, inventory: InventoryReader) -> None:
        self.pool = pool
        self.manifests = manifests
        self.inventory = inventory

    def items(self, spec: str) -> Sequence[Item]:
        protocol, path = split_uri(spec)
        if protocol is None:
            return self._local(spec, os.path.expanduser(path))
        try:
            protocol_names(protocol)
        except BadEntryError as error:
            raise PoolError(
                f"cannot resolve POOL {spec}: {error}",
                hint="use a local path or a known fsspec protocol such as s3:// or memory://",
            ) from None
        return self._remote(spec, protocol)

    def _local(self, spec: str, path: str) -> Sequence[Item]:
        abspath = os.path.abspath(path)
        if os.path.isdir(abspath):
            return list_local_folder(spec, abspath, self.pool)
        if os.path.isfile(abspath):
            return self._single_file(spec, abspath)
        if GLOB_MAGIC.search(path):
            return glob_local(spec, abspath, self.pool)
        raise PoolError(
            f"no such file or directory: {spec}", hint="check the path, or quote a glob"
        )

    def _single_file(self, spec: str, uri: str) -> Sequence[Item]:
        name = uri.lower()
        if is_report(name):
            return self.inventory.items(uri)
        if name.endswith(MANIFEST_EXTENSIONS):
            return self.manifests.items(uri)
        if has_image_extension(name):
            return self.manifests.keyed([ManifestEntry(uri)])
        raise _neither_image_nor_manifest(spec, hint="rename it, or list it in a .txt manifest")

    def _remote(self, spec: str, protocol: str) -> Sequence[Item]:
        fs = self.pool.filesystems.get(protocol)
        root = fs._strip_protocol(spec)
        if GLOB_MAGIC.search(root):
            return glob_remote(spec, fs, root)
        if spec.endswith("/"):
            return list_remote(spec, fs, root, self.pool.filesystems.fast_s3_for(protocol))
        if is_report(spec):
            return self.inventory.items(canonical(spec, None))
        if spec.lower().endswith(MANIFEST_EXTENSIONS):
            return self.manifests.items(canonical(spec, None))
        forget_listings(fs, root)
        try:
            info = call_store(fs.info, root)
        except FileNotFoundError:
            raise PoolError(
                f"no such object or prefix: {spec}",
                hint="check the bucket, the path and the endpoint (AWS_ENDPOINT_URL)",
            ) from None
        if info.get("type") == "directory":
            return list_remote(spec, fs, root, self.pool.filesystems.fast_s3_for(protocol))
        uri = fs.unstrip_protocol(info.get("name", root))
        if not has_image_extension(uri):
            raise _neither_image_nor_manifest(spec, hint="end a prefix with '/' to list it")
        return [Item(uri, key_from_info(uri, info))]


def _fetch(pool: Pool, uri: str) -> bytes:
    """A whole file, local or remote (an inventory's manifest and data files)."""
    protocol, path = split_uri(uri)
    if protocol is None:
        with open(path, "rb") as handle:
            return handle.read()
    return read_remote(pool.filesystems.get(protocol), protocol, path)


def _neither_image_nor_manifest(spec: str, *, hint: str) -> PoolError:
    return PoolError(
        f"{spec} is neither an image ({looked_for()}) "
        f"nor a manifest ({', '.join(MANIFEST_EXTENSIONS)})",
        hint=hint,
    )


def _drop_duplicates(items: Sequence[Item], duplicates: list[str]) -> Sequence[Item]:
    """First occurrence kept; each repeated URI reported once, in order of first repeat."""
    if isinstance(items, ItemTable) and items.distinct:  # checked when the table was made
        return items
    if len({item.uri for item in items}) == len(items):
        return items  # the usual case, checked in one pass
    seen: set[str] = set()
    reported: set[str] = set()
    kept: list[Item] = []
    for item in items:
        if item.uri in seen:
            if item.uri not in reported:
                reported.add(item.uri)
                duplicates.append(item.uri)
            continue
        seen.add(item.uri)
        kept.append(item)
    return kept


def _content_keyed(pool: Pool, items: Sequence[Item], threads: int) -> list[Item]:
    """Re-key items on their bytes, read on a thread pool; unreadable ones stay listed."""

    def key_of(item: Item) -> str | Unreadable:
        if item.unreadable:  # resolving already failed it, with its reason
            return Unreadable(False, pool.unreadable.get(item.uri, "unreadable"))
        try:
            return content_key(pool.read(item.uri))
        except ItemError as error:
            return Unreadable(error.reason == "not found", error.reason)

    keys = map_chunked(key_of, items, threads)
    return [
        make_item(item.uri, key, pool.unreadable) for item, key in zip(items, keys, strict=True)
    ]
