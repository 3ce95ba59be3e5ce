"""Fused conv2d + batch norm + activation (+ residual), and conv2d + activation (+ residual), as
``torch.ops.cnn`` ops over cnn.kernels.conv_bn_act.

    cnn::conv_bn_act2d_train(x, w, b?, gamma?, beta?, residual?, stride, padding4, dilation,
                             groups, eps, activation, negative_slope)
        -> (z, y, mean, invstd, var)
    cnn::conv_bn_act2d_eval(x, w, b?, gamma?, beta?, running_mean, running_var, residual?,
                            stride, padding4, dilation, groups, eps, activation,
                            negative_slope) -> z
    cnn::conv_bn_act2d_backward(dz, x, w, b?, gamma?, beta?, mean, scale, y?, residual?, stride,
                                padding4, dilation, groups, eps, training, activation,
                                negative_slope, needs[6])
        -> (dx, dw, db, dgamma, dbeta, dresidual), each (0,) unless asked for
    cnn::conv_act2d(x, w, b?, residual?, stride, padding4, dilation, groups, activation,
                    negative_slope, keep_pre) -> (z, pre)     pre (0,) unless keep_pre
    cnn::conv_act2d_backward(dz, x, w, b?, pre?, residual?, stride, padding4, dilation,
                             groups, activation, negative_slope, needs[4])
        -> (dx, dw, db, dresidual), each (0,) unless asked for

z = act(bn(conv(x, w) + b) + residual), or act(conv(x, w) + b + residual); activation is a
name of cnn.kernels.activation_math.ACTIVATIONS. z, the conv output y and pre (kept for the
backwards) are (N, C_out, OH, OW) in conv2d's layout (channels_last when x or w suggests it);
the residual has z's shape, any layout, and its gradient is laid out as it is; mean/invstd
and var, the unbiased batch variance, (C_out,) fp32 (fp64 for fp64). The backwards have no
derivative registered: double backward through a fused op raises torch's "no autograd formula"
error (the unfused layers support it).

Training is batch norm's pattern (cnn/ops/batch_norm.py): conv_bn_act2d_train is functional,
its autograd registered, and the running statistics and the counter are updated apart by
cnn::batch_norm_update_stats from its mean and var. ``conv_bn_act2d_train_and_update`` calls
the two as one (a StatefulOp: eager, the same three launches as the op alone).
"""
import torch

from ..kernels import conv_bn_act as launchers
from ..kernels.activation_math import NONE, activation_code
from ..kernels.batch_norm.forward import stats_dtype
from ..kernels.runtime import output_memory_format
from .batch_norm import batch_norm_update_stats
from .conv2d import declared, geometry, weight_grad_format
from .registry import LibraryOp, StatefulOp, none_unless, placeholder


def _output_format(input, weight):
    """torch's act(batch_norm(conv2d(x, w)) + r) is laid out as its conv2d output:
    channels_last when x or w suggests it (a channels_last weight with NCHW input too)."""
    return output_memory_format(input, weight)


def _output(input, weight, g):
    return input.new_empty(g.output_shape).contiguous(memory_format=_output_format(input, weight))


def _stats(input, g):
    return input.new_empty((g.out_channels,), dtype=stats_dtype(input.dtype))


def _act(activation: str, negative_slope: float) -> dict:
    return dict(activation=activation_code(activation), negative_slope=negative_slope)


# ----------------------------------------------------------------------- conv_bn_act2d

def _train(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           bn_weight: torch.Tensor | None, bn_bias: torch.Tensor | None,
           residual: torch.Tensor | None, stride: list[int], padding: list[int],
           dilation: list[int], groups: int, eps: float, activation: str,
           negative_slope: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                           torch.Tensor, torch.Tensor]:
    return _train_and_update(input, weight, bias, bn_weight, bn_bias, residual, stride,
                             padding, dilation, groups, eps, activation, negative_slope)


def _train_and_update(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      bn_weight: torch.Tensor | None, bn_bias: torch.Tensor | None,
                      residual: torch.Tensor | None, stride: list[int], padding: list[int],
                      dilation: list[int], groups: int, eps: float, activation: str,
                      negative_slope: float, running_mean: torch.Tensor | None = None,
                      running_var: torch.Tensor | None = None,
                      num_batches_tracked: torch.Tensor | None = None,
                      momentum: float | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                 torch.Tensor]:
    """conv_bn_act2d_train, and batch_norm_update_stats inside its launches: finalize updates
    the running stats, normalize advances the counter (the eager path; no state: the op)."""
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    n, _, oh, ow = g.output_shape
    if n * oh * ow == 0:
        # Empty batch: no statistics, running stats left as they are (torch's behaviour).
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        zeros = input.new_zeros((g.out_channels,), dtype=stats_dtype(input.dtype))
        return _output(input, weight, g), _output(input, weight, g), zeros, zeros.clone(), \
            zeros.clone()
    z, y, mean, invstd, var = launchers.conv_bn_act_train_forward(
        input, weight, bias, g, bn_weight, bn_bias, running_mean, running_var,
        num_batches_tracked, momentum, eps, residual=residual,
        **_act(activation, negative_slope))
    fmt = _output_format(input, weight)
    return declared(z, fmt), declared(y, fmt), mean, invstd, var


