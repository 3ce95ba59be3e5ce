"""Max and average pooling (window and adaptive) as ``torch.ops.cnn`` ops over the launchers
in cnn.kernels.pool2d.max_pool2d and cnn.kernels.pool2d.avg_pool2d. Inputs are (N, C, H, W); the
functional API validates arguments and adds the batch dim of unbatched input.

    cnn::max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, indices) -> (y, idx)
    cnn::adaptive_max_pool2d(x, output_size, indices) -> (y, idx)
    cnn::max_pool2d_backward(dy, idx, input_size, channels_last, <geometry>) -> dx
    cnn::avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor) -> y
    cnn::adaptive_avg_pool2d(x, output_size) -> y
    cnn::avg_pool2d_backward(dy, input_size, channels_last, <geometry>, ...) -> dx

idx is int64 (flat h*W + w per plane), or (0,) when not asked for. <geometry> is
(kernel, stride, padding, dilation, ceil_mode, adaptive); an adaptive one takes its output size
from dy. Both backwards are linear in dy, so their derivatives are:
    max: d(dx)/d(dy) = ggx gathered at idx (each output reads the input it chose)
    avg: d(dx)/d(dy) = the forward pooling of ggx (avg pooling's backward is its adjoint)
"""
from dataclasses import dataclass

import torch

from ..kernels.host_cache import SignatureCache
from ..kernels.pool2d import avg_pool2d as avg_launchers
from ..kernels.pool2d import max_pool2d as max_launchers
from ..kernels.pool2d.geometry import (
    ElementwiseLaunch,
    Pool2dGeometry,
    adaptive_geometry,
    knobs,
    window_geometry,
)
from ..kernels.runtime import is_channels_last, output_memory_format
from .registry import LibraryOp, direct_apply, is_traced, placeholder, plain_backward


def window(input_shape, kernel, stride, padding, dilation, ceil_mode) -> Pool2dGeometry:
    """The geometry of a window pooling (for the fakes: sizes may be symbolic)."""
    return Pool2dGeometry.window(tuple(input_shape), tuple(kernel), tuple(stride),
                                 tuple(padding), tuple(dilation), ceil_mode)


def cached_window(input_shape, kernel, stride, padding, dilation, ceil_mode) -> Pool2dGeometry:
    """``window`` of a real call's concrete sizes, built once per signature."""
    return window_geometry(tuple(input_shape), tuple(kernel), tuple(stride), tuple(padding),
                           tuple(dilation), ceil_mode)


def backward_geometry(input_size, grad_output, kernel, stride, padding, dilation, ceil_mode,
                      adaptive) -> Pool2dGeometry:
    if adaptive:
        return adaptive_geometry(tuple(input_size), tuple(grad_output.shape[-2:]))
    return cached_window(input_size, kernel, stride, padding, dilation, ceil_mode)


def without_autograd(op: LibraryOp, grad_output: torch.Tensor, *args):
    """A forward's backward calls its backward op through autograd only when the backward
    itself is differentiated (create_graph: grad mode is on) or traced; else the launcher's
    call alone (``op.impl``), which is all a plain backward needs."""
    if torch.is_grad_enabled() or is_traced((grad_output, *args)):
        return op(grad_output, *args)
    return op.impl(grad_output, *args)


def _empty(like: torch.Tensor, shape, memory_format, dtype=None) -> torch.Tensor:
    return like.new_empty(shape, dtype=dtype).contiguous(memory_format=memory_format)


