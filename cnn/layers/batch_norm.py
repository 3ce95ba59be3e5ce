"""nn.BatchNorm2d whose forward runs the Triton kernels."""
import torch
from torch import nn

from ..functional.batch_norm import check_batch_norm_args, tracked_batch_norm


def batch_norm_mode(bn: nn.modules.batchnorm._BatchNorm):
    """What torch's BatchNorm forward does, as (batch_stats, running_mean, running_var,
    momentum, num_batches_tracked): num_batches_tracked is the counter to advance (training
    with tracked stats) or None; momentum None then means the cumulative average over it."""
    counter = None
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        counter = bn.num_batches_tracked
    momentum = bn.momentum
    if momentum is None and counter is None:
        momentum = 0.0
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    use_running = not bn.training or bn.track_running_stats
    running_mean = bn.running_mean if use_running else None
    running_var = bn.running_var if use_running else None
    return batch_stats, running_mean, running_var, momentum, counter


class BatchNorm2d(nn.BatchNorm2d):
    """Drop-in ``torch.nn.BatchNorm2d``: same constructor, buffers, state_dict and repr;
    num_batches_tracked and momentum=None (cumulative average) behave as torch's.

    Input (N, C, H, W), NCHW or channels_last -> output of the same shape and layout.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        batch_stats, running_mean, running_var, momentum, counter = batch_norm_mode(self)
        if counter is not None:
            try:
                check_batch_norm_args(input.shape, input.dtype, input.device, running_mean,
                                      running_var, self.weight, self.bias, batch_stats,
                                      eps=self.eps, momentum=momentum,
                                      num_batches_tracked=counter)
            except Exception:
                counter.add_(1)  # torch's module counts the batch before F.batch_norm refuses it
                raise
        return tracked_batch_norm(input, running_mean, running_var, self.weight, self.bias,
                                  batch_stats, momentum, self.eps, num_batches_tracked=counter)


__all__ = ["BatchNorm2d"]
