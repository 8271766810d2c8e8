"""Backbones by name: a frozen torchvision classifier turned into a feature extractor.

A backbone is a torchvision classification model (``--model NAME``) whose last ``nn.Linear``
(the classifier) is replaced by ``nn.Identity``, so its output is the globally pooled
penultimate layer. Its weights are torchvision's (an enum name, looked up offline in torch.hub's
checkpoint cache; nothing is ever downloaded), random ("none"), or a local checkpoint file.
For speed the frozen model folds BatchNorm into the convolutions before it and runs in
channels_last; embeddings match torchvision's own model to float rounding.

Preprocessing reproduces the weights' own transform (resize the shorter side, center-crop,
normalise) bit for bit, with PIL and numpy, because that runs on decode threads without
touching torch's intra-op thread pool. ``image_size`` S changes the input resolution and
keeps the weights' ratio: resize the shorter side to round(S * resize / crop), crop S.

``model_fingerprint`` names everything that changes an embedding (model, weights,
preprocessing, layer) without building a model, so a warm run can check its cache for free.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import itertools
import json
import os
import re
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from torch import nn

from alcli._threads import one_torch_thread
from alcli.errors import ItemError, ModelError

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

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """The transform parameters of a set of weights: resize shorter side, center-crop, normalise.

    ``for_image_size`` keeps the weights' resize/crop ratio when the input resolution changes.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str

    def for_image_size(self, image_size: int | None) -> Preprocessing:
        """Center-crop ``image_size`` S after resizing the shorter side to round(S*resize/crop)."""
        if image_size is None or image_size == self.crop:
            return self
        if image_size < 1:
            raise ModelError(f"image size must be a positive integer, got {image_size}")
        resize = round(image_size * self.resize / self.crop)
        return Preprocessing(resize, image_size, self.mean, self.std, self.interpolation)


class ImageTransform:
    """Bytes -> CHW float32 tensor, exactly as ``weights.transforms()`` does on a PIL image.

    Normalisation goes through a 256-entry lookup table per channel computed with torchvision's
    own float32 operations, so the result matches torchvision bit for bit and costs one gather.
    The tensor is CHW in shape but its memory is HWC (channels_last), the layout the model
    runs in: batching such tensors needs no transposing copy on the model's thread.
    """

    def __init__(self, params: Preprocessing) -> None:
        if params.resize < params.crop:
            raise ModelError(
                f"resize size {params.resize} is smaller than crop size {params.crop}",
                hint="use weights whose resize size is at least their crop size",
            )
        self.params = params
        self._filter = _PIL_FILTERS[params.interpolation]
        levels = np.arange(256, dtype=np.float32) / np.float32(255)
        mean = np.asarray(params.mean, dtype=np.float32)[:, None]
        std = np.asarray(params.std, dtype=np.float32)[:, None]
        self._lut = ((levels[None, :] - mean) / std).astype(np.float32)  # [3, 256]
        self._lut_rows = np.ascontiguousarray(self._lut.T)  # [256, 3]: one gray level -> RGB

    def __call__(self, data: bytes) -> torch.Tensor:
        image = decode_image(data, draft_size=self.params.resize)
        pixels = np.asarray(self._resize_and_crop(image), dtype=np.uint8)  # [S, S] or [S, S, 3]
        if pixels.ndim == 2:  # grayscale: one gather yields all three normalised channels
            out = np.take(self._lut_rows, pixels, axis=0)
        else:
            out = np.empty(pixels.shape, dtype=np.float32)
            for channel in range(3):
                np.take(self._lut[channel], pixels[:, :, channel], out=out[:, :, channel])
        return torch.from_numpy(out).permute(2, 0, 1)

    def _resize_and_crop(self, image: Image.Image) -> Image.Image:
        """Resize the shorter side, then center-crop, with torchvision's exact size arithmetic.

        Resize-then-crop rather than PIL's cheaper ``resize(box=...)``: the latter rounds
        differently, and matching torchvision exactly is what makes embeddings comparable.
        """
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.params.resize, int(self.params.resize * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), self._filter)
        crop = self.params.crop
        top = round((new_h - crop) / 2.0)
        left = round((new_w - crop) / 2.0)
        return image.crop((left, top, left + crop, top + crop))