def _like(grad_output: torch.Tensor, channels_last: bool) -> dict:
    """How dx is allocated: the forward input's dtype (dy's), device and layout."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return dict(dtype=grad_output.dtype, device=grad_output.device, memory_format=fmt)


def _forward_setup(ctx, inputs, backward_args) -> None:
    """What a forward (window or adaptive, either kind) keeps for its backward: the input's
    size and layout, the backward op's geometry arguments, and a None for every input after
    the first (none of them has a gradient)."""
    ctx.input_size, ctx.channels_last = list(inputs[0].shape), is_channels_last(inputs[0])
    ctx.backward_args = backward_args
    ctx.no_grads = (None,) * (len(inputs) - 1)


def _pool_ops(kind: str, window, adaptive, forward_backward, backward):
    """One pooling kind's three ops: ``{kind}_pool2d`` and ``adaptive_{kind}_pool2d``
    (window, adaptive: (impl, fake, setup_context)), both differentiated by forward_backward,
    which calls the third, ``{kind}_pool2d_backward`` (backward: (impl, fake, setup_context,
    its own backward))."""
    def forward_op(name, impl, fake, setup_context):
        return LibraryOp(name, impl, fake, setup_context=setup_context, backward=forward_backward)

    impl, fake, setup_context, backward_backward = backward
    return (forward_op(f"{kind}_pool2d", *window),
            forward_op(f"adaptive_{kind}_pool2d", *adaptive),
            LibraryOp(f"{kind}_pool2d_backward", impl, fake, setup_context=setup_context,
                      backward=backward_backward))


# ------------------------------------------------------------------------------- max pool

def _max_outputs(input, g, indices):
    y, idx = max_launchers.max_pool2d_forward(input, g, store_indices=indices)
    return y, idx if indices else placeholder(y).long()


def _max_fake(input, g, indices):
    fmt = output_memory_format(input)
    idx = _empty(input, g.output_shape, fmt, torch.int64) if indices else \
        input.new_empty((0,), dtype=torch.int64)
    return _empty(input, g.output_shape, fmt), idx


def _max_pool2d(input: torch.Tensor, kernel_size: list[int], stride: list[int],
                padding: list[int], dilation: list[int], ceil_mode: bool,
                indices: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _max_outputs(input, cached_window(input.shape, kernel_size, stride, padding, dilation,
                                      ceil_mode), indices)


def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode, indices):
    return _max_fake(input, window(input.shape, kernel_size, stride, padding, dilation,
                                   ceil_mode), indices)


def _adaptive_max_pool2d(input: torch.Tensor, output_size: list[int],
                         indices: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _max_outputs(input, adaptive_geometry(tuple(input.shape), tuple(output_size)),
                        indices)


def _adaptive_max_pool2d_fake(input, output_size, indices):
    return _max_fake(input, Pool2dGeometry.adaptive_pool(tuple(input.shape), tuple(output_size)),
                     indices)


def _max_setup(ctx, inputs, output, geometry_args):
    _, indices = output
    ctx.mark_non_differentiable(indices)
    _forward_setup(ctx, inputs, geometry_args)
    ctx.save_for_backward(indices)


def _max_pool2d_setup(ctx, inputs, output):
    _, kernel, stride, padding, dilation, ceil_mode, _ = inputs
    _max_setup(ctx, inputs, output, (kernel, stride, padding, dilation, ceil_mode, False))


def _adaptive_max_pool2d_setup(ctx, inputs, output):
    _max_setup(ctx, inputs, output, ([1, 1], [1, 1], [0, 0], [1, 1], False, True))


def _max_forward_backward(ctx, grad_output, grad_indices):
    (indices,) = ctx.saved_tensors
    dx = without_autograd(max_pool2d_backward, grad_output, indices, ctx.input_size,
                          ctx.channels_last, *ctx.backward_args)
    return (dx, *ctx.no_grads)


def _max_backward_op(grad_output: torch.Tensor, indices: torch.Tensor, input_size: list[int],
                     channels_last: bool, kernel_size: list[int], stride: list[int],
                     padding: list[int], dilation: list[int], ceil_mode: bool,
                     adaptive: bool) -> torch.Tensor:
    g = backward_geometry(input_size, grad_output, kernel_size, stride, padding, dilation,
                          ceil_mode, adaptive)
    return max_launchers.max_pool2d_backward(grad_output, indices, g,
                                             _like(grad_output, channels_last))


def _max_backward_fake(grad_output, indices, input_size, channels_last, *geometry):
    like = _like(grad_output, channels_last)
    return _empty(grad_output, input_size, like["memory_format"])


def _max_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _max_backward_backward(ctx, ggx):
    """dx[i] = sum of dy[o] with idx[o] == i, so d(dx)/d(dy) reads ggx at idx."""
    (indices,) = ctx.saved_tensors
    n, c = indices.shape[:2]
    gg_dy = ggx.reshape(n, c, -1).gather(2, indices.reshape(n, c, -1)).view(indices.shape)
    return (gg_dy,) + (None,) * 9


max_pool2d, adaptive_max_pool2d, max_pool2d_backward = _pool_ops(
    "max", (_max_pool2d, _max_pool2d_fake, _max_pool2d_setup),
    (_adaptive_max_pool2d, _adaptive_max_pool2d_fake, _adaptive_max_pool2d_setup),
    _max_forward_backward,
    (_max_backward_op, _max_backward_fake, _max_backward_setup, _max_backward_backward))


# ------------------------------------------------------------------------------- avg pool

def _avg_fake(input, g):
    return _empty(input, g.output_shape, output_memory_format(input))


def _avg_pool2d(input: torch.Tensor, kernel_size: list[int], stride: list[int],
                padding: list[int], ceil_mode: bool, count_include_pad: bool,
                divisor_override: int | None) -> torch.Tensor:
    g = cached_window(input.shape, kernel_size, stride, padding, (1, 1), ceil_mode)
    return avg_launchers.avg_pool2d_forward(input, g, count_include_pad, divisor_override)


def _avg_pool2d_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override):
    return _avg_fake(input, window(input.shape, kernel_size, stride, padding, (1, 1),
                                   ceil_mode))


def _adaptive_avg_pool2d(input: torch.Tensor, output_size: list[int]) -> torch.Tensor:
    g = adaptive_geometry(tuple(input.shape), tuple(output_size))
    return avg_launchers.avg_pool2d_forward(input, g, True, None)


def _adaptive_avg_pool2d_fake(input, output_size):
    return _avg_fake(input, Pool2dGeometry.adaptive_pool(tuple(input.shape), tuple(output_size)))


def _avg_pool2d_setup(ctx, inputs, output):
    _, kernel, stride, padding, ceil_mode, count_include_pad, divisor = inputs
    _forward_setup(ctx, inputs,
                   (kernel, stride, padding, ceil_mode, False, count_include_pad, divisor))


def _adaptive_avg_pool2d_setup(ctx, inputs, output):
    _forward_setup(ctx, inputs, ([1, 1], [1, 1], [0, 0], False, True, True, None))


def _avg_forward_backward(ctx, grad_output):
    dx = without_autograd(avg_pool2d_backward, grad_output, ctx.input_size,
                          ctx.channels_last, *ctx.backward_args)
    return (dx, *ctx.no_grads)


def _avg_backward_op(grad_output: torch.Tensor, input_size: list[int], channels_last: bool,
                     kernel_size: list[int], stride: list[int], padding: list[int],
                     ceil_mode: bool, adaptive: bool, count_include_pad: bool,
                     divisor_override: int | None) -> torch.Tensor:
    g = backward_geometry(input_size, grad_output, kernel_size, stride, padding, (1, 1),
                          ceil_mode, adaptive)
    return avg_launchers.avg_pool2d_backward(grad_output, g, _like(grad_output, channels_last),
                                             count_include_pad, divisor_override)


def _avg_backward_fake(grad_output, input_size, channels_last, *rest):
    return _empty(grad_output, input_size, _like(grad_output, channels_last)["memory_format"])


def _avg_backward_setup(ctx, inputs, output):
    _, _, _, kernel, stride, padding, ceil_mode, adaptive, count_include_pad, divisor = inputs
    ctx.output_size = list(inputs[0].shape[-2:])
    ctx.forward_args = (kernel, stride, padding, ceil_mode, adaptive, count_include_pad,
                        divisor)


def _avg_backward_backward(ctx, ggx):
    """avg pooling's backward is the adjoint of its forward: d(dx)/d(dy) pools ggx."""
    kernel, stride, padding, ceil_mode, adaptive, count_include_pad, divisor = ctx.forward_args
    if adaptive:
        gg_dy = adaptive_avg_pool2d(ggx, ctx.output_size)
    else:
        gg_dy = avg_pool2d(ggx, kernel, stride, padding, ceil_mode, count_include_pad, divisor)
    return (gg_dy,) + (None,) * 9


