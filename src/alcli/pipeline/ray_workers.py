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


class EmbedActor:
    """Owns one backbone for its life (built once, not per block): decodes the block's bytes
    and runs the model. Refuses to start when its backbone's fingerprint is not the driver's
    (another torchvision or alcli on that node would write other numbers under the same key).
    """

    def __init__(
        self,
        *,
        model: str,
        weights: str | None,
        image_size: int | None,
        device: str,
        fingerprint: str,
        torch_threads: int,
        precision: str = "fp32",
        runtime: str = "torch",
        export_dir: str | None = None,
    ) -> None:
        import torch

        from alcli.models import load_backbone

        torch.set_num_threads(max(1, torch_threads))
        self.backbone = load_backbone(
            model,
            weights,
            image_size,
            device=device,
            precision=precision,
            runtime=runtime,
            export_dir=export_dir,
        )
        if self.backbone.fingerprint != fingerprint:
            raise ModelError(
                f"a Ray worker's model fingerprint {self.backbone.fingerprint[:12]} is not the "
                f"driver's {fingerprint[:12]}",
                hint="install the same alcli, torch and torchvision on every node",
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        reasons = [str(r) for r in batch["reason"]]
        tensors, rows = [], []
        for row, (data, reason) in enumerate(zip(batch["data"], reasons, strict=True)):
            if reason:
                continue
            try:
                tensors.append(self.backbone.preprocess(bytes(data)))
                rows.append(row)
            except ItemError as error:  # anything else is a bug: it fails the job, as in
                reasons[row] = error.reason  # the threads engine
        out = np.zeros((len(reasons), self.backbone.dim), dtype=np.float32)
        if tensors:
            out[rows] = self.backbone.embed(torch.stack(tensors))
        return {
            "index": np.asarray(batch["index"], dtype=np.int64),
            "uri": np.asarray(batch["uri"], dtype=object),
            "embedding": out,
            "reason": np.asarray(reasons, dtype=object),
            "unreachable": np.asarray(batch["unreachable"], dtype=bool),
        }
