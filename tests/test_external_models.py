"""``--model timm:NAME`` and ``open_clip:NAME``: random init, a checkpoint the test writes,
the fingerprint rules, and one-line errors for a missing extra or an unknown name."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alcli.errors import ModelError
from alcli.models import load_backbone, model_fingerprint

pytest.importorskip("timm")


def png() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(buf, "PNG")
    return buf.getvalue()


def test_timm_random_init_and_checkpoint(tmp_path: Path):
    import timm

    name = "timm:resnet10t"
    fp = model_fingerprint(name, "none", 64)
    assert fp == model_fingerprint(name, "none", 64)
    assert fp != model_fingerprint(name, "none", 96)  # preprocessing is part of it
    backbone = load_backbone(name, "none", 64)
    assert (backbone.dim, backbone.fingerprint, backbone.image_size) == (512, fp, 64)
    again = load_backbone(name, "none", 64)
    x = backbone.preprocess(png())[None]
    assert np.array_equal(backbone.embed(x), again.embed(x))  # seeded random init
    # a checkpoint the test writes (a classifier of another width included): other numbers,
    # another fingerprint, the same as timm's own model on the same weights
    torch.manual_seed(5)
    trained = timm.create_model("resnet10t", pretrained=False, num_classes=7).eval()
    path = tmp_path / "ft.pt"
    torch.save(trained.state_dict(), path)
    loaded = load_backbone(name, str(path), 64)
    assert loaded.fingerprint not in (fp, model_fingerprint(name, "none", 64))
    trained.reset_classifier(0)
    with torch.inference_mode():
        want = trained(x.contiguous()).numpy()
    np.testing.assert_allclose(loaded.embed(x), want, rtol=1e-4, atol=1e-4)
    # the hubs' format: safetensors
    from safetensors.torch import save_file

    save_file(trained.state_dict(), str(tmp_path / "ft.safetensors"))
    from_st = load_backbone(name, str(tmp_path / "ft.safetensors"), 64)
    np.testing.assert_allclose(from_st.embed(x), want, rtol=1e-4, atol=1e-4)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(ModelError, match="does not fit"):
        load_backbone(name, str(tmp_path / "wrong.pt"), 64)


def test_errors_name_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with pytest.raises(ModelError, match="unknown timm model") as err:
        model_fingerprint("timm:convnext_tiy", "none")
    assert "timm:convnext_tiny" in str(err.value.hint)
    with pytest.raises(ModelError, match="no weights are downloaded"):
        model_fingerprint("timm:resnet10t")
    with pytest.raises(ModelError, match="not an existing checkpoint"):
        model_fingerprint("timm:resnet10t", str(tmp_path / "none.pt"))
    monkeypatch.setitem(sys.modules, "timm", None)  # the extra not installed
    with pytest.raises(ModelError, match="needs timm") as missing:
        model_fingerprint("timm:resnet10t", "none", 32)
    assert "alcli[timm]" in str(missing.value.hint)


def test_cli_unknown_external_model_is_one_line(runner, tmp_path: Path):
    from alcli.cli import app
    from helpers import write_pngs

    write_pngs(tmp_path / "pool", 3)
    out = runner.invoke(
        app, ["embed", str(tmp_path / "pool"), "--model", "open_clip:ViT-B-23", "--weights", "none"]
    )
    assert out.exit_code == 2, out.output
    assert "open_clip:ViT-B-32" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_open_clip_random_init_embeds_a_pool(runner, tmp_path: Path):
    pytest.importorskip("open_clip")
    from alcli.cli import app
    from helpers import write_pngs

    write_pngs(tmp_path / "pool", 4)
    args = ["embed", str(tmp_path / "pool"), "--model", "open_clip:ViT-S-32", "--weights", "none"]
    out = runner.invoke(app, [*args, "--cache-dir", str(tmp_path / "c"), "--json"])
    assert out.exit_code == 0, out.output
    assert '"dim": 384' in out.stdout
    assert "pretrained" not in out.stderr
