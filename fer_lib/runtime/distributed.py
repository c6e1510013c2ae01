"""Training past one GPU with torch.distributed (``torchrun --nproc-per-node N -m fer_lib
train-baseline ...``).

Data-parallel training must compute the same function as one process with the same global batch. Two
parts of the method couple the images of a batch, so both are taken over the global batch:
- BatchNorm: torch's ``SyncBatchNorm`` on GPUs, ``GlobalBatchNorm2d`` (the same computation)
  elsewhere;
- ARM's batch-mean term: inside ``global_batch()``, ``ARM.batch_term`` averages the per-image maps
  of every rank (an all-reduce that gradients flow through), weighted by each rank's share of the
  batch.
Each rank takes a contiguous share of every global batch (every rank draws the batch's random
augmentation from the same seeded generator and applies it to its share only), and scales its
loss by its share, so DistributedDataParallel's gradient average equals the gradient of the global
batch's mean loss, whatever the split. A test checks this with two CPU processes (gloo).

The epoch's batches are those of one process (``epoch_batches``): one process skips a last batch of
one image (BatchNorm and ARM's batch term need two); with N ranks a last batch of fewer than N
images, which would leave a rank without one, joins the batch before it, so no image is dropped.

Evaluation during training (validation, calibration, population means) is sharded: each rank
computes a contiguous block of the batches one process would make (``evaluation_batches``), and
``gather`` hands every rank all of them in order, so each image is computed once and every rank
holds what one process computes.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

_GLOBAL_BATCH = False


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """The rank that writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def main_first(function):
    """``function()`` on the writing rank first, then (once it has written its files) on the others;
    just once outside a process group."""
    if is_main():
        result = function()
    barrier()
    if not is_main():
        result = function()
    return result


def init_from_environment() -> torch.device | None:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): NCCL with one
    GPU per rank where CUDA is available, else gloo on the CPU. Returns this rank's
    device, or None outside torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")


@contextlib.contextmanager
def global_batch(enabled: bool = True):
    """Within this block, ARM's batch term is the mean over the global batch (all ranks)."""
    global _GLOBAL_BATCH
    previous, _GLOBAL_BATCH = _GLOBAL_BATCH, enabled and active()
    try:
        yield
    finally:
        _GLOBAL_BATCH = previous


def global_batch_active() -> bool:
    return _GLOBAL_BATCH


class _AllReduceSum(torch.autograd.Function):
    """The sum over ranks; its gradient is the sum of the ranks' gradients (every loss uses it)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over the ranks, differentiable."""
    return _AllReduceSum.apply(tensor)


def global_mean(per_image: torch.Tensor) -> torch.Tensor:
    """(1, D): the mean of ``per_image`` (B_r, D) over every rank's rows, differentiable."""
    total = all_reduce(per_image.sum(dim=0, keepdim=True))
    count = torch.tensor([float(per_image.shape[0])], device=per_image.device)
    dist.all_reduce(count)
    return total / count


def share(batch_size: int) -> slice:
    """This rank's contiguous part of a global batch of ``batch_size`` samples."""
    size, me = world_size(), rank()
    base, extra = divmod(batch_size, size)
    start = me * base + min(me, extra)
    return slice(start, start + base + (1 if me < extra else 0))


def epoch_batches(count: int, batch_size: int) -> list[slice]:
    """The batches of an epoch over ``count`` samples in ``batch_size``, as the module docstring
    says; a last batch joined to the one before is the only case where N ranks do not train the
    batches of one process."""
    batches = evaluation_batches(count, batch_size, sharded=False)
    if not batches:
        return batches
    last = batches[-1].stop - batches[-1].start
    if world_size() > 1 and last < world_size() and len(batches) > 1:
        batches[-2:] = [slice(batches[-2].start, count)]
    elif last < max(2, world_size()):
        # an epoch of a single batch too small to split
        batches.pop()
    return batches


def evaluation_batches(count: int, batch_size: int, sharded: bool = True) -> list[slice]:
    """This rank's block of one process's consecutive batches of ``batch_size`` over ``count``
    samples (the same batches: ARM's batch term couples a batch's images); all of them without
    ``sharded``, or outside a group."""
    batches = [
        slice(start, min(start + batch_size, count)) for start in range(0, count, batch_size)
    ]
    return batches[share(len(batches))] if sharded else batches