def decode_image(data: bytes, *, draft_size: int | None = None) -> Image.Image:
    """Decode image bytes to a loaded RGB or L (grayscale) PIL image, or raise ItemError.

    Grayscale stays single-channel: resizing it and replicating the channel afterwards gives
    the same pixels as converting to RGB first, for a third of the work. Everything else
    (palette, RGBA, CMYK, 16-bit...) is converted to RGB. ``draft_size`` lets a JPEG decode at
    a reduced scale (DCT scaling) that keeps the shorter side at least that large: a 4000 px
    photo decodes several times faster.
    """
    if not data:
        raise ItemError("empty file")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ItemError(f"decompression bomb ({_pixels_in(error)} pixels)") from error
    except Image.UnidentifiedImageError as error:
        raise ItemError("not an image") from error
    except Exception as error:
        raise ItemError(f"corrupt image: {_short(error)}") from error
    limit = Image.MAX_IMAGE_PIXELS
    pixels = image.size[0] * image.size[1]
    if limit is not None and pixels > limit:
        raise ItemError(f"decompression bomb ({pixels} pixels)")
    try:
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()
        if image.mode in ("RGB", "L"):
            return image
        return image.convert("L" if image.mode == "1" else "RGB")
    except Exception as error:
        raise ItemError(f"corrupt image: {_short(error)}") from error


def _pixels_in(error: Exception) -> str:
    found = re.search(r"\((\d+) pixels\)", str(error))
    return found.group(1) if found else "too many"


def _short(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:120]


# --------------------------------------------------------------------------- weights


@dataclass(frozen=True, slots=True)
class _WeightsSpec:
    """What ``weights`` resolved to: an enum member, random init, or a checkpoint file."""

    kind: str  # "enum" | "random" | "checkpoint"
    enum: Any = None  # torchvision WeightsEnum member for "enum"
    path: Path | None = None  # checkpoint file for "checkpoint"


def _torchvision_models() -> Any:
    import torchvision.models

    return torchvision.models


@lru_cache(maxsize=1)
def available_models() -> tuple[str, ...]:
    """Every torchvision classification model name ``--model`` accepts."""
    models = _torchvision_models()
    return tuple(models.list_models(module=models))


def _check_name(name: str) -> None:
    if name in available_models():
        return
    close = difflib.get_close_matches(name, available_models(), n=3)
    hint = (
        f"did you mean {' or '.join(close)}?" if close else "see torchvision.models.list_models()"
    )
    raise ModelError(f"unknown model {name!r}: not a torchvision classification model", hint=hint)


def _resolve_weights(name: str, weights: str | os.PathLike[str] | None) -> _WeightsSpec:
    _check_name(name)
    enum_class = _torchvision_models().get_model_weights(name)
    if weights is None:
        weights = DEFAULT_WEIGHTS.get(name, "DEFAULT")
    text = os.fspath(weights)
    if text == RANDOM_WEIGHTS:
        return _WeightsSpec("random")
    if text in enum_class.__members__:
        return _WeightsSpec("enum", enum=enum_class[text])
    path = Path(text).expanduser()
    if path.is_file():
        return _WeightsSpec("checkpoint", path=path.resolve())
    valid = ", ".join([*enum_class.__members__, RANDOM_WEIGHTS])
    raise ModelError(
        f"unknown weights {text!r} for {name}: not a weights name nor an existing file",
        hint=f"use one of {valid}, or a checkpoint file path",
    )


def _base_preprocessing(name: str, spec: _WeightsSpec) -> Preprocessing:
    """The transform of the weights (or of the model's default weights for random/checkpoint)."""
    enum = spec.enum if spec.kind == "enum" else _torchvision_models().get_model_weights(name)
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


def _weights_identity(spec: _WeightsSpec) -> dict[str, Any]:
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
) -> tuple[_WeightsSpec, Preprocessing]:
    spec = _resolve_weights(name, weights)
    return spec, _base_preprocessing(name, spec).for_image_size(image_size)


def model_fingerprint(
    name: str = DEFAULT_MODEL,
    weights: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
) -> str:
    """Hex digest of everything that changes an embedding; builds no model.

    Covers the embedding format version, model name, weights identity (enum name and file, or
    the checkpoint's sha256), preprocessing parameters and the embedding layer.
    """
    weights_key = None if weights is None else os.fspath(weights)
    spec, params = _resolved(name, weights_key, image_size)
    payload = {
        "format": EMBEDDING_FORMAT_VERSION,
        "model": name,
        "weights": _weights_identity(spec),
        "preprocess": asdict(params),
        "layer": EMBEDDING_LAYER,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


# --------------------------------------------------------------------------- backbone


class Backbone:
    """A frozen feature extractor with its preprocessing, ready for the pipeline's stages."""

    def __init__(
        self,
        *,
        name: str,
        fingerprint: str,
        module: nn.Module,
        dim: int,
        transform: ImageTransform,
        device: torch.device,
    ) -> None:
        self.name = name
        self.fingerprint = fingerprint
        self.module = module
        self.dim = dim
        self.transform = transform
        self.device = device
        self.image_size = transform.params.crop

    def preprocess(self, data: bytes) -> torch.Tensor:
        """Decode and transform one image: CHW float32; ItemError if the bytes are unusable."""
        return self.transform(data)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """[B, C, H, W] float32 -> [B, dim] float32 embeddings."""
        with torch.inference_mode():
            if self.device.type == "cuda":
                batch = batch.to(self.device, non_blocking=True)
                batch = batch.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.float16):
                    features = self.module(batch)
                return features.float().cpu().numpy()
            batch = batch.contiguous(memory_format=torch.channels_last)
            return self.module(batch).float().numpy()


