"""torchrun-based data parallelism: ``torchrun --nproc_per_node=N -m pvtv2 train ...``.

Every decision that changes what a process does next (skip a step, stop the run) is taken by all
processes together: a process that skipped a step alone would leave the others waiting in the
gradient all-reduce of their backward pass. The process group has a timeout (``--dist-timeout``),
so a process that waits for the others (rank 0 evaluating COCO or saving while the others wait in
a barrier) gives up with an error after it instead of hanging.
"""
from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from ..errors import ConfigError

_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    #: A gloo group for decisions the host takes (skip a step): no wait for the GPU under nccl.
    host_group: Any = field(default=None, compare=False, repr=False)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum floats over all processes (identity in a single process)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def everyone(self, ok: bool) -> bool:
        """Whether ``ok`` holds on every process: a host-side collective (gloo, so nccl runs do not
        wait for the GPU) that every process must call at the same point of its loop."""
        if not self.distributed:
            return bool(ok)
        t = torch.tensor([1 if ok else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.host_group)
        return bool(t.item())

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in DistributedDataParallel when distributed, else ``model`` itself."""
        if not self.distributed:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (picklable; identity in a single process)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def split_batch(self, total: int) -> int:
        """The per-process share of a ``--batch-size`` given over all processes."""
        if total % self.world_size:
            raise ConfigError(f"--batch-size {total} is the total over {self.world_size} processes: "
                              f"it must divide evenly")
        return total // self.world_size


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a plain launch: the process that prints and writes."""
    return int(os.environ.get("RANK", "0")) == 0


def check_device_name(name: str) -> str:
    """``name`` if it is a device we run on (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``auto``)."""
    if not _DEVICE.fullmatch(str(name)):
        raise ConfigError(f"--device {name}: expected cpu, cuda, cuda:N, mps or auto")
    return name


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is checked."""
    if check_device_name(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return device


def init_distributed(device: str = "auto", *, timeout_minutes: float = 30.0) -> DistEnv:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1): gloo on
    CPU, nccl on CUDA, with a gloo group beside nccl's for the host's decisions; a collective
    that waits longer than ``timeout_minutes`` raises. A plain launch gives a single-process
    environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return DistEnv(device=dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", timeout=timeout)
    host_group = dist.new_group(backend="gloo", timeout=timeout) if dist.get_backend() != "gloo" else None
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=dev, host_group=host_group)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
