"""Item keys as the cache holds them: hex digests encoded to raw bytes, and the in-memory
key index that finds a query's rows.

Keys are hex digests; they become raw bytes through one ``bytes.fromhex("".join(keys))``
(47 ms per 1M keys, against 94 ms for ``np.array(keys, "S32")`` and 308 ms for a
``bytes.fromhex`` per key). The index per fingerprint (built once per manifest version,
≈ 0.18 s per 1M keys) holds the keys sorted by a 64-bit hash plus a bucket table over the
hash's top bits, so a query is a few vectorised gathers: ≈ 0.26 s per 1M keys, against 0.41 s
sorting the queries and ``np.searchsorted`` (0.44 s unsorted, 1.5 s searching ``S32``
strings). The full key is always compared, so a hash collision costs a dict lookup, never a
wrong row. The same key stored twice: the later store wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_MIX = np.uint64(0x9E3779B97F4A7C15)
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_MAX_BUCKET_BITS = 26
_MAX_BUCKET_KEYS = 64  # above this, hashes are too skewed for the bucket table


@dataclass(frozen=True)
class KeyGroup:
    """Keys of one length: their positions in the caller's list, raw bytes and 64-bit words."""

    width: int
    positions: npt.NDArray[np.int64]
    raw: npt.NDArray[np.uint8]  # [k, width]
    words: npt.NDArray[np.uint64]  # [k, ceil(width / 8)], zero padded


