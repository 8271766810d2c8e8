"""Preprocessing: image bytes -> the tensor a backbone takes, exactly as torchvision's transform.

Preprocessing reproduces the weights' own transform (resize the shorter side, center-crop,
normalise) bit for bit, with PIL and numpy, because that runs on decode threads without
touching torch's intra-op thread pool. ``image_size`` S changes the input resolution and
keeps the weights' ratio: resize the shorter side to round(S * resize / crop), crop S.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from alcli.errors import ItemError, ModelError

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
        raise ItemError(f"corrupt image: {short_message(error)}") from error
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
        raise ItemError(f"corrupt image: {short_message(error)}") from error


def _pixels_in(error: Exception) -> str:
    found = re.search(r"\((\d+) pixels\)", str(error))
    return found.group(1) if found else "too many"


def short_message(error: Exception) -> str:
    """An error's first line, cut to 120 characters: a reason that fits one line."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:120]
