"""Triton kernels and their launchers: tensors in, tensors out; no autograd here.

Importing this package first decides where kernels run (see ``cnn.kernels.runtime``). One subpackage
or module per op family, the same basename as in ``cnn.ops``, ``cnn.functional`` and
``cnn.layers``: ``conv2d`` (its ``dispatch`` picks the depthwise or the implicit-GEMM kernels),
``pool2d``, ``batch_norm``, ``relu``, ``activation`` (ReLU6, LeakyReLU, SiLU, Hardswish,
GELU), ``conv_bn_act``.
"""
from . import runtime  # noqa: F401  (must run before any kernel is decorated)

# isort: off
from . import activation, batch_norm, conv2d, conv_bn_act, pool2d, relu  # noqa: E402
# isort: on

__all__ = ["activation", "batch_norm", "conv2d", "conv_bn_act", "pool2d", "relu", "runtime"]
