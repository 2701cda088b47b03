"""Multi-process training on PyTorch's own engine: torchrun + DDP or FSDP2 (`fully_shard`).

    torchrun --nproc-per-node 8 apps/train_dit --parallel fsdp ...   # one process per GPU
    uv run apps/train_dit ...                                        # no torchrun: one process

:func:`init_distributed` reads torchrun's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`); it starts
the process group (NCCL on GPUs, gloo on the CPU) and gives each process the device of its local rank.
Without those variables nothing is initialised and the job runs in one process, as before.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ea_core.devices import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: `rank` of `world_size`, `local_rank` on its node, its `device`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, plots, samples and exported models."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or (dist.is_available() and dist.is_initialized())


def init_distributed(device: str | None = "auto") -> DistContext:
    """Start the process group when launched by torchrun and pick this process's device.

    `device`: "auto" (CUDA when available, else CPU), "cuda" or "cpu". Under torchrun "auto"/"cuda"
    mean `cuda:<LOCAL_RANK>` with NCCL; "cpu" (or no GPU) uses gloo.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistContext(device=resolve_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device in (None, "auto") or str(device).startswith("cuda")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local_rank} but only {torch.cuda.device_count()} GPUs on this node: "
                               "use --nproc-per-node <= the number of GPUs")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over the processes (a copy; `values` itself when single-process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_reduce_gradients(params) -> None:
    """Average `.grad` of `params` over the processes (data parallelism without a DDP wrapper)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def all_gather_objects(obj) -> list:
    """`[obj of rank 0, obj of rank 1, ...]` (a one-element list when single-process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def batch_offset(local_batch: int, device: torch.device | None = None) -> tuple[int, int]:
    """`(index of this process's first sample in the global batch, global batch size)`: ranks in order."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 0, local_batch
    sizes = torch.zeros(dist.get_world_size(), dtype=torch.int64, device=device)
    sizes[dist.get_rank()] = local_batch
    dist.all_reduce(sizes)
    return int(sizes[: dist.get_rank()].sum()), int(sizes.sum())


def sample_generators(seed: int, step: int, first: int, count: int) -> list[torch.Generator]:
    """One CPU generator per sample of the global batch, seeded by `(seed, step, sample index)`.

    Sample `first + i` of step `step` draws the same noise whichever process holds it, so N processes
    with per-process batch B compute what one process computes with batch N*B, and a resumed run
    draws what an uninterrupted one draws.
    """
    return [torch.Generator().manual_seed((seed * 1_000_003 + step) * 65_537 + first + i) for i in range(count)]


def randn_per_sample(shape: tuple[int, ...], generators: list[torch.Generator], device=None) -> torch.Tensor:
    """`(len(generators), *shape)` standard normal noise, row i from generator i."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


# ------------------------------------------------------------------------------------------------
# wrapping a model
# ------------------------------------------------------------------------------------------------


def apply_fsdp(model: nn.Module, units, param_dtype: torch.dtype | None = None,
               ignored_params: set[nn.Parameter] | None = None, forward_methods: tuple[str, ...] = ()) -> nn.Module:
    """Shard `model` with FSDP2: `fully_shard` on each module of `units` (e.g. the transformer blocks),
    then on the root for the remaining parameters. `param_dtype` (e.g. bf16) casts the gathered
    parameters for compute; gradients are reduced in float32. `ignored_params` stay whole, unsharded
    tensors (their gradients are not reduced: the caller averages them). `forward_methods` names the
    root's methods other than `forward` that run the model (a VAE's `encode` / `decode`), so that they
    gather the parameters as `forward` does. FSDP2 shards contiguous tensors only: parameters stored in
    another layout (the Slice VAE keeps its causal convolutions' weights tap-major for speed) are made
    contiguous first (same values). In place; returns `model`.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    with torch.no_grad():
        for p in model.parameters():
            if not p.is_contiguous() and (ignored_params is None or p not in ignored_params):
                p.data = p.data.contiguous()

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else \
        MixedPrecisionPolicy()
    for unit in units:
        fully_shard(unit, mp_policy=mp)
    # The root's own parameters stay gathered from forward to backward when other methods run the model:
    # their outputs need not be tensors (a posterior object), so FSDP cannot hook them to re-gather.
    fully_shard(model, mp_policy=mp, ignored_params=ignored_params,
                reshard_after_forward=False if forward_methods else None)
    for name in forward_methods:
        register_fsdp_forward_method(model, name)
    return model


def wrap_ddp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel around `model` (gradients averaged during backward)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


@contextlib.contextmanager
def gradient_sync(train_module: nn.Module, enabled: bool):
    """Skip the gradient all-reduce inside the block when not `enabled` (gradient accumulation)."""
    if enabled:
        yield
        return
    if hasattr(train_module, "no_sync"):  # DDP
        with train_module.no_sync():
            yield
    elif hasattr(train_module, "set_requires_gradient_sync"):  # FSDP2
        train_module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            train_module.set_requires_gradient_sync(True)
    else:
        yield


def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """`clip_grad_norm_` that also works on FSDP2's sharded (DTensor) gradients, alone or mixed with plain
    ones (parameters FSDP ignores); returns the full norm over all of them."""
    params = [p for p in params if p.grad is not None]
    sharded = [p for p in params if hasattr(p.grad, "full_tensor")]
    if not sharded or len(sharded) == len(params):
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        full = getattr(norm, "full_tensor", None)
        return full() if full is not None else norm
    plain = [p for p in params if not hasattr(p.grad, "full_tensor")]
    norm_sharded = torch.nn.utils.get_total_norm([p.grad for p in sharded]).full_tensor()
    norm_plain = torch.nn.utils.get_total_norm([p.grad for p in plain])
    total = torch.linalg.vector_norm(torch.stack([norm_sharded, norm_plain.to(norm_sharded.device)]))
    coef = min(1.0, max_norm / (total.item() + 1e-6))  # as clip_grad_norm_ (one host sync)
    if coef < 1.0:
        for group in (sharded, plain):  # one foreach per kind: DTensors and plain tensors do not mix
            torch._foreach_mul_([p.grad for p in group], coef)
    return total


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole, unsharded state dict of `model` on the CPU (collective: every process calls it; the tensors arrive on rank 0, the others may get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                broadcast_from_rank0=False))
