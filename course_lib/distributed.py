"""Data parallelism under torchrun: the same model on every device, each device training on its own part of
every epoch, the gradients averaged, so that every rank takes the same step and holds the same weights.

torchrun starts one process (a "rank") per device and tells each its place through environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Without them every function
here answers as a single process does, so `train.fit` runs the same code either way.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
T = TypeVar("T")


def active() -> bool:
    """True inside a process group (after init_from_env under torchrun)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that prints, shows progress bars and writes files."""
    return rank() == 0


def processes_per_machine() -> int:
    """torchrun's LOCAL_WORLD_SIZE, else 1: the processes that share this machine's CPU cores."""
    given = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return int(given) if given.isdigit() and int(given) > 0 else 1


def init_from_env(device: torch.device) -> torch.device:
    """Join torchrun's process group when started by torchrun, and return this rank's device: on CUDA the
    GPU numbered LOCAL_RANK (backend nccl), on a CPU the CPU (backend gloo). Without torchrun's variables,
    `device` unchanged and no process group."""
    if active() or "WORLD_SIZE" not in os.environ:
        return device
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE is set but {', '.join(missing)} not: start the program with "
                           "`torchrun --nproc_per_node=N -m ...`, which sets them all, or unset WORLD_SIZE to run "
                           "it as a single process.")
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"this process is LOCAL_RANK {local_rank}, but torch sees {torch.cuda.device_count()} "
                               f"GPU(s): start torchrun with --nproc_per_node={torch.cuda.device_count()} or fewer.")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl", device_id=device)
    elif device.type == "cpu":
        dist.init_process_group("gloo")
    else:
        raise RuntimeError(f"torch.distributed has no backend for {device.type} here: run on CUDA GPUs or on the "
                           "CPU (COURSE_DEVICE=cpu).")
    return device


def shutdown() -> None:
    if active():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextmanager
def main_first():
    """Rank 0 runs the block before the other ranks do, so that they find what it cached on disk (decoded
    data, downloaded weights) instead of all writing it at once."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def from_main(compute: Callable[[], T]) -> T:
    """`compute()` run on rank 0 only and its result given to every rank: for a choice (a learning rate from
    a sweep) that all ranks must share, since ranks training with different rates drift apart."""
    if world_size() == 1:
        return compute()
    box = [compute() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def totals(*values) -> list[float]:
    """Each value (a number or a one-element tensor) summed over all ranks: sums of losses, of correct
    predictions and of images, from which every rank computes the same metric."""
    if world_size() == 1:
        return [float(v) for v in values]
    summed = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(summed)
    return summed.tolist()


def sum_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor of counts (a confusion matrix) summed over all ranks."""
    if world_size() == 1:
        return tensor
    summed = tensor.to(_collective_device(), copy=True)
    dist.all_reduce(summed)
    return summed.to(tensor.device)


def check_same_on_all_ranks(value: int, what: str, fix: str) -> None:
    """DDP needs every rank to take the same number of steps: one rank with a step more waits forever."""
    if world_size() == 1:
        return
    low_high = torch.tensor([-value, value], device=_collective_device())
    dist.all_reduce(low_high, op=dist.ReduceOp.MAX)
    low, high = -int(low_high[0]), int(low_high[1])
    if low != high:
        raise ValueError(f"{what} differs between ranks ({low} to {high}): {fix}")


def shard(batches, *, equal: bool) -> bool:
    """Cut `batches` (data.Batches or TensorBatches) to this rank's part of every epoch, in place (see
    TensorBatches.shard); True when the data are now split across ranks, False in a single process or for
    batches that cannot be split (a list), which every rank then reads whole."""
    if world_size() == 1 or not hasattr(batches, "shard"):
        return False
    batches.shard(rank(), world_size(), equal=equal)
    return True


def scaled_rates(groups: list[dict], lr: float) -> tuple[list[dict], float]:
    """The linear scaling rule (Goyal et al., 2017, "Accurate, large minibatch SGD"): with N ranks each
    taking `batch_size` images per step, a step averages the gradient of N times as many images and is N
    times less noisy, and there are N times fewer steps per epoch; multiplying every rate by N keeps the
    distance travelled per epoch about the same. It holds while the rates stay below where training becomes
    unstable, which one-cycle's warm-up helps with. A single process keeps its rates."""
    n = world_size()
    return [{**g, "lr": g["lr"] * n} if "lr" in g else g for g in groups], lr * n


def wrap(model: nn.Module, device: torch.device, *, sync_batchnorm: bool = False) -> nn.Module:
    """The module to train: `model` itself in a single process, else DistributedDataParallel around it,
    which copies rank 0's weights and buffers to every rank when it wraps and averages the gradients in
    every backward pass. Keep `model` for state dicts: its keys carry no "module." prefix, so checkpoints
    load with or without a process group.

    BatchNorm, per rank (the default): each rank normalizes with the statistics of its own batch. It costs
    no communication, and DDP copies rank 0's running statistics to all ranks at every step, so every rank
    holds the same model; but a rank's batch is 1/N of the global one, and a small batch gives noisy
    statistics. sync_batchnorm=True converts the model's BatchNorm layers (in place) to SyncBatchNorm: the
    statistics of the global batch, as one process with that batch computes them, at the price of an
    all-reduce in every BatchNorm layer's forward and backward pass. Worth it when a device holds a few
    images per step (large images, detection, segmentation); at the course's 128 per device, per rank is
    enough. torch implements SyncBatchNorm on GPUs only."""
    if world_size() == 1:
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("SyncBatchNorm runs on GPUs only (torch has no CPU implementation): on a CPU leave "
                             "sync_batchnorm off, and each rank normalizes with its own batch's statistics.")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
