"""The model as an ONNX file: export.py --onnx, the page's model (--web), the phone model's first step (--ncnn) and
onnxruntime's engine."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from cats_dogs.atomic import atomic_path


def export_onnx(model: torch.nn.Module, image_size: int, path: Path) -> None:
    """The model as ONNX: input `images` N×3×S×S (any N), output `logits`. Written to a temporary name, then renamed.

    TorchScript's exporter first: 1.3 s for a ResNet50 at 256² on 2 cores against 8.7 s for torch.export's (the
    default since PyTorch 2.9), with BatchNorm folded into the convolutions (within 2e-5 of PyTorch). Where it is
    gone or fails, torch.export's."""
    example = torch.zeros(1, 3, image_size, image_size)
    with atomic_path(path, keep_suffix=True) as partial:
        try:
            with warnings.catch_warnings():  # its deprecation notice says nothing a user can act on
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(model.eval(), (example,), str(partial), input_names=["images"],
                                  output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                                  opset_version=18, dynamo=False)  # 18: as torch.export writes it
            initializers_without_identities(Path(partial))
            return
        except Exception:  # noqa: BLE001 -- the slower exporter below writes the same model
            logging.getLogger(__name__).debug("TorchScript's ONNX exporter failed", exc_info=True)
        torch.onnx.export(model.eval(), (example,), str(partial), input_names=["images"], output_names=["logits"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, external_data=False, verbose=False)


def initializers_without_identities(path: Path) -> None:
    """TorchScript's exporter stores equal tensors once, the others as Identity nodes of it (a new model's zeroed
    biases, say); ONNX Runtime's quantizer wants every convolution's weights as an initializer of its own."""
    import onnx

    model = onnx.load(str(path))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            kept.append(node)
    if len(kept) < len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(kept)
        onnx.save(model, str(path))
