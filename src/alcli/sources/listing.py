"""Folders, prefixes and globs -> items, keyed from the listing that found them.

A folder or prefix gives every image below it, by extension, skipping names that start with
``.``; a glob gives every file it matches. Both come sorted by URI. An entry that fails (a
dangling link, a link loop) is that entry's problem: an unreadable item or a line in
``Pool.skipped``; only an unlistable root is a ``PoolError``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from alcli.errors import PoolError, one_line
from alcli.sources.keys import LocalKeys, key_from_info, local_key, local_problem
from alcli.sources.objectstore import FastS3
from alcli.sources.pool import Item, Pool, make_item
from alcli.sources.uris import GLOB_MAGIC, has_hidden_part, has_image_extension, looked_for

_R = TypeVar("_R")


# --- local --------------------------------------------------------------------------------


def walk_local(root: str, pool: Pool) -> list[Item]:
    """Every image below ``root``, sorted; real paths built from the parent's real path.

    Calling ``realpath`` per file costs several syscalls each; only symlinks need it.
    Symlinked folders are followed once each (cycles are cut by their real path). An entry
    that fails (a dangling link, a link loop, a name too long) is that entry's problem: an
    image-named one becomes an unreadable item, a sub-folder that cannot be listed is noted
    in ``pool.skipped``; only an unlistable ``root`` is a ``PoolError``.
    """
    items: list[Item] = []
    seen = {os.path.realpath(root)}
    stack = [(root, os.path.realpath(root))]
    while stack:
        directory, real_directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as error:
            if directory != root:
                reason = error.strerror or one_line(error)
                pool.skipped.append(f"{directory}: cannot list: {reason}")
                continue
            raise PoolError(
                f"cannot list {directory}: {error.strerror or one_line(error)}",
                hint="fix its permissions, or point POOL below it",
            ) from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                real = (
                    os.path.realpath(entry.path)
                    if entry.is_symlink()
                    else os.path.join(real_directory, entry.name)
                )
                if entry.is_dir():
                    if real not in seen:
                        seen.add(real)
                        stack.append((entry.path, real))
                    continue
                if not has_image_extension(entry.name):
                    continue
                info = entry.stat()
            except OSError as error:  # listed with its reason, so embed reports it
                if has_image_extension(entry.name):
                    items.append(
                        make_item(entry.path, local_problem(entry.path, error), pool.unreadable)
                    )
                continue
            items.append(Item(entry.path, local_key(real, info.st_size, info.st_mtime_ns)))
    items.sort(key=lambda item: item.uri)
    return items


def list_local_folder(spec: str, root: str, pool: Pool) -> list[Item]:
    """``walk_local``, with no image at all a ``PoolError``."""
    items = walk_local(root, pool)
    if not items:
        raise PoolError(
            f"no images found under {spec} (looked for {looked_for()})",
            hint="point POOL at the folder that holds the images, or use a glob",
        )
    return items


def glob_local(spec: str, pattern: str, pool: Pool) -> list[Item]:
    import glob

    keys = LocalKeys()
    items = [
        make_item(path, key, pool.unreadable)
        for path in (os.path.abspath(p) for p in glob.iglob(pattern, recursive=True))
        for key in (keys.key(path),)
        if key is not None  # folders matched by the pattern are not items
    ]
    if not items:
        raise PoolError(f"no files match {spec}", hint="check the pattern and the folder")
    items.sort(key=lambda item: item.uri)
    return items


# --- remote -------------------------------------------------------------------------------


def list_remote(spec: str, fs: Any, root: str, fast: FastS3 | None = None) -> list[Item]:
    """Every image below the prefix ``root``, keyed from one recursive listing.

    With ``fast`` (an S3 pool whose GETs obstore serves) the listing is obstore's where its
    answer gives exactly s3fs's items and keys (``list_s3_fast``), else s3fs's.
    """
    root = root.rstrip("/")
    items, failed = list_s3_fast(fast, fs, root) if fast is not None else (None, False)
    if items is None:
        items = _find_remote(fs, root)
        if failed and items and fast is not None:
            # obstore failed where s3fs did not (a bucket in another region, say): s3fs reads
            # this bucket too, as ``reading`` does when a GET goes the same way
            fast.give_up(root.partition("/")[0])
    if not items:
        raise PoolError(
            f"no images found under {spec} (looked for {looked_for()})",
            hint="check the prefix and the endpoint (AWS_ENDPOINT_URL or storage options)",
        )
    items.sort(key=lambda item: item.uri)
    return items


def _find_remote(fs: Any, root: str) -> list[Item]:
    forget_listings(fs, root)  # a listing cached earlier in this process may be stale
    found = call_store(fs.find, root, detail=True)
    forget_listings(fs, root)  # and holding millions of entries twice helps nobody
    return [
        Item(uri, key_from_info(uri, info))
        for name, info in found.items()
        if info.get("type", "file") == "file"
        and has_image_extension(name)
        and not has_hidden_part(name[len(root) :])
        for uri in (fs.unstrip_protocol(name),)
    ]


def list_s3_fast(fast: FastS3, fs: Any, root: str) -> tuple[list[Item] | None, bool]:
    """The items of ``_find_remote(fs, root)`` from obstore's listing, or None: use s3fs;
    and whether obstore failed at the store (not at a key it cannot hold).

    Same items, URIs and keys as s3fs's, or None where obstore's answer could differ:
    - a bucket's root or a prefix that starts with ``/`` (obstore's paths drop a leading
      ``/``: it would list another prefix, or key ``/a.png`` as ``a.png``);
    - a key obstore's paths cannot hold (an empty, ``.`` or ``..`` segment, a control
      character): obstore refuses the whole listing;
    - an empty image-named entry: obstore drops a key's trailing ``/``, so the directory
      marker ``a.png/`` (not an item for s3fs) would read as an empty ``a.png``; two entries
      with the same path likewise (``a.png`` next to the marker ``a.png/``);
    - no image at all (s3fs then looks whether ``root`` is itself an object, and words the
      error), or any failure (s3fs gives the error, in its words).
    """
    bucket, _, prefix = root.partition("/")
    if not prefix or prefix.startswith("/") or not fast.serves(bucket):
        return None, False
    try:
        listed = fast.list_prefix(bucket, f"{prefix}/")
    except ValueError:  # the prefix is no obstore path
        return None, False
    except Exception as error:
        return None, type(error).__name__ != "InvalidPathError"
    items = []
    seen: set[str] = set()
    start = len(prefix)
    for meta in listed:
        path = meta["path"]
        if path in seen:
            return None, False
        seen.add(path)
        if not has_image_extension(path) or has_hidden_part(path[start:]):
            continue
        if not meta["size"]:
            return None, False
        uri = fs.unstrip_protocol(f"{bucket}/{path}")
        info = {"ETag": meta["e_tag"], "size": meta["size"], "LastModified": meta["last_modified"]}
        items.append(Item(uri, key_from_info(uri, info)))
    return items or None, False


def glob_remote(spec: str, fs: Any, pattern: str) -> list[Item]:
    literal = GLOB_MAGIC.split(pattern, maxsplit=1)[0]
    literal = literal[: literal.rfind("/") + 1]  # the folder the pattern starts below
    forget_listings(fs, literal.rstrip("/"))
    found = call_store(fs.glob, pattern, detail=True)
    forget_listings(fs, literal.rstrip("/"))
    items = [
        Item(uri, key_from_info(uri, info))
        for name, info in found.items()
        if info.get("type", "file") == "file" and not has_hidden_part(name[len(literal) :])
        for uri in (fs.unstrip_protocol(name),)
    ]
    if not items:
        raise PoolError(f"no files match {spec}", hint="check the pattern and the prefix")
    items.sort(key=lambda item: item.uri)
    return items


def forget_listings(fs: Any, root: str) -> None:
    """Drop the filesystem's cached listings at, above and below ``root``.

    fsspec's ``invalidate_cache(path)`` forgets ``path`` and its parents only, while ``find``
    caches every folder below it; keys built from a stale listing would serve stale embeddings.
    """
    fs.invalidate_cache(root)
    cache = getattr(fs, "dircache", None)
    if cache:
        below = f"{root}/" if root else ""
        for path in [path for path in list(cache) if path.startswith(below)]:
            cache.pop(path, None)


def call_store(function: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
    """A listing call; store failures other than 'not found' become one-line PoolErrors."""
    try:
        return function(*args, **kwargs)
    except FileNotFoundError:
        raise
    except PermissionError as error:
        raise PoolError(f"access denied listing {args[0]}: {one_line(error)}") from None
    except Exception as error:
        raise PoolError(
            f"cannot list {args[0]}: {type(error).__name__}: {one_line(error)}",
            hint="check credentials and the endpoint (AWS_ENDPOINT_URL or storage options)",
        ) from None
