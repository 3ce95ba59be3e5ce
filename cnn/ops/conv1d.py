"""conv1d's plain eager calls: conv2d's implementation and gradient ops on unit-height views
taken inside one autograd.Function,

    x (N, C_in, L) -> (N, C_in, 1, L),  w (C_out, C_in/groups, K) -> (C_out, C_in/groups, 1, K)

so autograd records no view nodes around the 2-D op (three of them cost more host time than
the rest of the call). The same ops, on the same views, in the same order as the traced path
(cnn.functional.conv1d's views around ``torch.ops.cnn.conv2d``, what torch.compile, export and
torch.func see), so the same bits.

Backward, by conv2d's formulas (cnn/ops/conv2d.py) on the views: dx = dgrad(dy, w),
dw = wgrad(dy, x), db = sum dy; the 1-D gradients are the views' squeezed back.
"""
import torch

from ..kernels.conv2d.layout import to_channels_last
from ..kernels.host_cache import SignatureCache
from . import conv2d as conv2d_ops
from .registry import direct_apply, none_unless

# cnn.functional.conv1d's checked plain eager calls, by signature -> (stride, padding (left,
# right), dilation, whether the output keeps channels innermost).
CHECKED_CALLS = SignatureCache("cnn.ops.conv1d.CHECKED_CALLS")


class Conv1dEager(torch.autograd.Function):
    """conv2d's Function on (N, C_in, L) input and (C_out, C_in/groups, K) weight, for plain
    eager calls whose arguments were checked (no tracing, no torch.func, no autocast).
    Arguments: conv2d's (stride, padding, dilation in 2-D terms), then channels_innermost:
    whether the (N, C_out, L_out) output keeps the 2-D op's channels-innermost layout (else
    it is made contiguous, as torch lays it out)."""

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, dilation, groups,
                channels_innermost):
        out = conv2d_ops.conv2d.impl(input.unsqueeze(2), weight.unsqueeze(2), bias, stride,
                                     padding, dilation, groups).squeeze(2)
        if not channels_innermost and not out.is_contiguous():
            out = out.contiguous()
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        ctx.args, ctx.has_bias = (stride, padding, dilation, groups), bias is not None
        ctx.save_for_backward(input if need_input or need_weight or need_bias else None,
                              weight)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        need_bias = need_bias and ctx.has_bias
        grad_output, weight4 = grad_output.unsqueeze(2), weight.unsqueeze(2)
        input4 = None if input is None else input.unsqueeze(2)
        if need_input and (need_weight or need_bias):
            # Both launchers read dy channels_last: convert an NCHW dy once, not once each.
            grad_output = to_channels_last(grad_output)
        grad_input = grad_weight = grad_bias = None
        if need_input:
            grad_input = conv2d_ops.conv2d_input_grad(grad_output, weight4, input4,
                                                      *ctx.args).squeeze(2)
        if need_weight or need_bias:
            grad_weight, grad_bias = conv2d_ops.conv2d_weight_grad(
                grad_output, input4, weight4, *ctx.args, need_bias)
            grad_weight = grad_weight.squeeze(2)
        return (grad_input, none_unless(need_weight, grad_weight),
                none_unless(need_bias, grad_bias), None, None, None, None, None)


conv1d_eager = direct_apply(Conv1dEager)

__all__ = ["CHECKED_CALLS", "Conv1dEager", "conv1d_eager"]
