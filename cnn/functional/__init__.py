"""A torch.nn.functional-shaped API whose ops run on the Triton kernels in ``kernels``."""
from .activation import gelu, hardswish, leaky_relu, relu6, silu
from .batch_norm import batch_norm
from .conv1d import conv1d, conv_transpose1d
from .conv2d import conv2d
from .conv_bn_act import conv_act2d, conv_bn_act2d, conv_bn_relu2d
from .conv_transpose2d import conv_transpose2d
from .pool2d import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d
from .relu import relu

__all__ = ["conv2d", "conv1d", "conv_transpose2d", "conv_transpose1d", "adaptive_avg_pool2d",
           "adaptive_max_pool2d", "avg_pool2d", "max_pool2d", "relu", "batch_norm",
           "conv_bn_act2d", "conv_bn_relu2d", "conv_act2d", "relu6", "leaky_relu", "silu",
           "hardswish", "gelu"]