def replace_classifier(module: nn.Module) -> int:
    """Swap the last ``nn.Linear`` for ``nn.Identity``; return its input width (the embedding dim).

    In every torchvision classifier the last Linear registered is the head applied to the
    globally pooled features, so this one rule serves resnet, mobilenet, efficientnet, convnext,
    vit, swin, regnet...
    """
    linears = [path for path, child in module.named_modules() if isinstance(child, nn.Linear)]
    if not linears:
        raise ModelError(
            f"{type(module).__name__} has no nn.Linear classifier to take features before",
            hint="choose a model with a linear head (resnet, mobilenet, efficientnet, vit, ...)",
        )
    path = linears[-1]
    parent_path, _, attribute = path.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    head = getattr(parent, attribute)
    setattr(parent, attribute, nn.Identity())
    return int(head.in_features)


def _build_random(name: str) -> nn.Module:
    """Random init that is reproducible and leaves the caller's global torch RNG untouched."""
    models = _torchvision_models()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # googlenet/inception init notices
        torch.manual_seed(RANDOM_INIT_SEED)
        return models.get_model(name, weights=None)


def _build_from_enum(name: str, enum: Any) -> nn.Module:
    """Build with torchvision's weights, from torch.hub's cache only; never the network."""
    file = hub_checkpoint_path(enum.url)
    if not file.is_file():
        extra = " (`make install` puts the default one there)" if name == DEFAULT_MODEL else ""
        raise ModelError(
            f"weights {type(enum).__name__}.{enum.name} are not available offline: "
            f"put {file.name} (from {enum.url}) at {file}{extra}",
            hint="or use --weights none / a local checkpoint file",
        )
    return _torchvision_models().get_model(name, weights=enum)


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:
        raise ModelError(f"cannot read checkpoint {path}: {_short(error)}") from error
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ModelError(
            f"checkpoint {path} holds no state_dict",
            hint='save model.state_dict(), or a dict with "state_dict" or "model"',
        )
    return {key.removeprefix("module."): value for key, value in loaded.items()}


def _load_checkpoint_into(module: nn.Module, path: Path, name: str) -> None:
    """Load a checkpoint into a backbone whose classifier was already removed.

    The classifier's own tensors are ignored, so a model fine-tuned on any number of classes
    loads; every feature tensor must be present.
    """
    state = _read_checkpoint(path)
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
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
            f"checkpoint {path} does not fit {name}: {_short(error)}",
            hint="pass the --model the checkpoint was trained as",
        ) from error


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ModelError(f"unknown device {device!r}", hint="use cpu, cuda or auto") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device cuda requested but CUDA is not available", hint="use --device cpu")
    return resolved


def load_backbone(
    name: str = DEFAULT_MODEL,
    weights: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
) -> Backbone:
    """Build the frozen feature extractor named ``name`` with ``weights``; see module docstring."""
    weights_key = None if weights is None else os.fspath(weights)
    spec, params = _resolved(name, weights_key, image_size)
    fingerprint = model_fingerprint(name, weights_key, image_size)
    target = resolve_device(device)
    with one_torch_thread():
        module, dim = _build(name, spec, params.crop)
    return Backbone(
        name=name,
        fingerprint=fingerprint,
        module=module.to(target),
        dim=dim,
        transform=ImageTransform(params),
        device=target,
    )


