"""Batch norm as ``torch.ops.cnn`` ops over the launchers in cnn.kernels.batch_norm_*.

    cnn::batch_norm_train(x, w?, b?, eps) -> (y, mean, invstd, var)
    cnn::batch_norm_update_stats(running_mean!?, running_var!?, num_batches_tracked!?, mean,
                                 var, count, momentum?) -> ()
    cnn::batch_norm_eval(x, w?, b?, running_mean, running_var, eps) -> y
    cnn::batch_norm_backward(dy, x, w?, b?, mean, scale, training, eps, need x/w/b)
        -> (dx, dw, db), each (0,) unless asked for

A training step is batch_norm_train, functional and differentiable (its autograd registered,
so anything that reaches the op differentiates it), then batch_norm_update_stats, which
updates the running statistics and the counter in place from the batch's mean and unbiased
variance var (declared mutations, functionalized by torch.compile and export; no autograd);
count is the number of values per channel (0: an empty batch, which only counts the batch).
``batch_norm_train_and_update`` calls the two as one (a StatefulOp: eager, the same three
launches as the op alone). x is any (N, C, ...), seen by the kernels through as_4d; mean,
invstd and var are (C,) fp32 (fp64 for fp64).
batch_norm_backward has no derivative registered: differentiating it (double backward)
raises torch's "no autograd formula was registered" error.
"""
import torch

from ..kernels.batch_norm import backward as backward_launchers
from ..kernels.batch_norm import forward as forward_launchers
from ..kernels.batch_norm import running as running_launchers
from ..kernels.batch_norm.forward import stats_dtype
from ..kernels.host_cache import SignatureCache, host_cached
from .registry import (
    LibraryOp,
    StatefulOp,
    direct_apply,
    none_unless,
    placeholder,
    plain_backward,
    tracing,
)


def as_4d(t: torch.Tensor) -> torch.Tensor:
    """The (N, C, H, W) view the kernels read: (N, C) -> (1, C, N, 1), (N, C, L) -> (N, C, L, 1),
    (N, C, D, ...) -> (N, C, D*..., 1) (a copy only when those dims do not merge)."""
    if t.dim() == 4:
        return t
    if t.dim() == 2:
        return t.t().unsqueeze(0).unsqueeze(-1)
    return t.flatten(2).unsqueeze(-1)


# ------------------------------------------------------------------------ output layouts
# torch's CPU batch norm (aten/src/ATen/native/Normalization.cpp) picks its outputs' memory
# format from the strides, and resolves the ambiguous cases (size-1 dims, where contiguous and
# channels_last strides can both hold) its own way; these mirror it.

def _channels_last_like(t: torch.Tensor, order) -> bool:
    """c10's is_channels_last_strides_2d/3d (what suggest_memory_format reads): channels
    innermost in stride order; ``order`` is C, then the dims from the last to N."""
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return False
    smallest = 0
    for d in order:
        if sizes[d] == 0 or strides[d] < smallest:
            return False
        if d == 0 and smallest == strides[1]:  # N111-like: torch falls back to NCHW
            return False
        smallest = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True


def suggest_memory_format(t: torch.Tensor) -> torch.memory_format:
    """torch's ``Tensor.suggest_memory_format()``."""
    if t.dim() == 4 and _channels_last_like(t, (1, 3, 2, 0)):
        return torch.channels_last
    if t.dim() == 5 and _channels_last_like(t, (1, 4, 3, 2, 0)):
        return torch.channels_last_3d
    return torch.contiguous_format


def is_dense(t: torch.Tensor) -> bool:
    """Normalization.cpp's is_contiguous: contiguous in one of the three formats."""
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last) or \
        t.is_contiguous(memory_format=torch.channels_last_3d)


def _dense_format(t: torch.Tensor) -> torch.memory_format:
    """Normalization.cpp's suggest_memory_format_contig, for a _dense t: its own format, where
    suggest_memory_format may say contiguous for a channels_last tensor (pytorch#63224)."""
    if t.is_contiguous():
        return torch.contiguous_format
    if t.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.channels_last


