"""What the page adds to an answer: a Grad-CAM heat map of where the model looked, and, for cat/dog models
fine-tuned from ImageNet weights, how much the original ImageNet classifier sees some cat or dog breed at all."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image, ImageOps

from cats_dogs.checkpoint import Checkpoint, checkpoint_transform
from cats_dogs.inference import make_batch_predict
from cats_dogs.model import build_model
from cats_dogs.weights import pretrained_state_dict

IMAGENET_CATS, IMAGENET_DOGS = range(281, 286), range(151, 269)  # tabby … Egyptian cat; the 118 dog breeds


def load_pet_check(meta: Checkpoint, device: torch.device,
                   amp_dtype: torch.dtype | None) -> Callable[[list[Image.Image]], torch.Tensor] | None:
    """The original ImageNet classifier, answering how much of each photo is 'some cat or dog breed'.

    Only for cat/dog models fine-tuned from ImageNet weights, and only where those weights are on this machine
    (torchvision's cache, or the local .pth): a page's start never downloads them (98 MB for a ResNet50). So a
    Space (export.py --space), which has neither, runs without the check (docs/share.md says what it would cost).
    """
    weights = str(meta["weights"] or "none")
    if weights.lower() == "none" or sorted(name.lower() for name in meta["class_names"]) != ["cat", "dog"]:
        return None
    try:
        state = pretrained_state_dict(meta["arch"], weights, download=False)
    except SystemExit as error:  # no internet and no cached file: the page works without the hint
        print(f"note: no 'not a cat or dog' warning, the ImageNet weights are not available ({error})".splitlines()[0])
        return None
    if state.get("fc.weight") is None or state["fc.weight"].shape[0] != 1000:
        return None
    imagenet_model = build_model(meta["arch"], 1000)
    imagenet_model.load_state_dict(state)
    batch_predict = make_batch_predict(imagenet_model, meta, device, amp_dtype)
    pet_classes = list(IMAGENET_CATS) + list(IMAGENET_DOGS)
    return lambda images: batch_predict(images)[:, pet_classes].sum(dim=1)


def make_heatmap(model: torch.nn.Module, meta: Checkpoint, device: torch.device) -> Callable[[Image.Image, int], Image.Image]:
    """Grad-CAM (Selvaraju et al.) with Captum: which parts of the photo pushed the model towards a class."""
    import matplotlib
    from captum.attr import LayerGradCam

    transform, grad_cam = checkpoint_transform(meta), LayerGradCam(model, model.layer4)
    colormap = matplotlib.colormaps["jet"]

    def heatmap(image: Image.Image, class_index: int) -> Image.Image:
        with torch.enable_grad():  # in fp32 on the unfolded model: gradients need the real layers
            cam = grad_cam.attribute(transform(image).unsqueeze(0).to(device), target=class_index, relu_attributions=True)
        shown = ImageOps.contain(image, (512, 512))  # small photos are enlarged too, so the map can be seen
        cam = torch.nn.functional.interpolate(cam, size=shown.size[::-1], mode="bilinear")[0, 0]
        cam = (cam / cam.max().clamp(min=1e-8)).detach().cpu().numpy()  # scaled so that the strongest area is red
        colors = Image.fromarray((colormap(cam)[..., :3] * 255).astype("uint8"))
        return Image.blend(shown, colors, alpha=0.45)

    return heatmap
