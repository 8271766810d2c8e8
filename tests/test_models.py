"""alcli.models: backbones by name, offline weights, exact preprocessing, fingerprints."""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from alcli import models
from alcli.errors import ItemError, ModelError
from alcli.models import (
    ImageTransform,
    Preprocessing,
    decode_image,
    load_backbone,
    model_fingerprint,
    replace_classifier,
)

# Two intra-op threads crawl when other processes share the two cores; one does not.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def random_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def torchvision_transform(weights: torchvision.models.WeightsEnum, params: Preprocessing):
    transform = weights.transforms()
    transform.resize_size = [params.resize]
    transform.crop_size = [params.crop]
    return transform


# ------------------------------------------------------------------ names and weights


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ModelError, match="unknown model 'mobilenet_v9'") as caught:
        model_fingerprint("mobilenet_v9")
    assert caught.value.hint is not None
    assert "did you mean" in caught.value.hint
    assert "mobilenet_v2" in caught.value.hint


def test_unknown_weights_name_lists_valid_ones() -> None:
    with pytest.raises(ModelError, match="unknown weights 'IMAGENET9K'") as caught:
        load_backbone("resnet18", weights="IMAGENET9K")
    assert "IMAGENET1K_V1" in str(caught.value)
    assert "none" in str(caught.value)


def test_missing_weights_file_says_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError) as caught:
        load_backbone("mobilenet_v2")
    message = str(caught.value)
    expected = tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert str(expected) in message
    assert "make install" in message
    assert "\n" not in message
    assert not expected.exists()  # nothing was downloaded


def test_default_is_mobilenet_v2_with_offline_v1_weights() -> None:
    spec, params = models.registry._resolved("mobilenet_v2", None, None)
    assert spec.kind == "enum"
    assert spec.enum is torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    assert (params.resize, params.crop) == (256, 224)
    # elsewhere None means torchvision's DEFAULT, and DEFAULT is an alias of its target
    assert model_fingerprint("resnet50") == model_fingerprint("resnet50", "IMAGENET1K_V2")


@pytest.mark.parametrize(("name", "dim"), [("mobilenet_v3_small", 1024), ("resnet18", 512)])
def test_random_init_embeds_penultimate_features(name: str, dim: int) -> None:
    rng_before = torch.random.get_rng_state()
    backbone = load_backbone(name, weights="none", image_size=48)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    assert backbone.dim == dim
    assert backbone.image_size == 48
    assert backbone.device == torch.device("cpu")
    batch = torch.stack(
        [
            backbone.preprocess(encode(random_image(np.random.default_rng(i), 60, 50)))
            for i in range(3)
        ]
    )
    assert batch.shape == (3, 3, 48, 48)
    out = backbone.embed(batch)
    assert out.shape == (3, dim)
    assert out.dtype == np.float32
    again = load_backbone(name, weights="none", image_size=48).embed(batch)
    np.testing.assert_array_equal(out, again)  # random init is seeded: reproducible


def test_replace_classifier_takes_the_last_linear() -> None:
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    head_in = model.classifier[3].in_features
    assert replace_classifier(model) == head_in == 1024
    assert isinstance(model.classifier[3], torch.nn.Identity)
    assert isinstance(model.classifier[0], torch.nn.Linear)  # the hidden layer stays


def test_model_without_linear_head_is_a_usage_error() -> None:
    with pytest.raises(ModelError, match=r"no nn\.Linear classifier"):
        load_backbone("squeezenet1_1", weights="none", image_size=32)


def test_input_size_the_model_rejects_fails_at_load() -> None:
    with pytest.raises(ModelError, match="cannot embed 64x64 images"):
        load_backbone("vit_b_32", weights="none", image_size=64)


def test_checkpoint_file_loads_whatever_its_head(tmp_path: Path) -> None:
    source = torchvision.models.resnet18(num_classes=7)  # fine-tuned on 7 classes
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.mul_(0.5)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # DataParallel save
    path = tmp_path / "finetuned.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)

    backbone = load_backbone("resnet18", weights=str(path), image_size=40)
    source.fc = torch.nn.Identity()
    batch = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = source.eval()(batch).numpy()
    np.testing.assert_allclose(backbone.embed(batch), expected, rtol=1e-4, atol=1e-5)
    assert backbone.fingerprint != model_fingerprint("resnet18", "none", 40)


