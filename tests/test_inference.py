"""inference.py: the fast copies of a model that the page answers with."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cats_dogs.checkpoint import checkpoint_transform, load_checkpoint
from cats_dogs.images import open_image
from cats_dogs.inference import class_probabilities, compile_for_inference, prepare_for_inference
from conftest import labeled_photos


def test_inference_copy_agrees_with_the_plain_model(separating_run: Path) -> None:
    model, meta = load_checkpoint(separating_run / "checkpoint/best_checkpoint.pth")
    photos, truths = zip(*labeled_photos(separating_run / "datasets"), strict=True)
    labels = torch.tensor([meta["class_names"].index(truth) for truth in truths])
    batch = torch.stack([checkpoint_transform(meta)(open_image(p)) for p in photos])
    with torch.inference_mode():
        plain = torch.softmax(model(batch), dim=1)
        folded = torch.softmax(prepare_for_inference(model, torch.device("cpu"))(batch), dim=1)
        half = prepare_for_inference(model, torch.device("cpu"), torch.bfloat16)
        bf16 = torch.softmax(half(batch.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float(), dim=1)
    # A model with clear answers (about 3% or 98%), so a copy that answers 50/50, or the same for every photo, fails.
    assert torch.equal(plain.argmax(1), labels) and plain.max(1).values.min() > 0.9
    assert (folded - plain).abs().max() < 1e-4  # BatchNorm folding is exact up to rounding
    assert torch.equal(bf16.argmax(1), labels) and (bf16 - plain).abs().max() < 0.02  # bf16 keeps ~3 significant digits
    assert next(half.parameters()).dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.float32


def test_compiled_copy_answers_each_input_not_a_stale_one() -> None:
    # compile_for_inference copies every input into one fixed tensor: each call must still see its own input.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2)).eval()
    inputs = [torch.randn(1, 3, 16, 16) for _ in range(4)]
    compiled = compile_for_inference(model, inputs[0].clone())
    assert compiled is not None
    with torch.inference_mode():
        answers = [compiled(x) for x in inputs]
        for x, answer in zip(inputs, answers, strict=True):
            assert torch.allclose(answer, model(x), atol=1e-4)
    assert not torch.allclose(answers[0], answers[1], atol=1e-3)  # the inputs differ, so must the answers



def test_tta_is_exactly_the_mean_of_the_softmax_of_the_photo_and_of_its_mirror() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2)).eval()
    images = torch.randn(5, 3, 8, 8)
    with torch.inference_mode():
        plain, with_tta = class_probabilities(model, images), class_probabilities(model, images, tta=True)
        mirrored = torch.softmax(model(images.flip(-1)), dim=1)
    torch.testing.assert_close(plain, torch.softmax(model(images), dim=1), rtol=0, atol=0)
    torch.testing.assert_close(with_tta, (plain + mirrored) / 2, rtol=0, atol=0)
    assert not torch.allclose(with_tta, plain)  # the mirror changed the answer: the test could fail
