"""Backbones by name: which torchvision model and weights a name means, and its fingerprint.

Weights are torchvision's (an enum name, looked up offline in torch.hub's checkpoint cache;
nothing is ever downloaded), random ("none"), or a local checkpoint file. Everything here
resolves names without building a model: ``model_fingerprint`` names everything that changes
an embedding (model, weights, preprocessing, layer), so a warm run can check its cache for
free, and a typo fails before any image is read.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from alcli.errors import ModelError
from alcli.models.preprocessing import Preprocessing
from alcli.numerics import Numerics

DEFAULT_MODEL = "mobilenet_v2"
#: ``weights=None`` means torchvision's DEFAULT enum, except where alcli ships other weights
#: offline: mobilenet_v2's DEFAULT is IMAGENET1K_V2, but ``make install`` provides V1.
DEFAULT_WEIGHTS: dict[str, str] = {"mobilenet_v2": "IMAGENET1K_V1"}
#: Bump when the way embeddings are computed changes, so no stale cache entry is served.
EMBEDDING_FORMAT_VERSION = 1
EMBEDDING_LAYER = "penultimate-pooled"
RANDOM_WEIGHTS = "none"
#: Seed of the random initialisation for ``weights="none"``, so its embeddings are reproducible.
RANDOM_INIT_SEED = 0


@dataclass(frozen=True, slots=True)
class WeightsSpec:
    """What ``weights`` resolved to: an enum member, random init, or a checkpoint file."""

    kind: str  # "enum" | "random" | "checkpoint"
    enum: Any = None  # torchvision WeightsEnum member for "enum"
    path: Path | None = None  # checkpoint file for "checkpoint"


def torchvision_models() -> Any:
    """``torchvision.models``, imported on first use (it takes a while)."""
    import torchvision.models

    return torchvision.models


@lru_cache(maxsize=1)
def available_models() -> tuple[str, ...]:
    """Every torchvision classification model name ``--model`` accepts."""
    models = torchvision_models()
    return tuple(models.list_models(module=models))


def _check_name(name: str) -> None:
    if name in available_models():
        return
    close = difflib.get_close_matches(name, available_models(), n=3)
    hint = (
        f"did you mean {' or '.join(close)}?" if close else "see torchvision.models.list_models()"
    )
    raise ModelError(f"unknown model {name!r}: not a torchvision classification model", hint=hint)


def _resolve_weights(name: str, weights: str | os.PathLike[str] | None) -> WeightsSpec:
    _check_name(name)
    enum_class = torchvision_models().get_model_weights(name)
    if weights is None:
        weights = DEFAULT_WEIGHTS.get(name, "DEFAULT")
    text = os.fspath(weights)
    if text == RANDOM_WEIGHTS:
        return WeightsSpec("random")
    if text in enum_class.__members__:
        return WeightsSpec("enum", enum=enum_class[text])
    path = Path(text).expanduser()
    if path.is_file():
        return WeightsSpec("checkpoint", path=path.resolve())
    valid = ", ".join([*enum_class.__members__, RANDOM_WEIGHTS])
    raise ModelError(
        f"unknown weights {text!r} for {name}: not a weights name nor an existing file",
        hint=f"use one of {valid}, or a checkpoint file path",
    )


def _base_preprocessing(name: str, spec: WeightsSpec) -> Preprocessing:
    """The transform of the weights (or of the model's default weights for random/checkpoint)."""
    enum = spec.enum if spec.kind == "enum" else torchvision_models().get_model_weights(name)
    transform = (enum if spec.kind == "enum" else enum.DEFAULT).transforms()
    interpolation = getattr(transform.interpolation, "value", str(transform.interpolation))
    return Preprocessing(
        resize=int(transform.resize_size[0]),
        crop=int(transform.crop_size[0]),
        mean=tuple(float(v) for v in transform.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in transform.std),  # type: ignore[arg-type]
        interpolation=str(interpolation),
    )


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub keeps (and torchvision looks for) the file a weights URL names."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


_file_digests: dict[tuple[str, int, int], str] = {}
_file_digests_lock = threading.Lock()


def _file_sha256(path: Path) -> str:
    """sha256 of a checkpoint file, cached per (real path, size, mtime_ns) for this process."""
    stat = path.stat()
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    with _file_digests_lock:
        cached = _file_digests.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    with _file_digests_lock:
        _file_digests[key] = digest.hexdigest()
    return digest.hexdigest()


def _weights_identity(spec: WeightsSpec) -> dict[str, Any]:
    if spec.kind == "enum":
        file_name = Path(urlparse(spec.enum.url).path).name
        return {"enum": f"{type(spec.enum).__name__}.{spec.enum.name}", "file": file_name}
    if spec.kind == "checkpoint":
        assert spec.path is not None
        return {"checkpoint_sha256": _file_sha256(spec.path)}
    return {"random_init_seed": RANDOM_INIT_SEED}


@lru_cache(maxsize=256)
def _resolved(
    name: str, weights: str | None, image_size: int | None
) -> tuple[WeightsSpec, Preprocessing]:
    from alcli.models import external  # timm:/open_clip: names (issue 17)

    if external.is_external(name):
        return external.weights_spec(name, weights), external.preprocessing(name).for_image_size(
            image_size
        )
    spec = _resolve_weights(name, weights)
    return spec, _base_preprocessing(name, spec).for_image_size(image_size)


def resolve(
    name: str, weights: str | os.PathLike[str] | None, image_size: int | None
) -> tuple[WeightsSpec, Preprocessing]:
    """What ``name``, ``weights`` and ``image_size`` mean, checked (``ModelError``) and cached
    per process; builds no model."""
    return _resolved(name, None if weights is None else os.fspath(weights), image_size)


def model_fingerprint(
    name: str = DEFAULT_MODEL,
    weights: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    *,
    numerics: Numerics | None = None,
) -> str:
    """Hex digest of everything that changes an embedding; builds no model.

    Covers the embedding format version, model name, weights identity (enum name and file, or
    the checkpoint's sha256), preprocessing parameters and the embedding layer, and how the
    forward pass runs (``numerics``: precision, runtime, device class). fp32 on torch on a
    CPU adds nothing, so caches written before precisions existed keep their fingerprint.
    """
    spec, params = resolve(name, weights, image_size)
    payload: dict[str, Any] = {
        "format": EMBEDDING_FORMAT_VERSION,
        "model": name,
        "weights": _weights_identity(spec),
        "preprocess": asdict(params),
        "layer": EMBEDDING_LAYER,
    }
    payload.update(numerics.identity() if numerics is not None else {})
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()