def test_checkpoint_of_another_architecture_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(torchvision.models.get_model("shufflenet_v2_x0_5").state_dict(), path)
    with pytest.raises(ModelError, match="does not fit resnet18"):
        load_backbone("resnet18", weights=path, image_size=32)


# ------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize(
    ("name", "weights", "image_size"),
    [
        ("mobilenet_v2", "IMAGENET1K_V1", None),
        ("mobilenet_v2", "IMAGENET1K_V1", 112),
        ("mobilenet_v2", "IMAGENET1K_V2", 96),  # resize 232 / crop 224
        ("efficientnet_b0", "IMAGENET1K_V1", 64),  # bicubic
    ],
)
def test_preprocess_matches_torchvision_exactly(
    name: str, weights: str, image_size: int | None
) -> None:
    spec, params = models.registry._resolved(name, weights, image_size)
    ours = ImageTransform(params)
    reference = torchvision_transform(spec.enum, params)
    rng = np.random.default_rng(7)
    for width, height in [(28, 28), (300, 200), (200, 333), (256, 256)]:
        rgb = random_image(rng, width, height)
        for image in (rgb, rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("P")):
            data = encode(image)
            expected = reference(Image.open(io.BytesIO(data)).convert("RGB"))
            got = ours(data)
            assert got.dtype == torch.float32
            assert torch.equal(got, expected), (image.mode, width, height)


def test_image_size_keeps_the_weights_resize_ratio() -> None:
    base = Preprocessing(256, 224, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), "bilinear")
    assert base.for_image_size(None) is base
    assert (base.for_image_size(112).resize, base.for_image_size(112).crop) == (128, 112)
    assert (base.for_image_size(299).resize, base.for_image_size(299).crop) == (342, 299)


def test_large_jpeg_decodes_through_draft() -> None:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    photo = Image.fromarray(small).resize((2400, 1800), Image.Resampling.BILINEAR)
    data = encode(photo, "JPEG", quality=90)
    image = decode_image(data, draft_size=128)
    assert image.mode == "RGB"
    assert min(image.size) >= 128
    assert image.size[0] <= 2400 // 8 * 2  # decoded at a reduced DCT scale
    _, params = models.registry._resolved("mobilenet_v2", None, 112)
    got = ImageTransform(params)(data)
    full = torchvision_transform(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1, params)(
        Image.open(io.BytesIO(data)).convert("RGB")
    )
    assert got.shape == (3, 112, 112)
    assert (got - full).abs().mean().item() < 0.05  # same picture, smoothed a bit differently


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"this is not an image\n", "not an image"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "corrupt image: "),
    ],
)
def test_undecodable_bytes_raise_item_error(data: bytes, reason: str) -> None:
    with pytest.raises(ItemError) as caught:
        decode_image(data)
    assert caught.value.reason.startswith(reason)
    assert "\n" not in caught.value.reason


