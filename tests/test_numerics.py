"""--precision and --runtime: what auto resolves to, the fingerprint, the forward passes, errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alcli import numerics
from alcli.cli import app
from alcli.embedding import EmbedOptions, embed
from alcli.errors import ModelError
from alcli.models import load_backbone, model_fingerprint
from alcli.models.runtimes import FullPrecision
from alcli.numerics import Numerics, cpu_flags, resolve_numerics

TINY = ["--model", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(axis=1))


@pytest.mark.parametrize(
    ("native", "precision", "runtime", "device", "expected"),
    [
        (True, "auto", "torch", "cpu", Numerics("bf16", "torch", "cpu")),
        (False, "auto", "torch", "cpu", Numerics("fp32", "torch", "cpu")),
        (True, "auto", "openvino", "cpu", Numerics("bf16", "openvino", "cpu")),
        (True, "auto", "torch", "cuda:1", Numerics("fp16", "torch", "cuda")),
        (False, "bf16", "torch", "cpu", Numerics("bf16", "torch", "cpu")),  # asked for: emulated
        (True, "fp32", "torch", "cpu", Numerics()),
    ],
)
def test_auto_resolves_by_cpu_flags_and_device(
    monkeypatch, native, precision, runtime, device, expected
):
    monkeypatch.setattr(numerics, "cpu_has_native_bf16", lambda: native)
    assert resolve_numerics(precision, runtime, device) == expected


@pytest.mark.parametrize(
    ("precision", "runtime", "device", "message"),
    [
        ("fp16", "torch", "cpu", "precision fp16 is not available with runtime torch on the CPU"),
        ("half", "torch", "cpu", "unknown precision 'half'"),
        ("fp32", "tensorrt", "cpu", "unknown runtime 'tensorrt'"),
        ("auto", "openvino", "cuda", "runtime openvino runs on the CPU only"),
    ],
)
def test_combinations_that_cannot_run_are_usage_errors(precision, runtime, device, message):
    with pytest.raises(ModelError, match=message) as caught:
        resolve_numerics(precision, runtime, device)
    assert caught.value.exit_code == 2


def test_cpu_flags_come_from_proc_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert {"avx512_bf16", "avx512f"} <= cpu_flags(str(info))
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_fingerprint_of_fp32_torch_cpu_is_the_one_caches_already_hold():
    """Caches written before --precision existed stay warm: same digest as then."""
    old = "541f1bf1a6ecf7b8916b87c3d73a1f0b"  # mobilenet_v2 at 112 px, ImageNet V1 weights
    assert model_fingerprint("mobilenet_v2", None, 112) == old
    assert model_fingerprint("mobilenet_v2", None, 112, numerics=Numerics()) == old
    others = {
        model_fingerprint("mobilenet_v2", None, 112, numerics=n)
        for n in (
            Numerics("bf16", "torch", "cpu"),
            Numerics("fp32", "openvino", "cpu"),
            Numerics("bf16", "openvino", "cpu"),
            Numerics("fp32", "torch", "cuda"),
            Numerics("fp16", "torch", "cuda"),
        )
    }
    assert len(others) == 5
    assert old not in others


@pytest.mark.slow
def test_bf16_forward_agrees_with_fp32_and_keeps_the_stem_in_fp32(png_pool, one_torch_thread):
    fp32 = load_backbone("mobilenet_v2", None, 64)
    bf16 = load_backbone("mobilenet_v2", None, 64, precision="bf16")
    assert isinstance(bf16.module.features[0][0], FullPrecision)
    assert not isinstance(fp32.module.features[0][0], FullPrecision)
    assert bf16.fingerprint != fp32.fingerprint
    batch = torch.stack([fp32.preprocess(p.read_bytes()) for p in png_pool(8, size=48)])
    reference, half = fp32.embed(batch), bf16.embed(batch)
    assert half.dtype == np.float32
    assert half.shape == reference.shape
    assert not np.array_equal(half, reference)  # bf16 really ran
    assert cosines(half, reference).min() > 0.99


@pytest.mark.slow
def test_a_bf16_run_never_serves_fp32_embeddings(png_pool, tmp_path, one_torch_thread):
    png_pool(6)
    pool = str(tmp_path / "pool")
    cache = tmp_path / "cache"
    tiny = {"model": "mobilenet_v3_small", "weights": "none", "image_size": 32}
    first = embed(pool, options=EmbedOptions(**tiny, precision="fp32"), cache=cache)
    second = embed(pool, options=EmbedOptions(**tiny, precision="bf16"), cache=cache)
    again = embed(pool, options=EmbedOptions(**tiny, precision="fp32"), cache=cache)
    assert (first.embedded, second.embedded, second.cached) == (6, 6, 0)
    assert (again.cached, again.embedded) == (6, 0)
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    summary = second.summary()
    assert (summary["precision"], summary["runtime"], summary["device_class"]) == (
        "bf16",
        "torch",
        "cpu",
    )


def test_missing_runtime_is_one_line_and_exit_2(runner, png_pool, monkeypatch):
    png_pool(2)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name)
    )
    result = runner.invoke(app, ["embed", "pool", *TINY, "--runtime", "openvino"])
    assert result.exit_code == 2, result.output
    assert "runtime openvino is not installed" in result.output
    assert "pip install 'alcli[openvino]'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_precision_from_the_command_line_and_alcli_toml(
    runner: CliRunner, png_pool, tmp_path: Path, one_torch_thread
):
    png_pool(2)
    bad = runner.invoke(app, ["embed", "pool", *TINY, "--precision", "fp16"])
    assert bad.exit_code == 2
    assert "precision fp16 is not available" in bad.output
    (tmp_path / "alcli.toml").write_text('precision = "bf16"\n')
    from_file = runner.invoke(app, ["embed", "pool", *TINY, "--json"])
    assert from_file.exit_code == 0, from_file.output
    assert '"precision": "bf16"' in from_file.stdout


@pytest.mark.slow
@pytest.mark.skipif(not HAS_OPENVINO, reason="the openvino extra is not installed")
def test_openvino_matches_torch_and_keeps_its_export(png_pool, tmp_path, one_torch_thread):
    exported = tmp_path / "exported"
    torch_fp32 = load_backbone("mobilenet_v3_small", "none", 32)
    ov = load_backbone("mobilenet_v3_small", "none", 32, runtime="openvino", export_dir=exported)
    saved = exported / ov.fingerprint / "openvino-nchw" / "model.xml"
    assert saved.is_file()
    written = saved.stat().st_mtime_ns
    batch = torch.stack([torch_fp32.preprocess(p.read_bytes()) for p in png_pool(5)])
    batch = batch.contiguous(memory_format=torch.channels_last)
    assert cosines(ov.embed(batch), torch_fp32.embed(batch)).min() > 0.9999
    again = load_backbone("mobilenet_v3_small", "none", 32, runtime="openvino", export_dir=exported)
    assert saved.stat().st_mtime_ns == written  # read back, not converted again
    np.testing.assert_array_equal(again.embed(batch), ov.embed(batch))


def test_openvino_bf16_recipe_is_part_of_the_fingerprint():
    """bf16 on OpenVINO runs its front in fp32 now: new numbers, so a new fingerprint."""
    numerics_ov = Numerics("bf16", "openvino", "cpu")
    assert numerics_ov.identity()["recipe"] == numerics.RECIPES[("bf16", "openvino")]
    assert "recipe" not in Numerics("bf16", "torch", "cpu").identity()
    assert Numerics().identity() == {}


@pytest.mark.slow
@pytest.mark.skipif(not HAS_OPENVINO, reason="the openvino extra is not installed")
def test_openvino_bf16_runs_its_front_in_fp32_on_the_run_s_threads(
    png_pool, tmp_path, one_torch_thread
):
    from alcli.models.runtimes import FRONT_FP32_CONVOLUTIONS, OpenVinoForward

    torch_fp32 = load_backbone("mobilenet_v2", None, 64)
    # built on one torch thread (as a model stream sets it), but told the run has two
    ov = load_backbone("mobilenet_v2", None, 64, precision="bf16", runtime="openvino", threads=2)
    assert isinstance(ov.forward, OpenVinoForward)
    front, body = ov.forward.stages  # the front in fp32, the body in bf16
    import openvino

    assert front.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    assert body.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.bf16
    assert body.get_property("INFERENCE_NUM_THREADS") == 2
    convolutions = {"Convolution", "GroupConvolution"}
    in_front = [
        op
        for op in front.get_runtime_model().get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) in convolutions
    ]
    assert 1 <= len(in_front) <= FRONT_FP32_CONVOLUTIONS
    batch = torch.stack([torch_fp32.preprocess(p.read_bytes()) for p in png_pool(6, size=48)])
    batch = batch.contiguous(memory_format=torch.channels_last)
    got, reference = ov.embed(batch), torch_fp32.embed(batch)
    assert got.shape == reference.shape
    assert got.dtype == np.float32
    assert not np.array_equal(got, reference)  # bf16 really ran
    assert cosines(got, reference).min() > 0.99


@pytest.mark.slow
@pytest.mark.skipif(not HAS_OPENVINO, reason="the openvino extra is not installed")
def test_openvino_runs_a_batch_in_sub_batches_with_the_same_numbers(
    png_pool, monkeypatch, one_torch_thread
):
    """A batch larger than ``SUB_BATCH`` (and not a multiple of it) is cut into pieces whose
    rows come back in order, bit-identical to one image at a time (so the sub-batch size is
    not part of the fingerprint)."""
    from alcli.models import runtimes

    monkeypatch.setattr(runtimes, "SUB_BATCH", 4)
    ov = load_backbone("mobilenet_v3_small", "none", 32, runtime="openvino", threads=1)
    batch = torch.stack([ov.preprocess(p.read_bytes()) for p in png_pool(10)])
    batch = batch.contiguous(memory_format=torch.channels_last)
    whole = ov.embed(batch)
    assert whole.shape == (10, ov.dim)
    assert whole.dtype == np.float32
    one_by_one = np.concatenate([ov.embed(batch[i : i + 1]) for i in range(10)])
    np.testing.assert_array_equal(whole, one_by_one)
    assert len({row.tobytes() for row in whole}) == 10  # distinct images, distinct rows


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_torch_on_the_cpu_runs_a_batch_in_sub_batches_in_order(
    png_pool, monkeypatch, one_torch_thread, precision
):
    """A batch larger than ``SUB_BATCH`` (and not a multiple of it) runs as pieces, each one
    model call, whose rows come back in the batch's order: the same numbers as calling the
    model on each piece yourself."""
    from alcli.models import runtimes

    monkeypatch.setattr(runtimes, "SUB_BATCH", 4)
    backbone = load_backbone("mobilenet_v3_small", "none", 32, precision=precision)
    batch = torch.stack([backbone.preprocess(p.read_bytes()) for p in png_pool(10)])
    batch = batch.contiguous(memory_format=torch.channels_last)
    calls: list[int] = []
    hook = backbone.module.register_forward_hook(lambda _m, args, _o: calls.append(len(args[0])))
    got = backbone.embed(batch)
    hook.remove()
    assert calls == [4, 4, 2]
    assert got.shape == (10, backbone.dim)
    assert got.dtype == np.float32
    backbone.forward.sub_batch = None
    pieces = np.concatenate([backbone.embed(batch[i : i + 4]) for i in range(0, 10, 4)])
    np.testing.assert_array_equal(got, pieces)
    assert len({row.tobytes() for row in got}) == 10  # distinct images, distinct rows
