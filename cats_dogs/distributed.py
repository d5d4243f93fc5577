"""Several processes, one model: what train.py needs to run under torchrun (DistributedDataParallel).

    torchrun --standalone --nproc_per_node=4 train.py ...

torchrun starts one process per GPU and tells each who it is through environment variables
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Without them, as under plain
`python train.py`, nothing here does anything: one process, no process group, no communication.
The pattern is the one of torchvision's references/classification/utils.py and nanoGPT's train.py.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def launched_by_torchrun() -> bool:
    return int(os.environ.get("RANK", -1)) != -1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 alone prints, logs to SwanLab and writes files: N processes, one set of outputs."""
    return get_rank() == 0


def init_distributed(device_name: str = "auto", sync_bn: bool = False,
                     freeze_backbone: bool = False) -> torch.device | None:
    """Join the process group torchrun set up and return this process's device; None when not under torchrun.

    Each process takes the GPU of its LOCAL_RANK and talks over NCCL; without GPUs (or with
    --device cpu) the processes share the CPU and talk over gloo, which is for trying things out.
    train.py's flags (--device, --sync-bn, --freeze-backbone) that do not fit several processes are refused
    here, before any work.
    """
    if not launched_by_torchrun():
        if sync_bn:
            print("--sync-bn: ignored, it only matters under torchrun (one process already sees its whole batch).")
        return None
    if freeze_backbone:
        raise SystemExit("--freeze-backbone trains only the head, in seconds on one process: "
                         "run it with `python train.py`, not torchrun.")
    if device_name not in ("auto", "cuda", "cpu"):
        raise SystemExit(f"--device {device_name}: under torchrun each process uses the GPU of its LOCAL_RANK "
                         "(set CUDA_VISIBLE_DEVICES to choose the GPUs); use --device auto, cuda or cpu.")
    if device_name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but PyTorch sees no CUDA GPU. Use --device auto or cpu.")
    use_gpus = device_name != "cpu" and torch.cuda.is_available()
    if sync_bn and not use_gpus:
        raise SystemExit("--sync-bn needs GPUs: PyTorch's SyncBatchNorm has no CPU version. Run without it.")
    if use_gpus:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    setup_for_distributed(dist.get_rank() == 0)
    return device


def setup_for_distributed(is_master: bool) -> None:
    """Silence print() outside rank 0, so that N processes print what one would (print(..., force=True) still does)."""
    builtin_print = builtins.print

    def print(*args, **kwargs) -> None:
        force = kwargs.pop("force", False)
        if is_master or force:
            builtin_print(*args, **kwargs)

    builtins.print = print


def _communication_device() -> torch.device:
    # NCCL only moves GPU tensors; gloo moves CPU ones.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Each value summed over all processes (in float64, so that counts stay exact)."""
    if not is_distributed():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_communication_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def any_process(flag: bool) -> bool:
    """True on every process when it is true on at least one: a decision they all take together."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([int(flag)], device=_communication_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def gather_dict(local: dict) -> dict:
    """The union of every process's dict (keys must not overlap), on every process."""
    if not is_distributed():
        return local
    parts: list[dict | None] = [None] * get_world_size()
    dist.all_gather_object(parts, local)
    return {key: value for part in parts for key, value in part.items()}


def gather_set(local: set) -> set:
    """The union of every process's set, on every process."""
    if not is_distributed():
        return local
    parts: list[set | None] = [None] * get_world_size()
    dist.all_gather_object(parts, local)
    return set().union(*parts)


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm's running mean and variance).

    Each process updates them on its own photos, and DDP only copies rank 0's at the start of the
    next training step: evaluating with them as they are would score each shard with other numbers
    than the checkpoint, which holds rank 0's.
    """
    if is_distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first, then the others (one process writes a shared file, the others read it)."""
    if is_distributed() and not is_main_process():
        dist.barrier()
    yield
    if is_distributed() and is_main_process():
        dist.barrier()


def cleanup_distributed() -> None:
    """Leave the process group; train.py does it on the way out, errors included."""
    if is_distributed():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device, freeze_backbone: bool = False,
               compile_model: bool = False) -> tuple[nn.Module, nn.Module]:
    """(the module the training steps call, the module evaluation calls): DDP and/or torch.compile (--compile)
    around the model; the head alone with --freeze-backbone."""
    if freeze_backbone:
        return model.fc, model.fc  # the feature loaders feed the head directly
    if is_distributed():
        # DDP starts by copying rank 0's weights to every process, then averages the gradients in each backward.
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        trained = torch.compile(trained) if compile_model else trained  # compiled after wrapping, as DDP's notes advise
        return trained, model  # each process evaluates its share with the plain module, free of DDP's communication
    trained = torch.compile(model) if compile_model else model
    return trained, trained
