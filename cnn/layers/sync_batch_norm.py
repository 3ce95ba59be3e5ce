"""nn.SyncBatchNorm whose statistics and normalisation run on the Triton kernels."""
import torch
import torch.distributed as dist
from torch import nn

from ..functional.sync_batch_norm import sync_batch_norm
from .batch_norm import BatchNorm2d, batch_norm_mode


def sync_group(bn: nn.modules.batchnorm._BatchNorm):
    """(process_group, world_size) when bn's training forward must sync its statistics (a
    SyncBatchNorm in training mode inside an initialised process group of more than one
    process), else None: then it is a plain batch norm, as torch's SyncBatchNorm is."""
    if not (isinstance(bn, nn.SyncBatchNorm) and bn.training and dist.is_available()
            and dist.is_initialized()):
        return None
    group = bn.process_group or dist.group.WORLD
    world_size = dist.get_world_size(group)
    return (group, world_size) if world_size > 1 else None


class SyncBatchNorm(nn.SyncBatchNorm):
    """Drop-in ``torch.nn.SyncBatchNorm``: same constructor, buffers, state_dict and repr.

    In training inside a process group (torchrun + DistributedDataParallel), each process's
    (count, mean, M2) per channel from our kernels is merged across the group with one
    all_gather (Chan's formula), the batch is normalised with our kernels, and the backward
    all-reduces the two per-channel sums (see cnn/ops/sync_batch_norm.py). Unlike
    torch's, it runs on CPU tensors too (gloo). Otherwise (evaluation, one process) it is
    ``cnn.BatchNorm2d``. Input (N, C, ...) -> the same shape (4D: the same layout).
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        group = sync_group(self)
        if group is None:
            return BatchNorm2d.forward(self, input)  # the one-process path, unchanged
        _, running_mean, running_var, momentum, counter = batch_norm_mode(self)
        return sync_batch_norm(input, running_mean, running_var, self.weight, self.bias,
                               momentum, self.eps, *group, num_batches_tracked=counter)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """torch's ``convert_sync_batchnorm``, building this class: every batch norm layer
        (ours or torch's, also inside ``cnn.ConvBNReLU2d``) becomes a ``cnn.SyncBatchNorm``
        sharing its parameters and buffers (so state_dict keys and values are unchanged)."""
        output = module
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            output = cls(module.num_features, module.eps, module.momentum, module.affine,
                         module.track_running_stats, process_group)
            if module.affine:
                with torch.no_grad():
                    output.weight = module.weight
                    output.bias = module.bias
            output.running_mean = module.running_mean
            output.running_var = module.running_var
            output.num_batches_tracked = module.num_batches_tracked
            output.training = module.training
            if hasattr(module, "qconfig"):
                output.qconfig = module.qconfig
        for name, child in module.named_children():
            output.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        del module
        return output


__all__ = ["SyncBatchNorm", "sync_group"]
