"""Fused conv2d + batch norm + ReLU as ``torch.ops.cnn`` ops over cnn.kernels.conv_bn_act.

    cnn::conv_bn_act2d_train(x, w, b?, gamma?, beta?, running_mean!?, running_var!?,
                              num_batches_tracked!?, stride, padding4, dilation, groups,
                              momentum?, eps) -> (z, y, mean, invstd)
    cnn::conv_bn_act2d_eval(x, w, b?, gamma?, beta?, running_mean, running_var, stride,
                             padding4, dilation, groups, eps) -> z
    cnn::conv_bn_act2d_backward(dz, x, w, b?, gamma?, beta?, mean, scale, y?, stride,
                                 padding4, dilation, groups, eps, training, needs[5])
        -> (dx, dw, db, dgamma, dbeta), each (0,) unless asked for

z and the conv output y (kept for the backward) are (N, C_out, OH, OW) in conv2d's layout
(channels_last when x or w suggests it); mean/invstd (C_out,) fp32 (fp64 for fp64). The
backward has no derivative registered: double backward through the fused layer raises
torch's "no autograd formula" error (the unfused layers support it).
"""
import torch

from ..kernels import conv_bn_act as launchers
from ..kernels.batch_norm.forward import stats_dtype
from ..kernels.runtime import output_memory_format
from .conv2d import declared, geometry, weight_grad_format
from .registry import LibraryOp, none_unless, placeholder


def _output_format(input, weight):
    """torch's relu(batch_norm(conv2d(x, w))) is laid out as its conv2d output: channels_last
    when x or w suggests it (a channels_last weight with NCHW input too)."""
    return output_memory_format(input, weight)


def _output(input, weight, g):
    return input.new_empty(g.output_shape).contiguous(memory_format=_output_format(input, weight))


def _stats(input, g):
    return input.new_empty((g.out_channels,), dtype=stats_dtype(input.dtype))


def _train(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           bn_weight: torch.Tensor | None, bn_bias: torch.Tensor | None,
           running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
           num_batches_tracked: torch.Tensor | None, stride: list[int], padding: list[int],
           dilation: list[int], groups: int, momentum: float | None,
           eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    n, _, oh, ow = g.output_shape
    if n * oh * ow == 0:
        # Empty batch: no statistics, running stats left as they are (torch's behaviour).
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        zeros = input.new_zeros((g.out_channels,), dtype=stats_dtype(input.dtype))
        return _output(input, weight, g), _output(input, weight, g), zeros, zeros.clone()
    z, y, mean, invstd = launchers.conv_bn_act_train_forward(
        input, weight, bias, g, bn_weight, bn_bias, running_mean, running_var,
        num_batches_tracked, momentum, eps)
    fmt = _output_format(input, weight)
    return declared(z, fmt), declared(y, fmt), mean, invstd


def _train_fake(input, weight, bias, bn_weight, bn_bias, running_mean, running_var,
                num_batches_tracked, stride, padding, dilation, groups, momentum, eps):
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    return _output(input, weight, g), _output(input, weight, g), _stats(input, g), \
        _stats(input, g)


def _train_setup(ctx, inputs, output):
    input, weight, bias, bn_weight, bn_bias, _, _, _, *ctx.args, _, ctx.eps = inputs
    _, y, mean, invstd = output
    ctx.mark_non_differentiable(y, mean, invstd)
    ctx.training = True
    ctx.save_for_backward(input, weight, bias, bn_weight, bn_bias, mean, invstd, y)


def _eval(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
          bn_weight: torch.Tensor | None, bn_bias: torch.Tensor | None,
          running_mean: torch.Tensor, running_var: torch.Tensor, stride: list[int],
          padding: list[int], dilation: list[int], groups: int, eps: float) -> torch.Tensor:
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    z = launchers.conv_bn_act_eval_forward(input, weight, bias, g, bn_weight, bn_bias,
                                            running_mean, running_var, eps)
    return declared(z, _output_format(input, weight))


def _eval_fake(input, weight, bias, bn_weight, bn_bias, running_mean, running_var, stride,
               padding, dilation, groups, eps):
    return _output(input, weight,
                   geometry(input.shape, weight.shape, stride, padding, dilation, groups))


def _eval_setup(ctx, inputs, output):
    input, weight, bias, bn_weight, bn_bias, running_mean, running_var, *ctx.args, ctx.eps = \
        inputs
    ctx.training = False
    # No activation kept: the backward recomputes the conv output, so z may be modified in
    # place afterwards (a following nn.ReLU(inplace=True) does).
    ctx.save_for_backward(input, weight, bias, bn_weight, bn_bias, running_mean, running_var,
                          None)


def _forward_backward(ctx, grad_z, *_):
    input, weight, bias, bn_weight, bn_bias, mean, scale, y = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:5])
    needs[2] = needs[2] and bias is not None
    needs[3] = needs[3] and bn_weight is not None
    needs[4] = needs[4] and bn_bias is not None
    rest = (None,) * (9 if ctx.training else 7)
    if not any(needs):
        return (None,) * 5 + rest
    grads = conv_bn_act2d_backward(grad_z, input, weight, bias, bn_weight, bn_bias, mean,
                                    scale, y, *ctx.args, ctx.eps, ctx.training, needs)
    return (*(none_unless(n, t) for n, t in zip(needs, grads, strict=True)), *rest)


def _backward(grad_z: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None, bn_weight: torch.Tensor | None,
              bn_bias: torch.Tensor | None, mean: torch.Tensor, scale: torch.Tensor,
              y: torch.Tensor | None, stride: list[int], padding: list[int],
              dilation: list[int], groups: int, eps: float, training: bool,
              needs: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor, torch.Tensor]:
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    dx, dw, db, dgamma, dbeta = launchers.conv_bn_act_backward(
        grad_z, input, weight, bias, g, bn_weight, bn_bias, mean, scale, eps=eps,
        training=training, y=y, needs=tuple(needs))
    if dx is not None:
        dx = declared(dx, output_memory_format(input))
    if dw is not None:
        dw = declared(dw, weight_grad_format(weight))
    return tuple(t if t is not None else placeholder(input) for t in (dx, dw, db, dgamma, dbeta))


def _backward_fake(grad_z, input, weight, bias, bn_weight, bn_bias, mean, scale, y, stride,
                   padding, dilation, groups, eps, training, needs):
    dx = input.new_empty(input.shape).contiguous(memory_format=output_memory_format(input))
    dw = weight.new_empty(weight.shape).contiguous(memory_format=weight_grad_format(weight))
    out = (dx, dw, *(p.new_empty(p.shape) if p is not None else None
                     for p in (bias, bn_weight, bn_bias)))
    return tuple(t if n and t is not None else placeholder(input)
                 for n, t in zip(needs, out, strict=True))


conv_bn_act2d_train = LibraryOp(
    "conv_bn_act2d_train", _train, _train_fake, setup_context=_train_setup,
    backward=_forward_backward,
    mutates_args=("running_mean", "running_var", "num_batches_tracked"))
conv_bn_act2d_eval = LibraryOp("conv_bn_act2d_eval", _eval, _eval_fake,
                                setup_context=_eval_setup, backward=_forward_backward)
conv_bn_act2d_backward = LibraryOp("conv_bn_act2d_backward", _backward, _backward_fake)
conv_bn_act2d_train.register_autocast(cast=3)
conv_bn_act2d_eval.register_autocast(cast=3)

__all__ = ["conv_bn_act2d_train", "conv_bn_act2d_eval", "conv_bn_act2d_backward"]
