"""Fast copies of a trained model for answering photos: the web page, predict.py and bench.py use these.

Training never does; what training and serving must agree on (model, preprocessing) is in preprocessing.py and model.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch
from PIL import Image
from torch import nn

from cats_dogs.checkpoint import Checkpoint, checkpoint_transform

# Photos per forward pass when --batch-size is not given (predict.py, evaluate.py, review.py). PyTorch on a CPU is
# fastest a few photos at a time: 16 photos of 256² overflow the caches. ResNet50, folded and channels-last, batch 4
# against 16: 1.37× faster a photo with bf16, 1.35× in fp32 with AVX-512, 1.06-1.18× with AVX2 only. OpenVINO's
# INT8 model is as fast from 1 to 64 and its calls cost Python time, so it takes 16; a GPU wants many.
CPU_BATCH, ENGINE_BATCH, GPU_BATCH = 4, 16, 32
BATCH_SIZE_HELP = (f"photos per forward pass (default: {CPU_BATCH} for PyTorch on a CPU, where more overflow the caches; "
                   f"{ENGINE_BATCH} for an OpenVINO or ONNX Runtime engine; {GPU_BATCH} on a GPU)")


def default_batch_size(device: torch.device, engine_answers: bool = False) -> int:
    """--batch-size's default: see CPU_BATCH."""
    if device.type != "cpu":
        return GPU_BATCH
    return ENGINE_BATCH if engine_answers else CPU_BATCH


def prepare_for_inference(model: nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of `model` made for answering one photo at a time, fast.

    BatchNorm is folded into the convolutions before it, the layout is NHWC where that is
    faster (CPU, CUDA), and the weights are stored in `dtype` (bf16 or fp16) when given,
    so no per-call casting is needed. Predictions match fp32 within the dtype's precision.
    """
    from torch.fx.experimental.optimization import fuse

    fast = fuse(model.eval())  # traces the model; returns a folded copy, the original stays untouched
    if device.type in ("cpu", "cuda"):
        fast = fast.to(memory_format=torch.channels_last)
    return fast.to(device=device, dtype=dtype or torch.float32).eval()


def compile_for_inference(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`model` compiled by torch.compile for inputs shaped like `example` (in one warm-up call), or None.

    Freezing makes the weights constants with ReLUs and residual additions fused into oneDNN's
    convolutions. It needs a C++ compiler, which many Windows laptops lack: any failure prints
    one line and the caller keeps the uncompiled model.
    """
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" is no news on a CPU
    try:
        import torch._inductor.config as inductor_config

        # Inductor reads `freezing` when the first call compiles; torch.compile(options=…) gave no gain.
        compiled = torch.compile(model, dynamic=False)
        with torch.inference_mode(), inductor_config.patch(freezing=True):
            compiled(example)
    except Exception as error:  # noqa: BLE001 -- compiler missing, unsupported platform, …: the eager model still works
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        print(f"note: torch.compile is not usable here ({type(error).__name__}: {reason}); "
              "the uncompiled model answers instead", flush=True)
        return None
    # Each photo is copied into one input tensor that stays at the same address: measured on this
    # project's CPU, the compiled ResNet50 then skips re-laying out its weights (32 ms instead of 41).
    # The lock keeps two requests from sharing that tensor at once.
    static_input, lock = example.clone(), threading.Lock()

    def run(batch: torch.Tensor) -> torch.Tensor:
        with lock:
            return compiled(static_input.copy_(batch)).clone()

    return run


def class_probabilities(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                        tta: bool = False) -> torch.Tensor:
    """Softmax of the model's answer for a batch (N×3×H×W), in fp32. With `tta` (test-time augmentation), the mean
    of that and the softmax for the same photos flipped left to right: a cat is a cat in a mirror. One more forward
    pass per batch; evaluate.py, predict.py and the page's checkbox all call this."""
    probabilities = torch.softmax(model(images).float(), dim=1)
    if tta:
        probabilities = (probabilities + torch.softmax(model(images.flip(-1)).float(), dim=1)) / 2
    return probabilities


def compile_by_default(device: torch.device, requested: bool | None) -> bool:
    """--compile / --no-compile as given, else on for CPUs: the only devices it was measured on here."""
    return device.type == "cpu" if requested is None else requested


def make_batch_predict(model: torch.nn.Module, meta: Checkpoint, device: torch.device,
                       amp_dtype: torch.dtype | None = None, compile_model: bool = False,
                       wait_for_compile: bool = False,
                       engine: Callable[[], Callable[[torch.Tensor], torch.Tensor] | None] | None = None,
                       ) -> Callable[[list[Image.Image]], torch.Tensor]:
    """Photos in, an (N, classes) tensor of probabilities out.

    The transform is built once here, not per call; the model is a folded, NHWC copy in
    bf16/fp16 where the device computes it faster than fp32 (see prepare_for_inference).
    `engine` builds another engine (engines.load_engine; None: it cannot load): once built, it answers
    every photo. Else, with compile_model, single photos go to a torch.compile'd copy once it is ready.
    Either is prepared in a background thread, so the page answers (uncompiled) from the first second;
    wait_for_compile waits for it instead.
    """
    transform = checkpoint_transform(meta)
    fast_model = prepare_for_inference(model, device, amp_dtype)
    memory_format = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
    dtype = amp_dtype or torch.float32

    def eager(batch: torch.Tensor) -> torch.Tensor:
        return fast_model(batch.to(dtype))

    # Every answerer takes fp32 batches: the engines compute from the exact input, PyTorch casts it itself.
    answering = {"one": eager, "many": eager}  # swapped for the engine or the compiled copy when it is ready

    def to_batch(images: list[Image.Image]) -> torch.Tensor:
        batch = torch.stack([transform(image) for image in images]).to(device)
        return batch.contiguous(memory_format=memory_format)

    def get_ready() -> None:
        run = engine() if engine is not None else None
        if run is not None:
            answering.update(one=run, many=run)
            return
        if not compile_model:
            return
        size = meta["image_size"]
        compiled = compile_for_inference(fast_model, to_batch([Image.new("RGB", (size, size))]).to(dtype))
        if compiled is not None:
            answering["one"] = lambda batch: compiled(batch.to(dtype))
            print("compiled the model: single photos are answered by the compiled copy from now on", flush=True)

    if (engine is not None or compile_model) and wait_for_compile:
        get_ready()
    elif engine is not None or compile_model:
        threading.Thread(target=get_ready, name="compile", daemon=True).start()

    @torch.inference_mode()
    def batch_predict(images: list[Image.Image], tta: bool = False) -> torch.Tensor:
        # Compiled for one photo only: other batch sizes would each trigger a new compile.
        run = answering["one"] if len(images) == 1 else answering["many"]
        return class_probabilities(run, to_batch(images), tta).cpu()

    return batch_predict
