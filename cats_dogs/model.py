"""The model: a torchvision ResNet with one output per class, and its size."""

from __future__ import annotations

import torch
from torch import nn

from cats_dogs.weights import pretrained_state_dict

MODEL_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def build_model(arch: str = "resnet50", num_classes: int = 2, weights: str = "none",
                zero_init_residual: bool = False) -> nn.Module:
    """A torchvision ResNet with its ImageNet head replaced by `num_classes` outputs. `zero_init_residual`
    starts each residual block as the identity (from scratch only: loaded weights replace it)."""
    if arch not in MODEL_NAMES:
        raise SystemExit(f"--model {arch!r} is not supported; choose one of {', '.join(MODEL_NAMES)}.")
    # Imported where a model is built: torchvision's import takes about a second (it loads torch._dynamo), which
    # predict.py skips when a cached engine answers without the PyTorch model (engines.load_model_or_engine).
    import torchvision

    model = torchvision.models.get_model(arch, weights=None, zero_init_residual=zero_init_residual)
    if weights and weights.lower() != "none":
        state = pretrained_state_dict(arch, weights)
        own = model.state_dict()
        # A head trained for other classes cannot be reused: keep only tensors that fit.
        fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if len(fitting) < len(own) - 2:
            raise SystemExit(f"--weights {weights}: that file does not hold {arch} weights "
                             f"({len(fitting)} of {len(own)} tensors match).")
        model.load_state_dict(fitting, strict=False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def count_parameters_and_flops(model: nn.Module, image_size: int) -> tuple[int, int]:
    """Parameters, and floating-point operations of one forward pass on one image (a multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    parameters = sum(p.numel() for p in model.parameters())
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    model.train(was_training)
    return parameters, counter.get_total_flops()

