"""Triton kernels and their launchers: tensors in, tensors out; no autograd here.

Importing this package first decides where kernels run (see ``kernels.runtime``).
``kernels.conv2d_forward`` and its two siblings are the dispatching launchers of
``kernels/conv2d.py`` (depthwise or implicit GEMM); the implicit-GEMM modules of the same names
are ``kernels.conv2d.implicit_gemm_forward`` etc.
"""
from . import runtime  # noqa: F401  (must run before any kernel is decorated)
from .conv2d import conv2d_forward, conv2d_input_grad, conv2d_weight_grad
from .conv2d_geometry import Conv2dGeometry

__all__ = ["Conv2dGeometry", "conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad",
           "runtime"]
