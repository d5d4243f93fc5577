"""export.py run for real: the ONNX file answers like PyTorch, for any batch size."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from cats_dogs.checkpoint import load_checkpoint
from conftest import make_dataset, run_script


def test_onnx_export_with_parity_check_and_dynamic_batch(trained_run: Path, tmp_path: Path) -> None:
    onnx_path = tmp_path / "model.onnx"
    result = run_script("export.py", "--onnx", str(onnx_path), "--info", "--repeats", "3", cwd=trained_run)
    difference = float(re.search(r"max \|Δ probability\| = (\S+)", result.stdout).group(1))
    assert difference <= 1e-4
    assert re.search(r"PyTorch [\d.]+ ms, onnxruntime [\d.]+ ms", result.stdout)
    assert "23.51 M parameters" in result.stdout and "GFLOPs per image" in result.stdout  # resnet50, 2 classes

    model, _ = load_checkpoint(trained_run / "checkpoint/best_checkpoint.pth")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = torch.randn(3, 3, 32, 32)
    onnx_logits = session.run(["logits"], {"images": batch.numpy()})[0]
    with torch.inference_mode():
        assert np.abs(onnx_logits - model(batch).numpy()).max() < 1e-3


def test_info_alone_and_nothing_to_do(trained_run: Path) -> None:
    result = run_script("export.py", "--info", cwd=trained_run)
    assert "resnet50 (2 classes) at 32×32" in result.stdout
    idle = run_script("export.py", cwd=trained_run, check=False)
    assert idle.returncode != 0 and "nothing to do" in idle.stderr


def test_openvino_export_fp32_parity_and_int8_refused_on_a_broken_calibration(tmp_path: Path) -> None:
    from test_engines import make_broken_calibration, make_separating_checkpoint

    data = make_dataset(tmp_path / "datasets", per_class_train=6, per_class_val=4)
    checkpoint = make_separating_checkpoint(tmp_path / "model.pth", data)
    result = run_script("export.py", "--checkpoint", str(checkpoint), "--openvino", "out/model.xml", "--repeats", "2",
                        cwd=tmp_path)
    assert float(re.search(r"max \|Δ probability\| = (\S+)", result.stdout).group(1)) <= 1e-4
    assert re.search(r"PyTorch [\d.]+ ms, OpenVINO [\d.]+ ms", result.stdout)
    import openvino

    compiled = openvino.Core().compile_model(str(tmp_path / "out/model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    model, _ = load_checkpoint(checkpoint)
    batch = torch.randn(3, 3, 32, 32)  # any batch size
    with torch.inference_mode():
        assert np.abs(compiled(batch.numpy())[0] - model(batch).numpy()).max() < 1e-3

    broken = make_broken_calibration(tmp_path / "broken", data)
    refused = run_script("export.py", "--checkpoint", str(checkpoint), "--openvino", "out/int8.xml", "--int8",
                         "--data-dir", str(broken), cwd=tmp_path, check=False)
    assert refused.returncode != 0 and "the INT8 model is not good enough: agreement 50.0% < 95%" in refused.stderr
    assert not (tmp_path / "out/int8.xml").exists() and not (tmp_path / "out/int8.bin").exists()
    assert json.loads((tmp_path / "out/int8.json").read_text(encoding="utf-8"))["decision"] == "fp32"


def test_onnx_export_falls_back_to_torch_export_and_keeps_every_weight_an_initializer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TorchScript's exporter (fast) stores equal tensors once behind Identity nodes, which ONNX Runtime's quantizer
    refuses; where that exporter fails, torch.export's (slow) writes the same model."""
    import onnx
    import torchvision

    from cats_dogs.onnx_export import export_onnx

    model = torchvision.models.resnet18(num_classes=2).eval()  # a new model: its zeroed biases are all equal
    batch = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected = model(batch).numpy()
    export_onnx(model, 32, tmp_path / "fast.onnx")
    real_export = torch.onnx.export

    def without_torchscript(*args, **kwargs):
        if kwargs.get("dynamo") is False:
            raise RuntimeError("TorchScript's exporter is gone")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", without_torchscript)
    export_onnx(model, 32, tmp_path / "fallback.onnx")
    for name in ("fast.onnx", "fallback.onnx"):
        graph = onnx.load(str(tmp_path / name)).graph
        initializers = {tensor.name for tensor in graph.initializer}
        assert not [node for node in graph.node if node.op_type == "Identity" and node.input[0] in initializers]
        assert all(node.input[1] in initializers for node in graph.node if node.op_type == "Conv"), name
        session = onnxruntime.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        assert np.abs(session.run(["logits"], {"images": batch.numpy()})[0] - expected).max() < 1e-4, name
    assert onnx.load(str(tmp_path / "fast.onnx")).opset_import[0].version == 18
    assert not list(tmp_path.glob("*.tmp*")), "a temporary file was left behind"