def words_of(raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    count, width = raw.shape
    if width % 8 == 0 and raw.flags.c_contiguous:
        return raw.view(np.uint64)
    padded = np.zeros((count, -(-width // 8) * 8), dtype=np.uint8)
    padded[:, :width] = raw
    return padded.view(np.uint64)


def encode_keys(keys: Sequence[str]) -> list[KeyGroup]:
    """Hex keys -> raw bytes, one vectorised ``fromhex`` per key length (usually just one);
    keys that carry their raw bytes (``alcli.sources.table.HexKeys``: ``.raw`` [n, width]
    uint8) are used as they are."""
    n = len(keys)
    if n == 0:
        return []
    raw_keys = getattr(keys, "raw", None)  # a pool table's keys: raw bytes already
    if isinstance(raw_keys, np.ndarray) and raw_keys.ndim == 2 and raw_keys.dtype == np.uint8:
        positions = np.arange(n, dtype=np.int64)
        return [KeyGroup(raw_keys.shape[1], positions, raw_keys, words_of(raw_keys))]
    try:
        distinct_lengths = set(map(len, keys))
    except TypeError:
        raise ValueError("cache keys must be hex strings (item keys from alcli.sources)") from None
    if len(distinct_lengths) == 1:
        splits = [(distinct_lengths.pop(), np.arange(n, dtype=np.int64))]
    else:
        lengths = np.fromiter(map(len, keys), dtype=np.int64, count=n)
        splits = [(int(v), np.flatnonzero(lengths == v)) for v in np.unique(lengths)]
    groups = []
    for length, positions in splits:
        subset = keys if len(positions) == n else [keys[int(i)] for i in positions]
        try:
            if length == 0 or length % 2:
                raise ValueError("odd length")
            raw_bytes = bytes.fromhex("".join(subset))
        except (ValueError, TypeError):
            raise ValueError(
                f"cache key {subset[0]!r} (or another of length {length}) is not an "
                "even-length hex string; item keys must be hex digests"
            ) from None
        width = length // 2
        if len(raw_bytes) != len(subset) * width:  # fromhex skips whitespace
            raise ValueError(f"a cache key of length {length} contains whitespace; keys are hex")
        raw = np.frombuffer(raw_bytes, dtype=np.uint8).reshape(len(subset), width)
        groups.append(KeyGroup(width, positions, raw, words_of(raw)))
    return groups


def _key_hash(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of all key words: a bijective mix per word, then murmur3's finaliser so
    the top bits (the bucket number) are uniform whatever the keys look like."""
    h = words[:, 0].copy()
    for j in range(1, words.shape[1]):
        h ^= h >> np.uint64(31)
        h *= _MIX
        h ^= words[:, j]
    h ^= h >> np.uint64(33)
    h *= _FMIX1
    h ^= h >> np.uint64(33)
    h *= _FMIX2
    h ^= h >> np.uint64(33)
    return h


def key_hash(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The 64-bit hash of each key (its words), as the index uses it."""
    return _key_hash(words)


@dataclass
class KeyIndex:
    """Every live key of one width, sorted by hash, with its global row id (gid), and a
    bucket table over the hashes' top bits (``starts``) so a query needs no sort or search.

    ``hashes`` keep the top ``64 - index_bits`` bits of ``_key_hash``: the low bits make room
    for the row position in one packed uint64, which ``np.sort`` orders 3x faster than
    ``np.argsort`` orders the hashes (and stably, as the position breaks ties). Keys that
    share a truncated hash are collisions like any other and go to the dict.
    """

    index_bits: np.uint64
    hashes: npt.NDArray[np.uint64]
    words: npt.NDArray[np.uint64]
    gids: npt.NDArray[np.int64]
    collisions: dict[int, dict[bytes, int]]
    collision_hashes: npt.NDArray[np.uint64]
    bucket_shift: np.uint64
    starts: npt.NDArray[np.int64] | None  # None: buckets too uneven, search instead

    @property
    def items(self) -> int:
        return len(self.hashes) + sum(len(d) for d in self.collisions.values())

    @classmethod
    def build(cls, words: npt.NDArray[np.uint64], gids: npt.NDArray[np.int64]) -> KeyIndex:
        """Index keys given in storage order; of equal keys the last stored one wins."""
        n = len(words)
        index_bits = np.uint64(max(n - 1, 1).bit_length())
        packed = (_key_hash(words) >> index_bits) << index_bits
        packed |= np.arange(n, dtype=np.uint64)
        packed.sort()
        order = (packed & ((np.uint64(1) << index_bits) - np.uint64(1))).astype(np.intp)
        hashes = packed >> index_bits
        words, gids = np.take(words, order, axis=0), gids[order]
        collisions: dict[int, dict[bytes, int]] = {}
        same_key = cls._same_key_as_next(hashes, words)
        clash = (hashes[1:] == hashes[:-1]) & ~same_key
        if clash.any():  # distinct keys with one hash: resolve those through a dict
            in_dict = np.isin(hashes, np.unique(hashes[1:][clash]))
            members = np.flatnonzero(in_dict)
            for i in members[np.argsort(gids[members], kind="stable")]:
                collisions.setdefault(int(hashes[i]), {})[words[i].tobytes()] = int(gids[i])
            keep = ~in_dict
            hashes, words, gids = hashes[keep], words[keep], gids[keep]
            same_key = cls._same_key_as_next(hashes, words)
        if same_key.any():  # the same key stored more than once: keep the last
            last = np.append(~same_key, True)
            hashes, words, gids = hashes[last], words[last], gids[last]
        collision_hashes = np.array(sorted(collisions), dtype=np.uint64)
        bits = min(max(len(hashes).bit_length(), 1), _MAX_BUCKET_BITS)  # ~1 key per bucket
        shift = np.uint64(64 - bits) - index_bits
        counts = np.bincount((hashes >> shift).astype(np.intp), minlength=1 << bits)
        starts: npt.NDArray[np.int64] | None = None
        if len(hashes) and counts.max() <= _MAX_BUCKET_KEYS:
            starts = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=starts[1:])
        return cls(index_bits, hashes, words, gids, collisions, collision_hashes, shift, starts)

    @staticmethod
    def _same_key_as_next(
        hashes: npt.NDArray[np.uint64], words: npt.NDArray[np.uint64]
    ) -> npt.NDArray[np.bool_]:
        same = hashes[1:] == hashes[:-1]
        at = np.flatnonzero(same)
        if len(at):
            same[at] = (np.take(words, at + 1, axis=0) == np.take(words, at, axis=0)).all(axis=1)
        return same

    def find(self, words: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """gid of each query key, -1 where absent."""
        found = np.full(len(words), -1, dtype=np.int64)
        if len(words) == 0 or self.items == 0:
            return found
        hashes = _key_hash(words) >> self.index_bits
        if len(self.hashes):
            at = self._positions(hashes)
            queries = np.flatnonzero(at >= 0)
            at = at[queries]
            stored = np.take(self.words, at, axis=0)
            same = stored[:, 0] == words[queries, 0]
            for j in range(1, words.shape[1]):
                same &= stored[:, j] == words[queries, j]
            found[queries[same]] = self.gids[at[same]]
        if self.collisions:
            for q in np.flatnonzero(np.isin(hashes, self.collision_hashes)):
                gid = self.collisions[int(hashes[q])].get(words[q].tobytes())
                if gid is not None:
                    found[q] = gid
        return found

    def _positions(self, hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """Where each query hash sits in ``self.hashes``, -1 where it does not."""
        at = np.full(len(hashes), -1, dtype=np.int64)
        if self.starts is None:  # sorted queries search ~7x faster than random ones
            order = np.argsort(hashes)
            pos = np.searchsorted(self.hashes, hashes[order])
            pos = np.minimum(pos, len(self.hashes) - 1)
            hit = self.hashes[pos] == hashes[order]
            at[order[hit]] = pos[hit]
            return at
        bucket = (hashes >> self.bucket_shift).astype(np.intp)
        pos, end = self.starts[bucket], self.starts[bucket + 1]
        active = np.flatnonzero(pos < end)
        pos, end = pos[active], end[active]
        while len(active):  # step through each bucket's (sorted) hashes, all queries at once
            here = self.hashes[pos]
            wanted = hashes[active]
            hit = here == wanted
            at[active[hit]] = pos[hit]
            more = (here < wanted) & (pos + 1 < end)
            active, pos, end = active[more], pos[more] + 1, end[more]
        return at

    def entries(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
        """Every live (words, gid), including hash collisions."""
        if not self.collisions:
            return self.words, self.gids
        extra_words = [
            np.frombuffer(k, dtype=np.uint64) for d in self.collisions.values() for k in d
        ]
        extra_gids = [g for d in self.collisions.values() for g in d.values()]
        return (
            np.concatenate([self.words, np.stack(extra_words)]),
            np.concatenate([self.gids, np.array(extra_gids, dtype=np.int64)]),
        )
