"""What runs on Ray's workers for ``--engine ray``: reading tasks and the embedding actor.

Kept apart from the driver (``ray_engine.py``) because Ray pickles these by reference: a
worker imports this module, never the driver's. Neither imports ray. Every bad item becomes a
row with its reason instead of an exception: one corrupt image must not fail a block (Ray
Data's default ``max_errored_blocks=0`` would end the whole job on it).

Rows carry ``index`` (the item's place in the run's input), ``uri``, ``data`` (the bytes, empty
once failed), ``reason`` ("" while usable) and ``unreachable`` (a store failure, not the
item's). The actor adds ``embedding`` ([dim] float32, zeros for a failed row).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from alcli.errors import ItemError, ModelError, StoreUnreachableError
from alcli.sources.reading import FileSystems, read_item

#: One set of filesystems per storage options in each worker process: an s3fs client (its
#: connection pool, its credentials) is built once per worker, not once per block.
_FILESYSTEMS: dict[str, FileSystems] = {}


def _filesystems(storage_options: dict[str, Any]) -> FileSystems:
    key = json.dumps(storage_options, sort_keys=True, default=str)
    found = _FILESYSTEMS.get(key)
    if found is None:
        found = _FILESYSTEMS[key] = FileSystems(storage_options)
    return found


def read_block(
    batch: dict[str, np.ndarray],
    *,
    storage_options: dict[str, Any],
    timeout: float | None,
    threads: int,
) -> dict[str, np.ndarray]:
    """One reading task: every URI of ``batch`` read through the sources' reader (fsspec, the
    same deadline and the same item-vs-store verdicts as ``Pool.read``), ``threads`` at once
    so a remote store's latency overlaps."""
    filesystems = _filesystems(storage_options)
    uris = [str(u) for u in batch["uri"]]

    def one(uri: str) -> tuple[bytes, str, bool]:
        try:
            return read_item(filesystems, uri, timeout), "", False
        except StoreUnreachableError as error:
            return b"", error.reason, True
        except ItemError as error:
            return b"", error.reason, False

    if threads > 1 and len(uris) > 1:
        with ThreadPoolExecutor(min(threads, len(uris))) as pool:
            results = list(pool.map(one, uris))
    else:
        results = [one(u) for u in uris]
    data = np.empty(len(uris), dtype=object)
    data[:] = [r[0] for r in results]
    return {
        "index": np.asarray(batch["index"], dtype=np.int64),
        "uri": np.asarray(uris, dtype=object),
        "data": data,
        "reason": np.asarray([r[1] for r in results], dtype=object),
        "unreachable": np.asarray([r[2] for r in results], dtype=bool),
    }


#: The backbone this worker process built, by its settings: a task worker that Ray reuses
#: for the next block (and the next run of the same driver) builds its model once, not per
#: block. One entry: a run with another model replaces it instead of piling models up.
_BACKBONE: dict[str, Any] = {}


def backbone_for(model: dict[str, Any]) -> Any:
    """This process's backbone for ``model`` (the ``load_backbone`` settings plus the
    driver's ``fingerprint`` and ``torch_threads``), built on first use. Refuses a backbone
    whose fingerprint is not the driver's (another torchvision or alcli on that node would
    write other numbers under the same key)."""
    key = json.dumps(model, sort_keys=True, default=str)
    found = _BACKBONE.get(key)
    if found is not None:
        return found
    import torch

    from alcli.models import load_backbone

    settings = dict(model)
    fingerprint = settings.pop("fingerprint")
    torch.set_num_threads(max(1, int(settings.pop("torch_threads", 1))))
    backbone = load_backbone(
        settings.pop("model"), settings.pop("weights"), settings.pop("image_size"), **settings
    )
    if backbone.fingerprint != fingerprint:
        raise ModelError(
            f"a Ray worker's model fingerprint {backbone.fingerprint[:12]} is not the "
            f"driver's {fingerprint[:12]}",
            hint="install the same alcli, torch and torchvision on every node",
        )
    _BACKBONE.clear()
    _BACKBONE[key] = backbone
    return backbone


def embed_rows(backbone: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Decode the block's bytes and run the model: rows already failed stay failed, an item
    that does not decode fails with its reason; the rest get their embedding."""
    import torch

    reasons = [str(r) for r in batch["reason"]]
    tensors, rows = [], []
    for row, (data, reason) in enumerate(zip(batch["data"], reasons, strict=True)):
        if reason:
            continue
        try:
            tensors.append(backbone.preprocess(bytes(data)))
            rows.append(row)
        except ItemError as error:  # anything else is a bug: it fails the job, as in
            reasons[row] = error.reason  # the threads engine
    out = np.zeros((len(reasons), backbone.dim), dtype=np.float32)
    if tensors:
        out[rows] = backbone.embed(torch.stack(tensors))
    return {
        "index": np.asarray(batch["index"], dtype=np.int64),
        "uri": np.asarray(batch["uri"], dtype=object),
        "embedding": out,
        "reason": np.asarray(reasons, dtype=object),
        "unreachable": np.asarray(batch["unreachable"], dtype=bool),
    }


def read_and_embed(
    batch: dict[str, np.ndarray],
    *,
    model: dict[str, Any],
    storage_options: dict[str, Any],
    timeout: float | None,
    threads: int,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """One task for a local pool's block: read it (a page-cache copy) and embed it with the
    worker's cached backbone, ``batch_size`` rows at a time, so a task of many batches holds
    one batch of image bytes, not the block's. No reading workers of their own compete with
    the embedding ones for Ray's start-up slots, and a worker Ray reuses has its model built."""
    backbone = backbone_for(model)
    rows = len(batch["uri"])
    step = batch_size or rows or 1
    parts = [
        embed_rows(
            backbone,
            read_block(
                {key: column[start : start + step] for key, column in batch.items()},
                storage_options=storage_options,
                timeout=timeout,
                threads=threads,
            ),
        )
        for start in range(0, rows, step)
    ]
    if len(parts) == 1:
        return parts[0]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


class EmbedActor:
    """Owns one backbone for its life (built once, not per block): decodes the block's bytes
    and runs the model; ``read`` (settings of ``read_block``) has it read the block first."""

    def __init__(self, *, read: dict[str, Any] | None = None, **model: Any) -> None:
        self.read = read
        self.backbone = backbone_for(model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.read is not None:
            batch = read_block(batch, **self.read)
        return embed_rows(self.backbone, batch)
