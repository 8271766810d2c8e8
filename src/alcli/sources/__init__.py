"""POOL spec -> ordered items, each with a cache key from cheap metadata.

A POOL is one of:

- a directory (local or a remote prefix such as ``s3://bucket/imgs/``): every image below it,
  recursively, by extension (case-insensitive, see ``IMAGE_EXTENSIONS``). Names starting with
  ``.`` (hidden files and folders, macOS ``._x.jpg`` shadows) are skipped. Sorted by URI.
- a glob (``data/**/*.png``, ``s3://bucket/imgs/**/*.jpg``): every file it matches, whatever
  its extension (the pattern already says what is wanted). Sorted by URI.
- a single file with an image extension, local or any fsspec URI.
- a manifest, ``.txt`` (one URI per line; blank lines and lines starting with ``#`` ignored)
  or ``.csv`` / ``.jsonl`` with a ``uri`` column. Relative entries resolve against the
  manifest's own folder (a remote manifest's relative entries stay on its store). A ``.csv``
  or ``.jsonl`` manifest may carry ``etag``, ``size`` and ``last_modified`` for remote items,
  as an S3 Inventory report does; such items are keyed without any request (local entries
  are always stat'ed: that is cheap and matches a folder listing). A remote spec ending in
  one of ``MANIFEST_EXTENSIONS`` is read as a manifest; end it with ``/`` to list a prefix
  of that name. File order.
- ``-``: URIs on stdin, one per line, like a ``.txt`` manifest; relative paths resolve against
  the current directory.

Bad manifest lines (no uri, unknown protocol, not JSON) are skipped and listed in
``Pool.skipped`` with their line number; a manifest with no valid line is a ``PoolError``.
A URI given more than once is kept at its first position and listed in ``Pool.duplicates``.
An item named in a manifest (or a dangling symlink, a symlink loop, any entry of a folder
that cannot be stat'ed) stays in the pool with a key starting with ``UNREADABLE_KEY_PREFIX``
and its reason in ``Pool.unreadable``, so ``embed`` reports it as a skipped item instead of
losing it; such a key is never a cache key. A sub-folder that cannot be listed is noted in
``Pool.skipped`` and the walk goes on; only an unusable POOL as a whole is a ``PoolError``.

File names are kept as the OS gives them: a name that is not UTF-8 is a str with surrogate
escapes (PEP 383, ``os.fsdecode``), manifests are decoded the same way, and keys hash such
names as their original bytes (``keys.text_bytes``), so they work end to end.

Where each part lives (a file per concept; every public name is importable from here):

- ``uris.py``: canonical URIs (``normalize_uri``, ``is_local``), image and manifest extensions.
- ``keys.py``: cache keys from cheap metadata; ``UNREADABLE_KEY_PREFIX``.
- ``listing.py``: folders, prefixes and globs.
- ``manifests.py``: ``.txt`` / ``.csv`` / ``.jsonl`` manifests and stdin; ``CsvTable``.
- ``etag_manifests.py``: the bulk path for a ``.csv`` manifest with ETags and its memo
  (``MEMO_MIN_BYTES``, ``MEMO_KEEP``).
- ``table.py``: ``ItemTable``, a remembered manifest's items as memory-mapped columns.
- ``s3inventory.py``: S3 Inventory reports (``manifest.json``, ``symlink.txt``) as a POOL.
- ``objectstore.py``: the S3 GET hot path through obstore, with fsspec as the fallback.
- ``reading.py``: ``Pool.read`` (one GET, a deadline, item vs store failures), ``s3_options``.
- ``pool.py``: ``Item``, ``Pool``. ``resolve.py``: ``resolve_pool``.
"""

from __future__ import annotations

from alcli.sources.etag_manifests import MEMO_KEEP, MEMO_MIN_BYTES
from alcli.sources.keys import UNREADABLE_KEY_PREFIX
from alcli.sources.pool import Item, Pool
from alcli.sources.reading import s3_options
from alcli.sources.resolve import resolve_pool
from alcli.sources.uris import IMAGE_EXTENSIONS, MANIFEST_EXTENSIONS, is_local, normalize_uri

__all__ = [
    "IMAGE_EXTENSIONS",
    "MANIFEST_EXTENSIONS",
    "MEMO_KEEP",
    "MEMO_MIN_BYTES",
    "UNREADABLE_KEY_PREFIX",
    "Item",
    "Pool",
    "is_local",
    "normalize_uri",
    "resolve_pool",
    "s3_options",
]
