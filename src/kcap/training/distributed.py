"""Data-parallel training on K processes started by ``torchrun`` (one run, K ranks).

``torchrun --nproc_per_node K -m kcap.cli.main train CONFIG --out RUN`` starts K copies of
`kcap train`; `init` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and joins the process group: NCCL when the run trains on CUDA,
gloo on a CPU. Without those variables (or with ``WORLD_SIZE=1``) everything here is a no-op and
the trainer runs as a single process, exactly as before.

On a CUDA run a gloo group alongside the NCCL one carries the small control messages (a stop
request, a barrier) on the host, so asking "does any rank want to stop?" never syncs a GPU.

torchrun and Ray do different jobs: torchrun splits one run over the devices of a machine (or of
several, with ``--nnodes``); ``kcap sweep --ray`` spreads a grid's runs over a cluster, one
process per run. For a grid of runs that each need several GPUs, run each point with torchrun
(its config hash, and so its row in the results store, does not depend on the world size) and
use the sweep for grids of single-device runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

#: How long a rank waits at a collective for the others (rank 0 alone measures during training).
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size``, on local device ``local_rank`` of
    the ``local_size`` ranks on this machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory and the store row."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


_control: dict[str, object] = {"group": None}


def from_env() -> World:
    """The world torchrun describes in the environment (a single process when it says none)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    return World(int(os.environ["RANK"]), size, local_rank, local_size)


def init(device_type: str) -> World:
    """Join the process group (once; later calls return the same world): NCCL for a CUDA run,
    gloo on a CPU. A CUDA rank uses device ``cuda:LOCAL_RANK``."""
    world = from_env()
    if not world.active or dist.is_initialized():
        return world
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT)
    _control["group"] = (
        dist.new_group(backend="gloo", timeout=TIMEOUT) if backend != "gloo" else None
    )
    return world


def shutdown() -> None:
    """Leave the process group (a no-op for a single process)."""
    if dist.is_initialized():
        dist.destroy_process_group()
        _control["group"] = None


def barrier() -> None:
    """Wait for every rank (on the host, through the control group)."""
    if dist.is_initialized():
        dist.barrier(group=_control["group"])


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (a host-side all-reduce)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_control["group"])
    return bool(t.item())


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the ranks (on ``t``'s device, through the training group)."""
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_min(t: torch.Tensor) -> torch.Tensor:
    """The minimum of ``t`` over the ranks (on ``t``'s device, through the training group)."""
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t
