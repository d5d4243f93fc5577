"""The device a run uses and its mixed precision: cuda, then Apple's mps, then the CPU; bf16 only where it is native."""

from __future__ import annotations

from pathlib import Path

import torch


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



def has_native_bf16_cpu() -> bool:
    """True where the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX).

    Elsewhere bf16 is emulated and slower than fp32, so it must be detected, not assumed.
    Only Linux reports the flags; other systems stay on fp32 on the CPU.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type worth using on this device, or None for plain fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and has_native_bf16_cpu():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast, or nothing when dtype is None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