def test_truncated_png_is_corrupt() -> None:
    data = encode(random_image(np.random.default_rng(0), 64, 64))
    with pytest.raises(ItemError, match="corrupt image") as caught:
        decode_image(data[: len(data) // 2])
    assert caught.value.reason.startswith("corrupt image: ")


@pytest.mark.parametrize("side", [40, 100])  # over the limit (PIL warns) / over twice (PIL errors)
def test_decompression_bomb_is_an_item_error(monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(Image.new("RGB", (side, side)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ItemError) as caught:
            decode_image(data)
    assert caught.value.reason == f"decompression bomb ({side * side} pixels)"


def test_grayscale_and_palette_become_three_channels() -> None:
    _, params = models.registry._resolved("mobilenet_v2", None, 32)
    transform = ImageTransform(params)
    gray = Image.fromarray(np.full((20, 20), 128, dtype=np.uint8))
    out = transform(encode(gray))
    assert out.shape == (3, 32, 32)
    means = [out[c].mean().item() for c in range(3)]
    assert means[0] != means[1]  # each channel normalised with its own mean/std
    expected_red = (128 / 255 - 0.485) / 0.229
    assert means[0] == pytest.approx(expected_red, abs=1e-5)


# ------------------------------------------------------------------ fingerprints


def test_fingerprint_changes_with_everything_that_changes_embeddings(tmp_path: Path) -> None:
    checkpoint = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(1)}, checkpoint)
    prints = {
        "default": model_fingerprint(),
        "explicit default": model_fingerprint("mobilenet_v2", "IMAGENET1K_V1", 224),
        "other weights": model_fingerprint("mobilenet_v2", "IMAGENET1K_V2"),
        "random": model_fingerprint("mobilenet_v2", "none"),
        "size": model_fingerprint("mobilenet_v2", None, 112),
        "model": model_fingerprint("resnet18", "IMAGENET1K_V1"),
        "checkpoint": model_fingerprint("mobilenet_v2", checkpoint),
    }
    assert prints["default"] == prints["explicit default"]
    distinct = [v for k, v in prints.items() if k != "explicit default"]
    assert len(set(distinct)) == len(distinct)
    assert all(len(p) == 32 and int(p, 16) >= 0 for p in distinct)

    torch.save({"fc.weight": torch.ones(1)}, checkpoint)  # same path, new content
    assert model_fingerprint("mobilenet_v2", checkpoint) != prints["checkpoint"]


def test_fingerprint_builds_no_model_and_is_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("model_fingerprint built a model")

    monkeypatch.setattr(torchvision.models, "get_model", no_build)
    model_fingerprint("resnet18", "IMAGENET1K_V1", 96)  # first call resolves and caches
    started = time.perf_counter()
    for _ in range(1000):
        model_fingerprint("resnet18", "IMAGENET1K_V1", 96)
    assert (time.perf_counter() - started) / 1000 < 0.002


def test_load_backbone_reports_its_fingerprint() -> None:
    backbone = load_backbone("shufflenet_v2_x0_5", weights="none", image_size=32, device="auto")
    assert backbone.fingerprint == model_fingerprint("shufflenet_v2_x0_5", "none", 32)
    assert backbone.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------ real weights


@pytest.mark.slow
def test_real_mobilenet_v2_embedding_is_torchvisions_penultimate_layer() -> None:
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    backbone = load_backbone()
    reference = torchvision.models.mobilenet_v2(weights=weights).eval()
    captured: list[torch.Tensor] = []
    reference.classifier[1].register_forward_pre_hook(lambda _, args: captured.append(args[0]))

    rng = np.random.default_rng(11)
    base = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    data = encode(Image.fromarray(base).resize((320, 240), Image.Resampling.BILINEAR))
    x = backbone.preprocess(data)
    assert torch.equal(x, weights.transforms()(Image.open(io.BytesIO(data)).convert("RGB")))

    embedding = backbone.embed(x[None])
    with torch.inference_mode():
        logits = reference(x[None])
    assert embedding.shape == (1, 1280)
    np.testing.assert_allclose(embedding, captured[0].numpy(), rtol=1e-4, atol=1e-4)
    with torch.inference_mode():
        from_embedding = reference.classifier[1](torch.from_numpy(embedding))
    np.testing.assert_allclose(from_embedding.numpy(), logits.numpy(), rtol=1e-3, atol=1e-3)
    assert backbone.fingerprint == model_fingerprint()


def test_batchnorm_folding_keeps_the_function() -> None:
    module = torchvision.models.get_model("mobilenet_v3_small", weights=None).eval()
    replace_classifier(module)
    with torch.no_grad():  # non-trivial statistics, as trained weights have
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(1))
                layer.running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(2))
    x = torch.randn(3, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = module(x)
    assert models.fold_batchnorm(module) == 34
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    with torch.inference_mode():
        torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-5)


def test_batchnorm_not_right_after_a_conv_stays() -> None:
    pre_activation = torch.nn.Sequential(  # densenet-style: BN before the conv
        torch.nn.BatchNorm2d(3), torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 3)
    ).eval()
    block = torchvision.models.resnet.BasicBlock(4, 4).eval()  # bn1 is an attribute
    assert models.fold_batchnorm(pre_activation) == 0
    assert models.fold_batchnorm(block) == 0
    assert isinstance(pre_activation[0], torch.nn.BatchNorm2d)
    assert isinstance(block.bn1, torch.nn.BatchNorm2d)
