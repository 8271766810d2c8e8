"""How each built-in strategy scales, and what it does on a pool streamed out of core.

``alcli strategies`` shows these next to ``cost``; ``alcli.selection`` reads ``at_scale`` to
decide how a strategy runs when the pool's embeddings are larger than half of ``--memory``
(``alcli.rows``). ``memory`` is beyond the pool's rows, which are streamed in blocks.
Kinds of ``at_scale``:

* ``streamed``: per-item scores from each block's model outputs, the top-b kept across
  blocks (``top_k``'s tie rule, so the same picks as in memory): exact at any size.
* ``no embeddings``: needs only n (random): exact at any size.
* ``margin prefilter (exact)``: the strategy itself only ever reads the embeddings of its
  c·b lowest-margin items, so those rows are gathered and it runs on them: exact.
* ``margin prefilter``: runs on the m most uncertain items that fit the memory setting:
  an approximation (measured against the exact method in benchmarks/RESULTS.md, issue 16).
* ``subsample``: runs on a seeded uniform subsample of the unlabeled items that fits the
  memory setting, plus the labeled ones: an approximation (same measurements).
"""

from __future__ import annotations

from typing import NamedTuple


class Scaling(NamedTuple):
    time: str
    memory: str
    at_scale: str

    @property
    def exact(self) -> bool:
        return self.at_scale in {"streamed", "no embeddings", "margin prefilter (exact)"}


_POINTWISE_PROBS = Scaling("O(n·C·d) predict + O(n)", "O(n·C)", "streamed")
_POINTWISE_COMMITTEE = Scaling("O(K·n·C·d) predict + O(n)", "O(block·K·C + b)", "streamed")

SCALING: dict[str, Scaling] = {
    "random": Scaling("O(n)", "O(n)", "no embeddings"),
    "least_confidence": _POINTWISE_PROBS,
    "margin": _POINTWISE_PROBS,
    "ratio": _POINTWISE_PROBS,
    "entropy": _POINTWISE_PROBS,
    "bald": _POINTWISE_COMMITTEE,
    "vote_entropy": _POINTWISE_COMMITTEE,
    "dbal": Scaling("O(n·C) + O(10·b²·d·iters)", "O(n·C + 10·b·d)", "margin prefilter (exact)"),
    "cluster_margin": Scaling(
        "O(n·C) + O(min(10·b, 3000)²·d)", "O(n·C + 10·b·d)", "margin prefilter (exact)"
    ),
    "badge": Scaling("O(b·n·(d + C))", "O(n·(d + C))", "margin prefilter"),
    "coreset": Scaling("O(b·n·d)", "O(n·d)", "subsample"),
    "kmeans": Scaling("O(n·b·d·iters)", "O(n·d)", "subsample"),
    "typiclust": Scaling("O(n·k·d·iters)", "O(n·d)", "subsample"),
    "probcover": Scaling("O(m²·d), m = max(8000, 2·b)", "O(n·d + m²)", "subsample"),
}

#: A plugin strategy that needs embeddings and declares nothing: run on a subsample.
UNKNOWN_WITH_EMBEDDINGS = Scaling("see cost", "O(n·d)", "subsample")


def scaling_of(name: str, needs: frozenset[str]) -> Scaling:
    """The built-in table's row, else a conservative guess from what the strategy needs."""
    if name in SCALING:
        return SCALING[name]
    if "embeddings" in needs:
        return UNKNOWN_WITH_EMBEDDINGS
    return Scaling("see cost", "O(n·C)", "streamed")  # model outputs only: read a block at a time