def gather(parts: list, sharded: bool = True) -> list:
    """Every rank's ``parts`` (CPU tensors, one per batch of ``evaluation_batches``) in rank order,
    on every rank; ``parts`` as they are without ``sharded`` (each rank computed every batch)."""
    if not (sharded and active()):
        return parts
    everyone = [None] * world_size()
    dist.all_gather_object(everyone, parts)
    return [part for rank_parts in everyone for part in rank_parts]


def loss_scale(local: int, batch_size: int) -> float:
    """Factor on a rank's mean loss so that DDP's gradient average is the global batch's."""
    return local * world_size() / batch_size


def collective_device() -> torch.device:
    """Where the process group's collectives take their tensors: this rank's GPU under NCCL (which
    refuses CPU tensors), the CPU otherwise (gloo, or no group)."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(*values: float | torch.Tensor) -> list[float]:
    """Sum of each value over the ranks (epoch statistics: numbers, or 0-d tensors kept on the
    device during an epoch), read back to the host once."""
    device = collective_device()
    # a float stays float64
    tensor = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(device) for v in values])
    if active():
        dist.all_reduce(tensor)
    return tensor.tolist()


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch, through all-reduces that
    gradients flow through: what ``SyncBatchNorm`` does on GPUs, here for any device (torch's
    ``SyncBatchNorm`` runs on GPUs only, and the CPU test of data-parallel training needs it). Two
    passes: the mean, then the variance around it.

    As torch's BatchNorm under autocast: the statistics and running buffers in fp32 whatever the
    input's precision (a bf16 sum of 20,000 values, or a bf16 count, is not exact), the output in
    the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return self._global_forward(x.float()).to(x.dtype)

    def _global_forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        count = torch.tensor([x.numel() // channels], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)  # float64 holds any image count exactly
        mean = all_reduce(x.sum(dim=(0, 2, 3))) / count.float()
        centred = x - mean.view(1, -1, 1, 1)
        # biased, as BatchNorm normalises
        variance = all_reduce(centred.pow(2).sum(dim=(0, 2, 3))) / count.float()
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum
                if momentum is None:
                    momentum = 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                # unbiased, as BatchNorm keeps
                unbiased = variance.detach() * float(count / (count - 1))
                self.running_var.lerp_(unbiased, momentum)
        out = centred * torch.rsqrt(variance + self.eps).view(1, -1, 1, 1)
        if not self.affine:
            return out
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def global_batch_norm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Every BatchNorm2d of ``model`` made global-batch, in place, keeping its parameters and
    statistics: torch's SyncBatchNorm on CUDA, ``GlobalBatchNorm2d`` elsewhere."""
    if device.type == "cuda":
        # convert_sync_batchnorm returns a new module for a BatchNorm root
        for name, child in model.named_children():
            setattr(model, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
        return model
    for name, child in model.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            # the same Parameter and buffer objects: an optimizer made before still updates them
            own = [*child.named_parameters(recurse=False), *child.named_buffers(recurse=False)]
            for key, value in own:
                setattr(replacement, key, value)
            replacement.train(child.training)
            setattr(model, name, replacement)
        else:
            global_batch_norm(child, device)
    return model


class _Calls(torch.nn.Module):
    """Runs one method of a module as ``forward``, so DistributedDataParallel sees the call (it
    hooks forward only)."""

    def __init__(self, module: torch.nn.Module, method: str):
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args):
        return getattr(self.module, self.method)(*args)


def wrap(
    model: torch.nn.Module,
    device: torch.device,
    method: str = "forward",
    trained: list[torch.nn.Module] | None = None,
) -> torch.nn.Module:
    """``model`` in DistributedDataParallel, calling ``method`` as its forward, with the BatchNorm
    layers of the ``trained`` submodules (default: all of ``model``) made global-batch. Outside a
    process group: ``model`` as it is (still calling ``method``)."""
    target = model if method == "forward" else _Calls(model, method)
    if not active():
        return target
    for module in trained or [model]:
        global_batch_norm(module, device)
    return DistributedDataParallel(
        target, device_ids=[device.index] if device.type == "cuda" else None
    )
