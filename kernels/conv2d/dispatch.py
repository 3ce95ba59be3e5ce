"""Which conv2d kernel runs: the direct depthwise kernels or the implicit GEMM.

These are the launchers the rest of the project calls; shapes as in each kernel module.
"""
from . import depthwise
from . import forward as implicit_gemm_forward
from . import input_grad as implicit_gemm_input_grad
from . import weight_grad as implicit_gemm_weight_grad
from .geometry import Conv2dGeometry


def conv2d_forward(x, weight, bias, geometry: Conv2dGeometry, **epilogue):
    """y = epilogue(conv2d(x, weight) + bias); see kernels/conv2d/forward.py for the
    epilogue's keywords (activation, negative_slope, residual, bn_eval, stats, keep_pre) and
    what it returns. Depthwise convs run on the direct depthwise kernel with the same
    epilogues, everything else on the implicit GEMM."""
    if depthwise.is_depthwise(geometry):
        return depthwise.depthwise_forward(x, weight, bias, geometry, **epilogue)
    return implicit_gemm_forward.conv2d_forward(x, weight, bias, geometry, **epilogue)


def conv2d_input_grad(grad_output, weight, input, geometry: Conv2dGeometry):
    """dx (N, C_in, H, W) from dy (N, C_out, OH, OW)."""
    if depthwise.is_depthwise(geometry):
        return depthwise.depthwise_input_grad(grad_output, weight, input, geometry)
    return implicit_gemm_input_grad.conv2d_input_grad(grad_output, weight, input, geometry)


def conv2d_weight_grad(grad_output, input, weight, geometry: Conv2dGeometry,
                       need_bias: bool = False):
    """(dw like weight, db (C_out,) or None) from dy and x."""
    if depthwise.is_depthwise(geometry):
        return depthwise.depthwise_weight_grad(grad_output, input, weight, geometry, need_bias)
    return implicit_gemm_weight_grad.conv2d_weight_grad(grad_output, input, weight, geometry,
                                                        need_bias)
