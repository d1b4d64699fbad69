"""DistributedDataParallel: the process group torchrun describes, and `lenstrt train --nproc N`.

torchrun (torch.distributed.run) starts one process per rank with RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT in the environment; `init_from_env` joins that group (NCCL on CUDA, gloo on CPU) with
a timeout, so a rank waiting on a dead peer fails instead of hanging (torchrun also ends the job as soon
as one rank exits with an error). Without WORLD_SIZE > 1 nothing here runs: a single process trains
exactly as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from lenstrt.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = DistInfo()


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_from_env(device: str, timeout_s: float) -> tuple[DistInfo, str]:
    """(DistInfo, device for this rank). Joins the torchrun group when WORLD_SIZE > 1, or uses the one a
    launcher already made (Ray Train's TorchTrainer initialises the group before the training loop)."""
    import torch
    import torch.distributed as dist

    made = dist.is_available() and dist.is_initialized()
    if not made and env_world() <= 1:
        return SINGLE, device
    rank, world = (dist.get_rank(), dist.get_world_size()) if made else (int(os.environ["RANK"]), env_world())
    if world <= 1:
        return SINGLE, device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if local >= torch.cuda.device_count():
            raise ConfigError(f"rank {rank}: LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) visible; "
                              "start at most one process per GPU (--nproc-per-node)")
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if made:
        backend = str(dist.get_backend())
    else:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), rank=rank, world_size=world)
    return DistInfo(rank, world, local, backend), device


def shutdown(info: DistInfo) -> None:
    if info.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def broadcast(info: DistInfo, value: Any) -> Any:
    """Rank 0's `value` on every rank (a no-op in a single process)."""
    if not info.active:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(info: DistInfo, value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not info.active:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, value)
    return out


def barrier(info: DistInfo) -> None:
    if info.active:
        import torch.distributed as dist

        dist.barrier()


def launch(nproc: int, argv: list[str]) -> int:
    """`lenstrt train --nproc N ...`: the same command under torchrun on this node (one rank per
    process; with CUDA, one GPU per rank). Returns torchrun's exit status."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "lenstrt.cli.train", *argv]
    # torchrun gives each rank OMP_NUM_THREADS=1 unless set: on a CPU, split the cores between ranks.
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(cmd, env=env)
