"""Our ops registered with torch.library under one namespace, ``torch.ops.cnn.*``: the layer
between ``cnn.functional`` (argument checks, torch's signatures) and ``kernels`` (launchers).
One file per op family; registry.py says how an op is registered and which path a call takes."""
from . import (
    activation,
    batch_norm,
    conv1d,
    conv2d,
    conv_bn_act,
    conv_transpose2d,
    pool2d,
    relu,
    sync_batch_norm,
)

__all__ = ["activation", "batch_norm", "conv1d", "conv2d", "conv_bn_act", "conv_transpose2d",
           "pool2d", "relu", "sync_batch_norm"]
