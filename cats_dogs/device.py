"""The device a run uses and its mixed precision: cuda, then Apple's mps, then the CPU; bf16 only where it is faster."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path

import torch

from cats_dogs.atomic import atomic_write_text
from cats_dogs.user_cache import cache_dir

BF16_MARGIN = 0.9  # bf16 is used on a CPU only when a ResNet block runs in at most 90% of fp32's time
PROBE_FILE = "bf16-probe.json"


def pick_device(name: str = "auto") -> torch.device:
    """`auto` prefers cuda, then Apple's mps, then cpu; anything else is taken as given."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"--device {name} was asked for, but PyTorch sees no CUDA GPU. Use --device auto or cpu.")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise SystemExit(f"--device {name} was asked for, but MPS is not available here. Use --device auto or cpu.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")



@functools.cache
def cpu_info() -> str:
    """/proc/cpuinfo's text, read once; empty where there is none (Windows, macOS)."""
    try:
        return Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return ""


def has_native_bf16_cpu() -> bool:
    """True where the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX).

    Elsewhere bf16 is emulated and slower than fp32, so it must be detected, not assumed.
    Only Linux reports the flags; other systems stay on fp32 on the CPU.
    """
    flags = cpu_info()
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def bottleneck_block(channels: int, width: int) -> torch.nn.Module:
    """torchvision's ResNet50 Bottleneck without its residual addition, built here: predict.py with a cached engine
    never imports torchvision (a second of start-up)."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())


@functools.cache
def bf16_beats_fp32_cpu() -> bool:
    """Whether bf16 autocast is faster than fp32 on this CPU: timed once (time_bf16_against_fp32, about 0.4 s) and
    the answer kept in the user's cache folder (bf16-probe.json), keyed by the CPU, its flags, PyTorch's version and
    the variables that hold oneDNN and ATen to an instruction set, so that later commands start 0.4 s sooner."""
    if not has_native_bf16_cpu():
        return False
    path, key = cache_dir() / PROBE_FILE, probe_key()
    try:
        answers = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: timed again and rewritten
        answers = {}
    if not isinstance(answers, dict):
        answers = {}
    if isinstance(answers.get(key), bool):
        return answers[key]
    answers[key] = time_bf16_against_fp32()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(answers, indent=1))
    except OSError:  # a read-only home: timed at every start, as before
        pass
    return answers[key]


def probe_key() -> str:
    """What the bf16 verdict depends on besides the code: the CPU's model and flags, PyTorch, and the ISA limits."""
    first_core = cpu_info().split("\n\n")[0]
    wanted = [line for line in first_core.splitlines() if line.split(":")[0].strip() in ("model name", "flags")]
    limits = [f"{name}={os.environ.get(name, '')}" for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")]
    text = "\n".join([*wanted, torch.__version__, *limits, str(BF16_MARGIN)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def time_bf16_against_fp32() -> bool:
    """True when bf16 autocast beats fp32 here by BF16_MARGIN.

    The flags are not enough. On Zen 4 (AVX512-BF16) a ResNet50 training step ran 2.65x the tutorial's
    fp32 one; on an Emerald Rapids VM that shows AVX512-BF16 but not AMX, oneDNN's avx512_core_bf16 kernels
    made the same step 1.26x slower than fp32, and OpenVINO's bf16 1.5x slower. So one ResNet50 bottleneck
    block (batch 8, 32x32, channels-last) is timed forward and backward in both types, best of 3 each.
    """
    generator_state = torch.random.get_rng_state()  # the probe must not move a seeded run's random numbers
    try:
        with torch.inference_mode(False):  # normal tensors, whatever mode the caller is in
            block = bottleneck_block(256, 64).to(memory_format=torch.channels_last)
            x = torch.randn(8, 256, 32, 32).contiguous(memory_format=torch.channels_last).requires_grad_()
    finally:
        torch.random.set_rng_state(generator_state)

    def seconds(dtype: torch.dtype | None) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            out = block(x)
        out.float().sum().backward()
        return time.perf_counter() - started

    timings: dict[torch.dtype | None, list[float]] = {None: [], torch.bfloat16: []}
    with torch.inference_mode(False), torch.enable_grad():  # asked from inside review.py's inference_mode, say
        for _ in range(4):  # interleaved, the first of each a warm-up
            for dtype in timings:
                timings[dtype].append(seconds(dtype))
    return min(timings[torch.bfloat16][1:]) <= BF16_MARGIN * min(timings[None][1:])


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type worth using on this device, or None for plain fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and bf16_beats_fp32_cpu():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast, or nothing when dtype is None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

