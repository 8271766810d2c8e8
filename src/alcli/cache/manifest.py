"""A fingerprint's manifest: the ordered list of its committed segments, as the index stores it.

Per fingerprint the index holds ``manifest:<fp>`` ({"version": 1, "segments": [entry
tuples], "retired": [names]}), ``verified:<fp>`` (each segment's file stamp at its last data
check) and, while a process compacts it, ``compacting:<fp>`` (that process's pid). A segment
counts once the manifest lists it; ``retired`` names files a compaction or clear unlisted in
the same transaction, so that a crash before their deletion cannot resurrect them.
"""

from __future__ import annotations

from typing import Any

from alcli.cache.segments import DTYPES, EMBEDDINGS, FAILURES, SEGMENT_NAME, Entry


def manifest_key(fingerprint: str) -> str:
    return f"manifest:{fingerprint}"


def lease_key(fingerprint: str) -> str:
    return f"compacting:{fingerprint}"


def verified_key(fingerprint: str) -> str:
    return f"verified:{fingerprint}"


def entries(manifest: dict[str, Any] | None) -> tuple[Entry, ...]:
    return tuple(Entry._make(t) for t in manifest["segments"]) if manifest else ()


def checked_manifest(value: Any) -> dict[str, Any]:
    """A stored manifest (None: nothing stored yet) checked field by field; ValueError says
    what is wrong. The index is a file that a disk or a user can damage like any other, and a
    wrong name or number here would read the wrong bytes."""
    if value is None:
        return {"version": 1, "segments": [], "retired": []}
    if not isinstance(value, dict) or not isinstance(value.get("segments"), list | tuple):
        raise ValueError(f"a {type(value).__name__} where a manifest should be")
    segments = []
    for raw in value["segments"]:
        if not (
            isinstance(raw, list | tuple)
            and len(raw) == len(Entry._fields)
            and isinstance(raw[0], str)
            and SEGMENT_NAME.fullmatch(raw[0])
            and all(isinstance(v, int) and v >= 0 for v in raw[1:])
            and raw[1] in (EMBEDDINGS, FAILURES)
            and raw[5] in DTYPES
        ):
            raise ValueError(f"a malformed segment entry {str(raw)[:60]}")
        segments.append(tuple(raw))
    if len({t[0] for t in segments}) != len(segments):
        raise ValueError("a segment listed twice")
    retired = value.get("retired", [])
    if not isinstance(retired, list | tuple) or not all(isinstance(n, str) for n in retired):
        raise ValueError("a malformed list of retired segments")
    return {**value, "version": 1, "segments": segments, "retired": list(retired)}


def manifest_dim(manifest: dict[str, Any] | None) -> int | None:
    """The dim of the manifest's embeddings (all share one), None before the first store."""
    for entry in entries(manifest):
        if entry.kind == EMBEDDINGS:
            return entry.dim
    return None
