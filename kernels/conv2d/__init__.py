"""Convolution kernels: the implicit GEMM (forward, input gradient, weight gradient), the
direct depthwise kernels, and the dispatch between them (``dispatch``), which callers use."""
from .dispatch import conv2d_forward, conv2d_input_grad, conv2d_weight_grad
from .geometry import Conv2dGeometry

__all__ = ["Conv2dGeometry", "conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad"]
