"""A torch.nn.functional-shaped API whose ops run on the Triton kernels in ``kernels``."""
from .conv import conv2d

__all__ = ["conv2d"]
