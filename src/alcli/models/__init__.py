"""Backbones by name: a frozen torchvision classifier turned into a feature extractor.

One concept per module:

- ``registry``: which model and weights a name means (offline torchvision weights, random
  init, a checkpoint file) and ``model_fingerprint``, without building anything;
- ``preprocessing``: image bytes -> the model's input tensor, bit for bit as torchvision's
  transform, on decode threads;
- ``backbone``: the frozen extractor (``load_backbone``, ``Backbone``): classifier removed,
  BatchNorm folded, channels_last, a probe forward;
- ``background``: ``BackboneInBackground``, the same built on a thread while the pipeline
  reads and decodes;
- ``runtimes``: the forward pass by runtime and precision (torch autocast, OpenVINO); what
  they mean and how ``auto`` resolves is ``alcli.numerics`` (torch-free, for warm runs).

The names below are the module's public API, as they were when it was one file.
"""

from alcli.models.backbone import (
    Backbone,
    check_forward,
    fold_batchnorm,
    load_backbone,
    one_torch_thread,
    replace_classifier,
    resolve_device,
)
from alcli.models.background import BackboneInBackground
from alcli.models.preprocessing import ImageTransform, Preprocessing, decode_image
from alcli.models.registry import (
    DEFAULT_MODEL,
    DEFAULT_WEIGHTS,
    EMBEDDING_FORMAT_VERSION,
    EMBEDDING_LAYER,
    RANDOM_INIT_SEED,
    RANDOM_WEIGHTS,
    available_models,
    hub_checkpoint_path,
    model_fingerprint,
)
from alcli.numerics import (
    PRECISIONS,
    RUNTIMES,
    Numerics,
    cpu_has_native_bf16,
    resolve_numerics,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_WEIGHTS",
    "EMBEDDING_FORMAT_VERSION",
    "EMBEDDING_LAYER",
    "PRECISIONS",
    "RANDOM_INIT_SEED",
    "RANDOM_WEIGHTS",
    "RUNTIMES",
    "Backbone",
    "BackboneInBackground",
    "ImageTransform",
    "Numerics",
    "Preprocessing",
    "available_models",
    "check_forward",
    "cpu_has_native_bf16",
    "decode_image",
    "fold_batchnorm",
    "hub_checkpoint_path",
    "load_backbone",
    "model_fingerprint",
    "one_torch_thread",
    "replace_classifier",
    "resolve_device",
    "resolve_numerics",
]
