"""Data-parallel training under ``torchrun``: process group, ranks, shards, reductions.

    torchrun --nproc_per_node=2 -m cnn.train ...             # 2 processes on this machine
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-endpoint HOST:PORT -m cnn.train ...

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; without them there is
one process and no process group, and every helper here is a no-op (rank 0 of 1). The engine
is torch's own: DistributedDataParallel (``cnn.distributed``'s, which also accepts our
SyncBatchNorm on CPU) over a process group, backend gloo on CPU and nccl on CUDA. Collectives
get a timeout, so a process that dies or hangs ends the job with an error instead of a hang,
and the group is destroyed on exit.
"""
import contextlib
import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Seconds a collective may wait for the other processes. Under the Triton interpreter one
# step takes seconds and rank 0 alone writes checkpoints and plots between collectives.
DEFAULT_TIMEOUT_S = 600.0


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting RANK and
    WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def default_backend(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank of world_size (local_rank on its node), its device,
    and the backend (None: one process, no process group)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = None

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def main(self) -> bool:
        """Rank 0: the process that prints progress and writes files."""
        return self.rank == 0


def local_device(device=None) -> torch.device:
    """The device of this process: under torchrun, CUDA device LOCAL_RANK when CUDA is used
    (one GPU per process), else ``device`` or the default (cuda if available, else cpu)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None and launched():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def setup(device=None, backend: str = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Context:
    """Join torchrun's process group (when launched by it) and return this process's Context.

    device: as ``--device`` (None: cuda if available, else cpu); under torchrun CUDA becomes
    cuda:LOCAL_RANK. backend: None picks gloo on CPU, nccl on CUDA. timeout_s: the collectives'
    timeout."""
    device = local_device(device)
    if not launched():
        return Context(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = backend or default_backend(device)
    timeout = datetime.timedelta(seconds=timeout_s)
    if backend == "nccl":
        # An error in a collective then aborts the process instead of leaving it hanging.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        dist.init_process_group(backend, timeout=timeout, device_id=device)
    else:
        dist.init_process_group(backend, timeout=timeout)
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", 0)), device=device,
                   backend=backend)


def teardown() -> None:
    """Destroy the process group, if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int):
    """End this process with exit status ``code``. Under torchrun: with stdout and stderr
    flushed, but without the interpreter's finalization. DistributedDataParallel keeps the
    gloo process group alive after ``destroy_process_group`` (torch 2.13: its worker threads
    outlive any DDP model), and a worker thread still releasing a finished collective's
    tensors while the interpreter finalizes takes the GIL and aborts the process (SIGABRT,
    "terminate called without an active exception"), after every file was written. The run
    writes and closes its files before returning, so there is nothing left to finalize."""
    if not launched():
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def process_group(device=None, backend: str = None, timeout_s: float = DEFAULT_TIMEOUT_S):
    """``with process_group(...) as ctx:``: setup, then teardown however the block ends."""
    try:
        yield setup(device, backend, timeout_s)
    finally:
        teardown()


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def is_main() -> bool:
    return rank() == 0


# ------------------------------------------------------------------------------ data shards

def shard_order(n: int, epoch: int, seed: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's sample order for one epoch (int64, ceil(n / world_size) indices):
    ``torch.utils.data.DistributedSampler(shuffle=True, seed=seed)`` after
    ``set_epoch(epoch)``. The ranks' shards are disjoint (but for the padding that makes them
    equally long when world_size does not divide n), and step k's batches of all ranks
    together are step k's batch of one process with world_size times the batch: shard r is
    the permutation's entries r, r + world_size, ..."""
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world_size, rank=rank,
                                                  shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(iter(sampler)), dtype=torch.int64)


def shard_range(n: int, rank: int, world_size: int) -> torch.Tensor:
    """A contiguous, disjoint slice of range(n) for evaluation (int64): rank r gets
    [r * n // world_size, (r + 1) * n // world_size), so the shards cover every sample once."""
    return torch.arange(rank * n // world_size, (rank + 1) * n // world_size)


# ------------------------------------------------------------------------------ reductions

def _collective_device() -> torch.device:
    """nccl reduces CUDA tensors only; gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values) -> list:
    """Element-wise sums over all ranks of a list of numbers (float64), identical on every
    rank; the values themselves with one process."""
    values = [float(v) for v in values]
    if not initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool) -> bool:
    """Whether any rank's flag is true (e.g. a stop request seen by some of them), the same
    answer on every rank."""
    return all_reduce_sum([1.0 if flag else 0.0])[0] > 0


def all_gather_object(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (picklable objects); [obj] alone."""
    if not initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """src's obj on every rank (e.g. a checkpoint only rank 0 read)."""
    if not initialized():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy src's buffers (batch-norm running statistics) into every rank's module: DDP
    broadcasts them before each training forward, so after the last step each rank still
    holds the statistics of its own batch."""
    if not initialized():
        return
    for buffer in module.buffers():
        if buffer.device.type == _collective_device().type:
            dist.broadcast(buffer, src=src)
        else:
            staged = buffer.to(_collective_device())
            dist.broadcast(staged, src=src)
            buffer.copy_(staged)


__all__ = ["Context", "DEFAULT_TIMEOUT_S", "launched", "default_backend", "local_device", "setup",
           "teardown", "exit_process", "process_group", "initialized", "rank", "world_size",
           "is_main", "shard_order", "shard_range", "all_reduce_sum", "any_rank",
           "all_gather_object", "broadcast_object", "broadcast_buffers"]