class BackboneInBackground:
    """A backbone being built on its own thread, usable by the pipeline right away.

    Building mobilenet_v2 (weights read, BatchNorm folded, a probe forward) costs 0.16-0.26 s
    of one core (measured alone and inside ``alcli bench``), 3-5 % of a cold 1,000-image
    run. The transform needs none of it, so reads and decodes start at once and the build
    overlaps them; only ``embed`` (the first batch) waits for the network. Name and weights
    are checked here, before any thread, so a typo still fails at once with its
    ``ModelError``.

    ``start()`` begins the build. The build runs its many tiny ops on one torch thread, and
    torch's thread count is process-wide: start it only after whoever reads that count (the
    pipeline, to size its model thread) has read it.
    """

    def __init__(
        self,
        name: str = DEFAULT_MODEL,
        weights: str | os.PathLike[str] | None = None,
        image_size: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        weights_key = None if weights is None else os.fspath(weights)
        _, params = _resolved(name, weights_key, image_size)
        self.transform = ImageTransform(params)
        self.device = resolve_device(device)
        self._done = threading.Event()
        self._starting = threading.Lock()
        self._started = False
        self.build_s = 0.0  # how long the build took
        self._built_at: float | None = None
        self._first_wait: float | None = None  # when a caller of result() first had to wait
        self._backbone: Backbone | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._build,
            args=(name, weights_key, image_size, self.device),
            name="alcli-build-model",
            daemon=True,  # a stopped run does not wait for a build nobody will use
        )

    def start(self) -> BackboneInBackground:
        """Begin building (once, whoever calls first); returns self."""
        with self._starting:
            if not self._started:
                self._started = True
                self._thread.start()
        return self

    def _build(
        self, name: str, weights: str | None, image_size: int | None, device: torch.device
    ) -> None:
        started = time.perf_counter()
        try:
            self._backbone = load_backbone(name, weights, image_size, device=device)
        except BaseException as error:  # handed to whoever asks for the backbone
            self._error = error
        finally:
            self._built_at = time.perf_counter()
            self.build_s = self._built_at - started
            self._done.set()

    @property
    def waited_s(self) -> float:
        """Wall time from the first caller of result() that had to wait until the build ended
        (several model streams waiting at once count once)."""
        if self._first_wait is None or self._built_at is None:
            return 0.0
        return max(0.0, self._built_at - self._first_wait)

    def result(self) -> Backbone:
        """The built backbone (starts the build if needed, waits); re-raises what it raised."""
        self.start()
        if not self._done.is_set():
            with self._starting:
                if self._first_wait is None:
                    self._first_wait = time.perf_counter()
            self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._backbone is not None
        return self._backbone

    def failed(self) -> BaseException | None:
        """What the build raised, once it is over (None while it runs or when it worked)."""
        return self._error if self._done.is_set() else None

    def preprocess(self, data: bytes) -> torch.Tensor:
        """As ``Backbone.preprocess``; needs no network."""
        return self.transform(data)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """As ``Backbone.embed``, once the build is done."""
        return self.result().embed(batch)


def _build(name: str, spec: _WeightsSpec, size: int) -> tuple[nn.Module, int]:
    """The frozen CPU feature extractor and its embedding width."""
    if spec.kind == "enum":
        module = _build_from_enum(name, spec.enum)
        dim = replace_classifier(module)
    else:
        module = _build_random(name)
        dim = replace_classifier(module)
        if spec.kind == "checkpoint":
            assert spec.path is not None
            _load_checkpoint_into(module, spec.path, name)
    module = module.eval().requires_grad_(False)
    fold_batchnorm(module)
    # channels_last: oneDNN (CPU) and cuDNN (GPU) convolutions both run faster in NHWC;
    # measured on 2 CPU cores, mobilenet_v2 at 112 px goes from 115 to 171 img/s.
    module = module.to(memory_format=torch.channels_last)
    check_forward(name, module, size, dim)
    return module, dim


def fold_batchnorm(module: nn.Module) -> int:
    """Fold each eval-mode BatchNorm2d into the Conv2d just before it in an ``nn.Sequential``.

    Same function, fewer ops: measured ~30 % faster for mobilenet_v2 on CPU, and fewer GIL
    round-trips for the model thread while I/O threads run. Inside a Sequential the conv's
    output feeds only the next layer, so the fold is exact by construction (no graph tracing
    needed, and it costs milliseconds); BatchNorms elsewhere (a ResNet block's ``bn1``) stay.
    Returns how many were folded.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    folded = 0
    for container in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(container._modules)
        for first, second in itertools.pairwise(names):
            conv, norm = container._modules[first], container._modules[second]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(norm, nn.BatchNorm2d)
                and not conv.training
                and not norm.training
                and norm.running_mean is not None
                and norm.running_var is not None
            ):
                conv.weight, conv.bias = fuse_conv_bn_weights(  # in place: no copy of the conv
                    conv.weight,
                    conv.bias,
                    norm.running_mean,
                    norm.running_var,
                    norm.eps,
                    norm.weight,
                    norm.bias,
                )
                container._modules[second] = nn.Identity()
                folded += 1
    return folded


def check_forward(name: str, module: nn.Module, size: int, dim: int) -> None:
    """Run the model once on one image, so one that rejects this input size fails now, as a
    usage error, rather than mid-run.

    """
    probe = torch.zeros(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            outputs = module(probe)
    except Exception as error:
        raise ModelError(
            f"{name} cannot embed {size}x{size} images: {_short(error)}",
            hint="use the model's native --image-size",
        ) from error
    if not isinstance(outputs, torch.Tensor) or tuple(outputs.shape) != (1, dim):
        shape = tuple(outputs.shape[1:]) if isinstance(outputs, torch.Tensor) else type(outputs)
        raise ModelError(
            f"{name}'s features have shape {shape}, not ({dim},)",
            hint="choose a model whose classifier takes pooled features",
        )
