"""A torch.nn.functional-shaped API whose ops run on the Triton kernels in ``kernels``."""
from .activation import relu
from .batch_norm import batch_norm
from .conv import conv2d
from .fused import conv_bn_relu2d
from .pooling import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d

__all__ = ["conv2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d", "max_pool2d",
           "relu", "batch_norm", "conv_bn_relu2d"]
