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


def list_remote(spec: str, fs: Any, root: str) -> list[Item]:
    """Every image below the prefix ``root``, keyed from one recursive listing."""
    root = root.rstrip("/")
    forget_listings(fs, root)  # a listing cached earlier in this process may be stale
    found = call_store(fs.find, root, detail=True)
    forget_listings(fs, root)  # and holding millions of entries twice helps nobody
    items = [
        Item(uri, key_from_info(uri, info))
        for name, info in found.items()
        if info.get("type", "file") == "file"
        and has_image_extension(name)
        and not has_hidden_part(name[len(root) :])
        for uri in (fs.unstrip_protocol(name),)
    ]
    if not items:
        raise PoolError(
            f"no images found under {spec} (looked for {looked_for()})",
            hint="check the prefix and the endpoint (AWS_ENDPOINT_URL or storage options)",
        )
    items.sort(key=lambda item: item.uri)
    return items


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