def output_format(input: torch.Tensor, *params) -> torch.memory_format:
    """The forward's layout, as batch_norm_cpu picks it: input's own format when input and
    every parameter and running stat given (``params``, None for absent ones) are dense,
    else input's suggested format."""
    dense = is_dense(input) and all(p is None or p.is_contiguous() for p in params)
    return _dense_format(input) if dense else suggest_memory_format(input)


def empty_output(input: torch.Tensor, *params) -> torch.Tensor:
    """The forward's y (canonical strides of ``output_format``)."""
    return torch.empty_like(input, memory_format=output_format(input, *params))


def empty_grad_input(input: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """The backward's dx, as batch_norm_backward_cpu_template allocates it."""
    if not tracing():  # sizes and strides are ints: by a plan of the strides
        fmt = grad_input_format(input.shape, input.stride(), grad_output.stride())
    else:
        fmt = _grad_input_format(input, grad_output)
    return torch.empty_like(input, memory_format=fmt)


def _grad_input_format(input: torch.Tensor, grad_output: torch.Tensor) -> torch.memory_format:
    fmt = suggest_memory_format(input)
    if is_dense(input) and is_dense(grad_output) and fmt == suggest_memory_format(grad_output):
        fmt = _dense_format(input)
    return fmt


@host_cached()
def grad_input_format(shape: torch.Size, input_strides: tuple,
                      grad_strides: tuple) -> torch.memory_format:
    """``empty_grad_input``'s memory format for tensors of this shape and these strides."""
    return _grad_input_format(torch.empty_strided(shape, input_strides, device="meta"),
                              torch.empty_strided(shape, grad_strides, device="meta"))


@host_cached()
def lean_output_format(shape: torch.Size, strides: tuple) -> torch.memory_format:
    """``output_format`` of an input of this shape and these strides with contiguous
    parameters (batch_norm_train_eager's calls)."""
    return output_format(torch.empty_strided(shape, strides, device="meta"))


def _preserved(shape: torch.Size, strides: tuple, fmt: torch.memory_format):
    """fmt, or None where ``empty_like(t)`` (preserve_format, the cheaper call) already lays
    out a t of this shape and these strides so."""
    t = torch.empty_strided(shape, strides, device="meta")
    same = torch.empty_like(t).stride() == torch.empty_like(t, memory_format=fmt).stride()
    return None if same else fmt


@host_cached()
def lean_formats(shape: torch.Size, strides: tuple, grad_strides: tuple | None):
    """The lean Function's memory formats for an input of this shape and these strides, each
    None where empty_like's default gives it: y's (``lean_output_format``) when grad_strides
    is None, else dx's for a gradient of those strides (``grad_input_format``)."""
    if grad_strides is None:
        return _preserved(shape, strides, lean_output_format(shape, strides))
    return _preserved(shape, strides, grad_input_format(shape, strides, grad_strides))


def _stats(input: torch.Tensor) -> torch.Tensor:
    return torch.empty((input.shape[1],), device=input.device, dtype=stats_dtype(input.dtype))


def _no_stats(input: torch.Tensor) -> torch.Tensor:
    """An empty batch's mean, invstd and var: zeros (never read; deterministic for comparisons)."""
    return input.new_zeros((input.shape[1],), dtype=stats_dtype(input.dtype))


# ------------------------------------------------------------------------------- training

def _train(input: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
           eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _train_and_update(input, weight, bias, eps)


def _train_and_update(input: torch.Tensor, weight: torch.Tensor | None,
                      bias: torch.Tensor | None, eps: float,
                      running_mean: torch.Tensor | None = None,
                      running_var: torch.Tensor | None = None,
                      num_batches_tracked: torch.Tensor | None = None,
                      momentum: float | None = None, out_format=None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """batch_norm_train, and batch_norm_update_stats inside its launches: finalize updates the
    running stats, normalize advances the counter (the eager path; no state: the op).
    out_format: y's memory format when the caller planned it (``lean_output_format``); such
    a caller (batch_norm_train_eager) takes y, mean and invstd only, so var is None then."""
    if out_format is None:
        out = empty_output(input, weight, bias)
    else:
        out = torch.empty_like(input, memory_format=out_format)
    if input.numel() == 0:
        # Nothing to normalise and no statistics: torch leaves the running stats.
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        return out, _no_stats(input), _no_stats(input), _no_stats(input)
    x4 = as_4d(input)
    var = _stats(input) if out_format is None else None
    mean, invstd = forward_launchers.batch_norm_train_forward(
        x4, as_4d(out), weight, bias, running_mean, running_var, num_batches_tracked, momentum,
        eps, var_out=var)
    return out, mean, invstd, var


def _train_fake(input, weight, bias, eps):
    return empty_output(input, weight, bias), _stats(input), _stats(input), _stats(input)


def _train_setup(ctx, inputs, output):
    input, weight, bias, eps = inputs
    _, mean, invstd, var = output
    ctx.mark_non_differentiable(mean, invstd, var)
    ctx.eps, ctx.training = eps, True
    ctx.save_for_backward(input, weight, bias, mean, invstd)


def _update_stats(running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                  num_batches_tracked: torch.Tensor | None, mean: torch.Tensor,
                  var: torch.Tensor, count: int, momentum: float | None) -> None:
    if count == 0:
        running_mean = running_var = None  # an empty batch: torch only counts it
    running_launchers.batch_norm_update_stats(running_mean, running_var, num_batches_tracked,
                                              mean=mean, var=var, momentum=momentum)


def _update_stats_fake(running_mean, running_var, num_batches_tracked, mean, var, count,
                       momentum):
    return None


def _update_args(op_args, state, output):
    """batch_norm_update_stats's arguments after batch_norm_train(*op_args) gave output."""
    input = op_args[0]
    _, mean, _, var = output
    return (*state[:3], mean, var, input.numel() // max(input.shape[1], 1), state[3])


# ----------------------------------------------------------------------------- evaluation

def _eval(input: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
          running_mean: torch.Tensor, running_var: torch.Tensor, eps: float) -> torch.Tensor:
    out = empty_output(input, weight, bias, running_mean, running_var)
    forward_launchers.batch_norm_normalize(as_4d(input), as_4d(out), running_mean, running_var,
                                           weight, bias, eps=eps, from_var=True)
    return out


def _eval_fake(input, weight, bias, running_mean, running_var, eps):
    return empty_output(input, weight, bias, running_mean, running_var)


def _eval_setup(ctx, inputs, output):
    input, weight, bias, running_mean, running_var, eps = inputs
    ctx.eps, ctx.training = eps, False
    ctx.save_for_backward(input, weight, bias, running_mean, running_var)


# ------------------------------------------------------------------------------- backward

def _forward_backward(ctx, grad_output, *_):
    """Backward of both forwards: (dx, dw, db, then None for every other argument)."""
    input, weight, bias, mean, scale = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_w, need_b = need_w and weight is not None, need_b and bias is not None
    backward = _backward if plain_backward() else batch_norm_backward  # op: traced, or 2nd
    dx, dw, db = backward(grad_output, input, weight, bias, mean, scale, ctx.training, ctx.eps,
                          need_x, need_w, need_b)
    rest = (None,) * (1 if ctx.training else 3)  # eps; the running stats and eps
    return (none_unless(need_x, dx), none_unless(need_w, dw), none_unless(need_b, db), *rest)


def _backward(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor | None,
              bias: torch.Tensor | None, mean: torch.Tensor, scale: torch.Tensor,
              training: bool, eps: float, need_input: bool, need_weight: bool,
              need_bias: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scale is invstd (training) or the running variance (evaluation)."""
    x4, dy4 = as_4d(input), as_4d(grad_output)
    if training and input.numel() and (need_input or need_weight or need_bias):
        dx = empty_grad_input(input, grad_output) if need_input else None
        dw, db = backward_launchers.batch_norm_backward_training(
            dy4, x4, as_4d(dx) if need_input else None, mean, scale, weight, bias, eps=eps,
            need_weight=need_weight, need_bias=need_bias)
        return (dx if need_input else placeholder(input),
                dw if need_weight else placeholder(input), db if need_bias else placeholder(input))
    sums = dw = db = None
    if (training and need_input) or need_weight or need_bias:
        partial = backward_launchers.batch_norm_backward_reduce(
            dy4, x4, mean, scale, weight, bias, eps=eps, from_var=not training)
        sums, dw, db = backward_launchers.batch_norm_backward_sums(
            partial, weight, bias, need_weight=need_weight, need_bias=need_bias)
    dx = None
    if need_input:
        dx = empty_grad_input(input, grad_output)
        backward_launchers.batch_norm_backward_input(
            dy4, x4, as_4d(dx), mean, scale, weight, bias, sums, eps=eps,
            from_var=not training, training=training)
    return (dx if need_input else placeholder(input), dw if need_weight else placeholder(input),
            db if need_bias else placeholder(input))


def _backward_fake(grad_output, input, weight, bias, mean, scale, training, eps, need_input,
                   need_weight, need_bias):
    dx = empty_grad_input(input, grad_output) if need_input else placeholder(input)
    dw = weight.new_empty(weight.shape) if need_weight else placeholder(input)
    db = bias.new_empty(bias.shape) if need_bias else placeholder(input)
    return dx, dw, db


batch_norm_train = LibraryOp("batch_norm_train", _train, _train_fake,
                             setup_context=_train_setup, backward=_forward_backward)
batch_norm_update_stats = LibraryOp(
    "batch_norm_update_stats", _update_stats, _update_stats_fake,
    mutates_args=("running_mean", "running_var", "num_batches_tracked"))
# (x, w, b, eps, running_mean, running_var, num_batches_tracked, momentum)
batch_norm_train_and_update = StatefulOp(batch_norm_train, batch_norm_update_stats,
                                         _train_and_update, _update_args)
batch_norm_eval = LibraryOp("batch_norm_eval", _eval, _eval_fake, setup_context=_eval_setup,
                            backward=_forward_backward)
batch_norm_backward = LibraryOp("batch_norm_backward", _backward, _backward_fake)


# ------------------------------------------------------------------------ plain eager calls

# cnn.functional's checked eager calls, by signature (every argument's type, shape, strides,
# dtype and device, the options the checks and the launches read) -> the BatchNormPlan of a
# call that may take batch_norm_train_eager, else False (see cnn.functional.batch_norm).
EAGER_CALLS = SignatureCache("cnn.ops.batch_norm.EAGER_CALLS")
knobs = forward_launchers.knobs  # the launchers' settings: part of every signature


class BatchNormPlan:
    """One eager training signature's launches, planned by the first call that needs each:
    y's memory format (None where empty_like's default gives it), the forward's launch
    arguments (``forward_launches``), and in ``backward``, per (dy's strides, which
    gradients), the backward's: (dx's memory format or None, its launch arguments). A
    repeated call looks nothing up but the backward's entry."""

    __slots__ = ("out_format", "forward", "backward")

    def __init__(self, out_format):
        self.out_format, self.forward, self.backward = out_format, None, {}

    def forward_launches(self, x4, out4, weight, bias, eps, state) -> tuple:
        """The forward's launch arguments, planned by the signature's first eager call."""
        if self.forward is None:
            running_mean, _, num_batches_tracked, momentum = state
            self.forward = forward_launchers.launches_for_train_forward(
                x4, out4, weight, bias, running_mean, num_batches_tracked, momentum, eps)
        return self.forward


class BatchNormTrainEager(torch.autograd.Function):
    """batch_norm_train_and_update's eager Function for a plain eager call (no tracing, no
    torch.func, plain tensors, unit-stride (C,) parameters and state: the functional checks),
    returning y alone: the same fused implementation and launches (the state updated inside
    them), and a backward that launches directly unless it is itself differentiated or traced
    (then batch_norm_backward, the op). Arguments: (input, weight, bias, eps, state, plan),
    state the tuple (running_mean, running_var, num_batches_tracked, momentum): no autograd
    input (never differentiated; one argument is cheaper to apply than four); plan: the
    signature's BatchNormPlan. input is not empty (the functional returns those itself)."""

    @staticmethod
    def forward(ctx, input, weight, bias, eps, state, plan):
        fmt = plan.out_format
        out = torch.empty_like(input) if fmt is None else torch.empty_like(input,
                                                                          memory_format=fmt)
        x4, out4 = (input, out) if input.dim() == 4 else (as_4d(input), as_4d(out))
        mean, invstd = forward_launchers.launch_train_forward(
            plan.forward_launches(x4, out4, weight, bias, eps, state), x4, out4, weight, bias,
            *state[:3])
        # mean and invstd are this Function's own intermediates (neither inputs nor outputs):
        # kept on ctx, not saved, which spares the saved-variable round trip in backward.
        # So is bias: the backward reads no value of it (beta only enters through an
        # activation, and this block has none), as torch's batch norm does not save it.
        ctx.eps, ctx.mean, ctx.invstd, ctx.bias, ctx.plan = eps, mean, invstd, bias, plan
        ctx.save_for_backward(input, weight)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        bias = ctx.bias
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        need_w, need_b = need_w and weight is not None, need_b and bias is not None
        if not plain_backward():  # differentiated or traced: the op
            dx, dw, db = batch_norm_backward(grad_output, input, weight, bias, ctx.mean,
                                             ctx.invstd, True, ctx.eps, need_x, need_w, need_b)
        elif need_x or need_w or need_b:
            # _backward's training launches, without its generic dispatch.
            plan = ctx.plan
            key = (grad_output.stride(), need_x, need_w, need_b)
            planned = plan.backward.get(key)
            if planned is not None:
                fmt = planned[0]
            elif need_x:  # dx's layout
                fmt = lean_formats(input.shape, input.stride(), grad_output.stride())
            else:
                fmt = None
            dx = dx4 = None
            if need_x:  # empty_grad_input, known not to be tracing
                dx = torch.empty_like(input) if fmt is None else \
                    torch.empty_like(input, memory_format=fmt)
            if input.dim() == 4:  # as_4d's views are the tensors themselves
                dy4, x4, dx4 = grad_output, input, dx
            else:
                dy4, x4 = as_4d(grad_output), as_4d(input)
                dx4 = as_4d(dx) if need_x else None
            if planned is None:
                launches = backward_launchers.launches_for_train_backward(
                    dy4, x4, dx4, weight, bias, ctx.eps, need_w, need_b)
                planned = plan.backward[key] = (fmt, launches)
            dw, db = backward_launchers.launch_train_backward(
                planned[1], dy4, x4, dx4, ctx.mean, ctx.invstd, weight, bias)
        else:
            dx = dw = db = None
        return (dx if need_x else None, dw if need_w else None, db if need_b else None,
                None, None, None)


batch_norm_train_eager = direct_apply(BatchNormTrainEager)

__all__ = ["batch_norm_train", "batch_norm_update_stats", "batch_norm_train_and_update",
           "batch_norm_eval", "batch_norm_backward", "as_4d", "empty_output", "output_format",
           "is_dense", "empty_grad_input", "suggest_memory_format", "EAGER_CALLS",
           "BatchNormTrainEager", "BatchNormPlan", "batch_norm_train_eager", "grad_input_format",
           "lean_output_format", "lean_formats", "knobs"]
