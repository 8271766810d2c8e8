"""URIs as pool items spell them: local or remote, canonical form, which names are images.

Every URI an item carries went through ``canonical``: local paths absolute (symlinks kept),
remote ones ``protocol://path`` under the filesystem's main protocol name, so a labels file,
a manifest and a listing name the same object the same way.
"""

from __future__ import annotations

import os
import posixpath
import re
from functools import lru_cache

from fsspec.core import split_protocol
from fsspec.registry import get_filesystem_class

from alcli.errors import PoolError, one_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MANIFEST_EXTENSIONS = (".txt", ".csv", ".jsonl")

_LOCAL_PROTOCOLS = frozenset({"file", "local"})
GLOB_MAGIC = re.compile(r"[*?[]")


class BadEntryError(Exception):
    """A manifest entry (or a URI given to ``normalize_uri``) that cannot name an item."""


def normalize_uri(uri: str, base: str | None = None) -> str:
    """The canonical form of a URI, as pool items carry it, so labels files match the pool.

    Local paths become absolute (``~`` expanded, symlinks kept); relative ones resolve against
    ``base`` (a local folder or a remote folder URI; default: the current directory).
    Remote URIs become ``protocol://path`` with the filesystem's main protocol name
    (``s3a://b/k`` -> ``s3://b/k``). Raises ``PoolError`` for an unknown protocol.
    """
    try:
        return canonical(uri.strip(), base)
    except BadEntryError as error:
        raise PoolError(f"cannot use URI {uri!r}: {error}") from None


@lru_cache(maxsize=64)
def protocol_names(protocol: str) -> tuple[str, ...]:
    """The protocol names of the filesystem serving ``protocol``, its main name first."""
    try:
        cls = get_filesystem_class(protocol)
    except ValueError:
        raise BadEntryError(f"unknown protocol '{protocol}://'") from None
    except ImportError as error:
        raise BadEntryError(f"{protocol}:// needs a package: {one_line(error)}") from None
    names = cls.protocol
    return (names,) if isinstance(names, str) else tuple(names)


def is_local(uri: str) -> bool:
    """True for a local path (or ``file://`` URI): read with ``open``, not over a network."""
    return split_uri(uri)[0] is None


def split_uri(uri: str) -> tuple[str | None, str]:
    """(protocol or None for local, path as the filesystem names it)."""
    protocol, path = split_protocol(uri)
    if protocol is None or protocol in _LOCAL_PROTOCOLS:
        return None, path
    return protocol, path


def _canonical_remote(protocol: str, path: str) -> str:
    names = protocol_names(protocol)
    cls = get_filesystem_class(protocol)
    stripped = cls._strip_protocol(f"{protocol}://{path}")
    if any(stripped.startswith(f"{name}://") for name in names):
        return str(stripped)  # filesystems such as http keep the protocol in their paths
    return f"{names[0]}://{stripped}"


def is_plain_s3(uri: str) -> bool:
    """Already canonical S3 URI (``s3://bucket/key``): the bulk of an inventory manifest.

    Checked with string tests only, because fsspec's generic path parsing costs tens of
    microseconds a URI, which is most of resolving a million-line manifest.
    """
    return (
        uri.startswith("s3://")
        and not uri.endswith("/")
        and "//" not in uri[5:]
        and not any(c in uri for c in "?#\\")
    )


def canonical(uri: str, base: str | None) -> str:
    """Canonical URI; relative paths join ``base`` (a local folder or a remote folder URI)."""
    if not uri:
        raise BadEntryError("empty URI")
    if is_plain_s3(uri):
        return uri
    protocol, path = split_uri(uri)
    if protocol is not None:
        return _canonical_remote(protocol, path)
    path = os.path.expanduser(path)
    if os.path.isabs(path) or base is None:
        return os.path.abspath(path)
    base_protocol, base_path = split_uri(base)
    if base_protocol is None:
        return os.path.abspath(os.path.join(base_path, path))
    return _canonical_remote(base_protocol, posixpath.normpath(posixpath.join(base_path, path)))


def parent(uri: str) -> str:
    """The folder holding ``uri``: what a manifest's relative entries resolve against."""
    protocol, path = split_uri(uri)
    if protocol is None:
        return os.path.dirname(os.path.abspath(path))
    return f"{protocol}://{posixpath.dirname(path.rstrip('/'))}"


def has_image_extension(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def has_hidden_part(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/") if part)


def looked_for() -> str:
    return ", ".join(IMAGE_EXTENSIONS)