def _train_fake(input, weight, bias, bn_weight, bn_bias, residual, stride, padding, dilation,
                groups, eps, activation, negative_slope):
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    return _output(input, weight, g), _output(input, weight, g), _stats(input, g), \
        _stats(input, g), _stats(input, g)


def _train_setup(ctx, inputs, output):
    (input, weight, bias, bn_weight, bn_bias, residual, *ctx.args, ctx.eps, ctx.activation,
     ctx.slope) = inputs
    _, y, mean, invstd, var = output
    ctx.mark_non_differentiable(y, mean, invstd, var)
    ctx.training = True
    ctx.save_for_backward(input, weight, bias, bn_weight, bn_bias, mean, invstd, y, residual)


def _update_args(op_args, state, output):
    """batch_norm_update_stats's arguments after conv_bn_act2d_train(*op_args) gave output:
    the count is the values per channel of the conv output, N * OH * OW."""
    y, mean, var = output[1], output[2], output[4]
    return (*state[:3], mean, var, y.numel() // max(y.shape[1], 1), state[3])


def _eval(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
          bn_weight: torch.Tensor | None, bn_bias: torch.Tensor | None,
          running_mean: torch.Tensor, running_var: torch.Tensor, residual: torch.Tensor | None,
          stride: list[int], padding: list[int], dilation: list[int], groups: int, eps: float,
          activation: str, negative_slope: float) -> torch.Tensor:
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    z = launchers.conv_bn_act_eval_forward(input, weight, bias, g, bn_weight, bn_bias,
                                           running_mean, running_var, eps, residual=residual,
                                           **_act(activation, negative_slope))
    return declared(z, _output_format(input, weight))


def _eval_fake(input, weight, bias, bn_weight, bn_bias, running_mean, running_var, residual,
               stride, padding, dilation, groups, eps, activation, negative_slope):
    return _output(input, weight,
                   geometry(input.shape, weight.shape, stride, padding, dilation, groups))


def _eval_setup(ctx, inputs, output):
    (input, weight, bias, bn_weight, bn_bias, running_mean, running_var, residual, *ctx.args,
     ctx.eps, ctx.activation, ctx.slope) = inputs
    ctx.training = False
    # No activation kept: the backward recomputes the conv output, so z may be modified in
    # place afterwards (a following nn.ReLU(inplace=True) does).
    ctx.save_for_backward(input, weight, bias, bn_weight, bn_bias, running_mean, running_var,
                          None, residual)


def _forward_backward(ctx, grad_z, *_):
    input, weight, bias, bn_weight, bn_bias, mean, scale, y, residual = ctx.saved_tensors
    residual_at = 5 if ctx.training else 7  # the residual's position among the inputs
    needs = [*ctx.needs_input_grad[:5], ctx.needs_input_grad[residual_at]]
    needs[2] = needs[2] and bias is not None
    needs[3] = needs[3] and bn_weight is not None
    needs[4] = needs[4] and bn_bias is not None
    needs[5] = needs[5] and residual is not None
    grads = [None] * len(ctx.needs_input_grad)
    if any(needs):
        dx, dw, db, dgamma, dbeta, dres = conv_bn_act2d_backward(
            grad_z, input, weight, bias, bn_weight, bn_bias, mean, scale, y, residual,
            *ctx.args, ctx.eps, ctx.training, ctx.activation, ctx.slope, needs)
        grads[:5] = (none_unless(n, t) for n, t in zip(needs[:5], (dx, dw, db, dgamma, dbeta),
                                                       strict=True))
        grads[residual_at] = none_unless(needs[5], dres)
    return tuple(grads)


def _backward(grad_z: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None, bn_weight: torch.Tensor | None,
              bn_bias: torch.Tensor | None, mean: torch.Tensor, scale: torch.Tensor,
              y: torch.Tensor | None, residual: torch.Tensor | None, stride: list[int],
              padding: list[int], dilation: list[int], groups: int, eps: float, training: bool,
              activation: str, negative_slope: float,
              needs: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor, torch.Tensor, torch.Tensor]:
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    dx, dw, db, dgamma, dbeta, dres = launchers.conv_bn_act_backward(
        grad_z, input, weight, bias, g, bn_weight, bn_bias, mean, scale, eps=eps,
        training=training, y=y, residual=residual, needs=tuple(needs),
        **_act(activation, negative_slope))
    if dx is not None:
        dx = declared(dx, output_memory_format(input))
    if dw is not None:
        dw = declared(dw, weight_grad_format(weight))
    return tuple(t if t is not None else placeholder(input)
                 for t in (dx, dw, db, dgamma, dbeta, dres))


def _input_grads_fake(input, weight, params, residual, needs):
    """The backwards' gradients as their fakes: dx, dw, the (C,) parameters', dresidual."""
    dx = input.new_empty(input.shape).contiguous(memory_format=output_memory_format(input))
    dw = weight.new_empty(weight.shape).contiguous(memory_format=weight_grad_format(weight))
    out = (dx, dw, *(p.new_empty(p.shape) if p is not None else None for p in params),
           torch.empty_like(residual) if residual is not None else None)
    return tuple(t if n and t is not None else placeholder(input)
                 for n, t in zip(needs, out, strict=True))


def _backward_fake(grad_z, input, weight, bias, bn_weight, bn_bias, mean, scale, y, residual,
                   stride, padding, dilation, groups, eps, training, activation,
                   negative_slope, needs):
    return _input_grads_fake(input, weight, (bias, bn_weight, bn_bias), residual, needs)


conv_bn_act2d_train = LibraryOp("conv_bn_act2d_train", _train, _train_fake,
                                setup_context=_train_setup, backward=_forward_backward)
# (x, w, b, gamma, beta, residual, stride, padding, dilation, groups, eps, activation,
#  negative_slope, running_mean, running_var, num_batches_tracked, momentum)
conv_bn_act2d_train_and_update = StatefulOp(conv_bn_act2d_train, batch_norm_update_stats,
                                            _train_and_update, _update_args)
conv_bn_act2d_eval = LibraryOp("conv_bn_act2d_eval", _eval, _eval_fake,
                               setup_context=_eval_setup, backward=_forward_backward)
conv_bn_act2d_backward = LibraryOp("conv_bn_act2d_backward", _backward, _backward_fake)
conv_bn_act2d_train.register_autocast(cast=3)
conv_bn_act2d_eval.register_autocast(cast=3)


# ------------------------------------------------------------------------- conv_act2d

def _conv_act(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              residual: torch.Tensor | None, stride: list[int], padding: list[int],
              dilation: list[int], groups: int, activation: str, negative_slope: float,
              keep_pre: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    fmt = _output_format(input, weight)
    out = launchers.conv_act_forward(input, weight, bias, g, residual=residual,
                                     keep_pre=keep_pre, **_act(activation, negative_slope))
    if keep_pre:
        return declared(out[0], fmt), declared(out[1], fmt)
    return declared(out, fmt), placeholder(input)


def _conv_act_fake(input, weight, bias, residual, stride, padding, dilation, groups,
                   activation, negative_slope, keep_pre):
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    return _output(input, weight, g), \
        _output(input, weight, g) if keep_pre else placeholder(input)


def _conv_act_setup(ctx, inputs, output):
    input, weight, bias, residual, *ctx.args, ctx.activation, ctx.slope, keep_pre = inputs
    _, pre = output
    ctx.mark_non_differentiable(pre)
    ctx.save_for_backward(input, weight, bias, pre if keep_pre else None, residual)


def _conv_act_forward_backward(ctx, grad_z, *_):
    input, weight, bias, pre, residual = ctx.saved_tensors
    needs = [*ctx.needs_input_grad[:4]]
    needs[2] = needs[2] and bias is not None
    needs[3] = needs[3] and residual is not None
    rest = (None,) * 7
    if not any(needs):
        return (None,) * 4 + rest
    if pre is None and activation_code(ctx.activation) != NONE:
        raise RuntimeError("conv_act2d: the forward ran with keep_pre=False, so it kept nothing "
                           "to differentiate through the activation")
    grads = conv_act2d_backward(grad_z, input, weight, bias, pre, residual, *ctx.args,
                                ctx.activation, ctx.slope, needs)
    return (*(none_unless(n, t) for n, t in zip(needs, grads, strict=True)), *rest)


def _conv_act_backward(grad_z: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor | None, pre: torch.Tensor | None,
                       residual: torch.Tensor | None, stride: list[int], padding: list[int],
                       dilation: list[int], groups: int, activation: str, negative_slope: float,
                       needs: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                   torch.Tensor]:
    g = geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    dx, dw, db, dres = launchers.conv_act_backward(
        grad_z, input, weight, bias, g, pre, residual=residual, needs=tuple(needs),
        **_act(activation, negative_slope))
    if dx is not None:
        dx = declared(dx, output_memory_format(input))
    if dw is not None:
        dw = declared(dw, weight_grad_format(weight))
    return tuple(t if t is not None else placeholder(input) for t in (dx, dw, db, dres))


def _conv_act_backward_fake(grad_z, input, weight, bias, pre, residual, stride, padding,
                            dilation, groups, activation, negative_slope, needs):
    return _input_grads_fake(input, weight, (bias,), residual, needs)


conv_act2d = LibraryOp("conv_act2d", _conv_act, _conv_act_fake, setup_context=_conv_act_setup,
                       backward=_conv_act_forward_backward)
conv_act2d_backward = LibraryOp("conv_act2d_backward", _conv_act_backward,
                                _conv_act_backward_fake)
conv_act2d.register_autocast(cast=4)  # x, w, b and the residual

__all__ = ["conv_bn_act2d_train", "conv_bn_act2d_train_and_update", "conv_bn_act2d_eval",
           "conv_bn_act2d_backward", "conv_act2d", "conv_act2d_backward"]
