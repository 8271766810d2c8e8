"""Backbones beyond torchvision: ``timm:NAME`` and ``open_clip:NAME`` (optional extras).

``--model timm:convnext_tiny`` or ``--model open_clip:ViT-B-32`` builds the model with random
init (``--weights none``) or loads a local checkpoint file (``--weights FILE``); nothing is
downloaded, so there are no default weights here. The fingerprint follows the same rules as
torchvision's (``registry.model_fingerprint``): the prefixed name, the weights' identity
(random-init seed, or the checkpoint's sha256), the preprocessing and the layer. Features:
timm's globally pooled ``num_features`` (``num_classes=0``); open_clip's image tower output
(``encode_image`` without normalisation). Preprocessing from the library's own config:
timm's pretrained config (input size, ``crop_pct``, mean, std, interpolation), open_clip's
vision ``image_size`` with its resize-then-centre-crop (bicubic, OpenAI mean and std).
"""

from __future__ import annotations

import difflib
import importlib
import logging
import math
import warnings
from typing import Any

import torch
from torch import nn

from alcli.errors import ModelError
from alcli.models.preprocessing import Preprocessing

PREFIXES = {"timm": "timm", "open_clip": "clip"}  # prefix -> extra name


def is_external(name: str) -> bool:
    """``timm:...`` or ``open_clip:...``."""
    return name.partition(":")[0] in PREFIXES and ":" in name


def _library(name: str) -> tuple[str, str, Any]:
    """(prefix, model name, the imported library); ``ModelError`` when the extra is missing."""
    prefix, _, model = name.partition(":")
    try:
        library: Any = importlib.import_module(prefix)
    except ImportError:
        raise ModelError(
            f"--model {name} needs {prefix}, which is not installed",
            hint=f"pip install 'alcli[{PREFIXES[prefix]}]'",
        ) from None
    known = library.list_models()
    if model not in known:
        close = difflib.get_close_matches(model, known, n=3)
        hint = (
            f"did you mean {' or '.join(f'{prefix}:{c}' for c in close)}?"
            if close
            else f"see {prefix}.list_models()"
        )
        raise ModelError(f"unknown {prefix} model {model!r}", hint=hint)
    return prefix, model, library


def check_weights(name: str, kind: str) -> None:
    """No default weights: they would be a download."""
    if kind == "enum":
        raise ModelError(
            f"--model {name}: no weights are downloaded here; pass --weights FILE (a local "
            "checkpoint) or --weights none (random init)"
        )


def preprocessing(name: str) -> Preprocessing:
    """The model's own input transform, as alcli's ``Preprocessing``."""
    prefix, model, library = _library(name)
    if prefix == "timm":
        cfg = library.models.get_pretrained_cfg(model)
        size = int(cfg.input_size[-1]) if cfg is not None else 224
        crop_pct = float(getattr(cfg, "crop_pct", None) or 0.875)
        mean = tuple(float(v) for v in (cfg.mean if cfg is not None else (0.485, 0.456, 0.406)))
        std = tuple(float(v) for v in (cfg.std if cfg is not None else (0.229, 0.224, 0.225)))
        interpolation = (getattr(cfg, "interpolation", None) or "bicubic").lower()
        if interpolation not in ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"):
            interpolation = "bicubic"
        resize = math.floor(size / crop_pct)
        return Preprocessing(resize, size, mean, std, interpolation)  # type: ignore[arg-type]
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    vision = library.get_model_config(model)["vision_cfg"]
    size = vision.get("image_size", 224)
    size = int(size if isinstance(size, int) else size[-1])
    mean, std = tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD)
    return Preprocessing(size, size, mean, std, "bicubic")  # type: ignore[arg-type]


class _ClipImage(nn.Module):
    """open_clip's image tower as a feature extractor: images -> unnormalised embeddings."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


def build(name: str, kind: str, path: Any, seed: int) -> tuple[nn.Module, int]:
    """The CPU feature extractor and its width: random init from ``seed``, then the
    checkpoint at ``path`` when ``kind`` is "checkpoint" (its classifier tensors ignored)."""
    from alcli.models.backbone import _load_checkpoint_into

    check_weights(name, kind)
    prefix, model, library = _library(name)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        if prefix == "timm":
            module = library.create_model(model, pretrained=False, num_classes=0)
            dim = int(module.num_features)
            target = module
        else:
            logging.disable(logging.WARNING)  # "No pretrained weights loaded": we know
            try:
                full = library.create_model(model, pretrained=None, device="cpu")
            finally:
                logging.disable(logging.NOTSET)
            module = _ClipImage(full.visual)
            dim = int(getattr(full.visual, "output_dim", 0) or full.text_projection.shape[1])
            target = full
    if kind == "checkpoint" and str(path).endswith(".safetensors"):
        _load_safetensors_into(target, path, name)
    elif kind == "checkpoint":
        _load_checkpoint_into(target, path, name)
    return module, dim


def _load_safetensors_into(module: nn.Module, path: Any, name: str) -> None:
    """A ``.safetensors`` file (how the hubs ship timm and open_clip weights): every
    feature tensor must be there; others (a classifier) are ignored."""
    try:
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    except Exception as error:
        raise ModelError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from error
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelError(
            f"checkpoint {path} does not fit {name}: {len(missing)} tensors missing "
            f"(first: {missing[0]})",
            hint="pass the --model the checkpoint was trained as",
        )
    try:
        module.load_state_dict({key: state[key] for key in expected}, strict=True)
    except RuntimeError as error:
        raise ModelError(
            f"checkpoint {path} does not fit {name}: {str(error).splitlines()[0]}"
        ) from error


def weights_spec(name: str, weights: str | None) -> Any:
    """``registry.WeightsSpec`` for an external model: "none" or a checkpoint file."""
    from pathlib import Path

    from alcli.models.registry import RANDOM_WEIGHTS, WeightsSpec

    _library(name)
    if weights is None:
        check_weights(name, "enum")
    if weights == RANDOM_WEIGHTS:
        return WeightsSpec("random")
    path = Path(str(weights)).expanduser()
    if path.is_file():
        return WeightsSpec("checkpoint", path=path.resolve())
    raise ModelError(
        f"unknown weights {weights!r} for {name}: not an existing checkpoint file",
        hint="pass --weights FILE (a local checkpoint) or --weights none",
    )
