"""int8.py: the INT8 model made without NNCF has NNCF's layout and ranges, leaves the fp32 model as it was, and
answers like NNCF's INT8 model."""

from __future__ import annotations

from pathlib import Path

import torch

from cats_dogs.checkpoint import make_checkpoint
from cats_dogs.engines import logits_of, openvino_engine, read_photos, to_openvino
from cats_dogs.int8 import minmax_int8, nncf_int8
from cats_dogs.model import build_model
from conftest import make_dataset


def fake_quantize_ranges(model) -> dict[str, tuple[float, float]]:
    """Each FakeQuantize's (low, high), by the name of the node whose output it quantizes."""
    ranges = {}
    for node in model.get_ops():
        if node.get_type_name() == "FakeQuantize":
            low, high = (float(node.input_value(k).get_node().get_data().ravel()[0]) for k in (1, 2))
            ranges[node.input_value(0).get_node().get_friendly_name()] = (low, high)
    return ranges


def test_minmax_int8_quantizes_where_nncf_does_with_nncfs_ranges_and_answers_as_nncfs_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = make_dataset(tmp_path / "datasets", per_class_train=8, per_class_val=4)
    model = build_model("resnet18", 2).eval()
    meta = make_checkpoint(model, arch="resnet18", class_names=["cat", "dog"], image_size=32, epoch=1, metrics={})
    photos, _ = read_photos(data / "train.csv", meta, 16)
    fp32 = to_openvino(model, 32)

    ours, nncfs = minmax_int8(fp32, photos), nncf_int8(fp32, photos)

    assert not fake_quantize_ranges(fp32)  # the fp32 model given is left as it was
    mine, reference = fake_quantize_ranges(ours), fake_quantize_ranges(nncfs)
    assert len(reference) > 20 and set(mine) == set(reference)  # resnet18: every conv's input, the residual adds, …
    for name, (low, high) in reference.items():
        assert abs(mine[name][0] - low) <= 1e-5 * max(1, abs(low)) and abs(mine[name][1] - high) <= 1e-5 * max(1, high), name
    assert any(low < 0 for low, _ in mine.values()) and any(low == 0 for low, _ in mine.values())  # both kinds
    weights = [node for node in ours.get_ops() if node.get_type_name() == "Convert"]
    assert len(weights) == sum(node.get_type_name() in ("Convolution", "MatMul") for node in fp32.get_ops())
    assert all(node.input_value(0).get_element_type().get_type_name() == "i8" for node in weights)

    val, _ = read_photos(data / "val.csv", meta, 10**9)
    exact, theirs, got = (logits_of(openvino_engine(m, None), val) for m in (fp32, nncfs, ours))
    # As close to fp32 as NNCF's INT8 (the weights differ from NNCF's by one step in a few elements: its rounding)
    assert 0 < (got - exact).abs().max() <= 1.5 * (theirs - exact).abs().max(), (got, theirs, exact)
    assert (got - theirs).abs().max() < (theirs - exact).abs().max()