avg_pool2d, adaptive_avg_pool2d, avg_pool2d_backward = _pool_ops(
    "avg", (_avg_pool2d, _avg_pool2d_fake, _avg_pool2d_setup),
    (_adaptive_avg_pool2d, _adaptive_avg_pool2d_fake, _adaptive_avg_pool2d_setup),
    _avg_forward_backward,
    (_avg_backward_op, _avg_backward_fake, _avg_backward_setup, _avg_backward_backward))

# ------------------------------------------------------------------------------- eager calls
# A plain eager call (no tracing, no torch.func, a plain tensor, options of exact types: the
# functional checks) takes an autograd.Function of two arguments, the input and a PoolPlan
# that cnn.functional caches per call signature, so a repeated call looks nothing up again:
# the same launchers and backward ops as above, without the per-call geometry and launch
# arithmetic, and with the fewest arguments for autograd to wrap.


# cnn.functional's plain eager pooling calls, by signature -> (unbatched, PoolPlan).
EAGER_CALLS = SignatureCache("cnn.ops.pool2d.EAGER_CALLS")


@dataclass(frozen=True)
class PoolPlan:
    """One eager pooling signature's launches: forward, backward (dx in the input's layout),
    and the backward op's arguments after dy (and the indices), for a backward that is
    itself differentiated or traced."""

    forward: ElementwiseLaunch
    backward: ElementwiseLaunch
    backward_args: tuple
    store_indices: bool = False  # max pooling: the forward writes the indices too,
    return_indices: bool = False  # and returns them


