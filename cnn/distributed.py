"""torch.distributed glue for the library's layers.

    model = cnn.SyncBatchNorm.convert_sync_batchnorm(model)  # ours and torch's batch norms
    ddp = cnn.distributed.DistributedDataParallel(model)     # torch's; on CPU it accepts ours
"""
import torch


class DistributedDataParallel(torch.nn.parallel.DistributedDataParallel):
    """torch's DistributedDataParallel, unchanged but for one check: torch refuses any
    SyncBatchNorm in a CPU module (its own needs CUDA); ``cnn.SyncBatchNorm`` runs on gloo,
    so only torch's own are refused there."""

    def _passing_sync_batchnorm_handle(self, module):
        from .layers.sync_batch_norm import SyncBatchNorm

        for layer in module.modules():
            if isinstance(layer, torch.nn.SyncBatchNorm) and not isinstance(layer, SyncBatchNorm) \
                    and self.device_type == "cpu":
                raise ValueError("torch.nn.SyncBatchNorm layers only work with GPU modules "
                                 "(cnn.SyncBatchNorm also runs on CPU)")


__all__ = ["DistributedDataParallel"]