def _layout(input: torch.Tensor):
    channels_last = is_channels_last(input)
    return channels_last, torch.channels_last if channels_last else torch.contiguous_format


def plan_max_pool2d(input: torch.Tensor, geometry: Pool2dGeometry, ceil_mode: bool,
                    store_indices: bool, return_indices: bool) -> PoolPlan:
    """The PoolPlan of max pooling (window or adaptive geometry) of input (N, C, H, W)."""
    g = geometry
    channels_last, fmt = _layout(input)
    window_args = ([1, 1], [1, 1], [0, 0], [1, 1], False) if g.adaptive else (
        list(g.kernel), list(g.stride), list(g.padding), list(g.dilation), ceil_mode)
    return PoolPlan(
        max_launchers.forward_plan(g, input.stride(), input.dtype, store_indices, knobs()),
        max_launchers.backward_plan(g, fmt, input.dtype, knobs()),
        (list(input.shape), channels_last, *window_args, g.adaptive), store_indices,
        return_indices)


def plan_avg_pool2d(input: torch.Tensor, geometry: Pool2dGeometry, ceil_mode: bool,
                    count_include_pad: bool, divisor_override) -> PoolPlan:
    """The PoolPlan of average pooling (window or adaptive geometry) of input (N, C, H, W)."""
    g = geometry
    channels_last, fmt = _layout(input)
    window_args = ([1, 1], [1, 1], [0, 0], False) if g.adaptive else (
        list(g.kernel), list(g.stride), list(g.padding), ceil_mode)
    return PoolPlan(
        avg_launchers.forward_plan(g, input.stride(), input.dtype, count_include_pad,
                                   divisor_override, knobs()),
        avg_launchers.backward_plan(g, fmt, input.dtype, count_include_pad, divisor_override,
                                    knobs()),
        (list(input.shape), channels_last, *window_args, g.adaptive, count_include_pad,
         divisor_override))


class MaxPool2dEager(torch.autograd.Function):
    """max_pool2d (and adaptive_max_pool2d) of a plain eager call: (input, PoolPlan) -> y, or
    (y, indices) when the plan returns them (a second output costs autograd work per call)."""

    @staticmethod
    def forward(ctx, input, plan):
        y, indices = max_launchers.launch_forward(input, plan.forward, plan.store_indices)
        ctx.plan = plan
        if plan.return_indices:
            ctx.mark_non_differentiable(indices)
            # The indices' gradient is never read: no zeros tensor made for it per backward.
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(indices)
            return y, indices
        if indices is not None:
            ctx.save_for_backward(indices)  # kept for the backward only, returned to no one
        return y

    @staticmethod
    def backward(ctx, grad_output, *grad_indices):
        if grad_output is None:  # unmaterialised: y had no gradient (gradcheck tries that)
            return None, None
        (indices,) = ctx.saved_tensors
        plan = ctx.plan
        if plain_backward():
            return max_launchers.launch_backward(grad_output, indices, plan.backward), None
        return max_pool2d_backward(grad_output, indices, *plan.backward_args), None


class AvgPool2dEager(torch.autograd.Function):
    """avg_pool2d (and adaptive_avg_pool2d) of a plain eager call: (input, PoolPlan) -> y."""

    @staticmethod
    def forward(ctx, input, plan):
        ctx.plan = plan
        return avg_launchers.launch_forward(input, plan.forward)

    @staticmethod
    def backward(ctx, grad_output):
        plan = ctx.plan
        if plain_backward():
            return avg_launchers.launch_backward(grad_output, plan.backward), None
        return avg_pool2d_backward(grad_output, *plan.backward_args), None


max_pool2d_eager = direct_apply(MaxPool2dEager)
avg_pool2d_eager = direct_apply(AvgPool2dEager)

__all__ = ["max_pool2d", "adaptive_max_pool2d", "max_pool2d_backward", "avg_pool2d",
           "adaptive_avg_pool2d", "avg_pool2d_backward", "EAGER_CALLS", "PoolPlan",
           "plan_max_pool2d", "plan_avg_pool2d", "MaxPool2dEager", "AvgPool2dEager",
           "max_pool2d_eager", "avg_pool2d_eager"]
