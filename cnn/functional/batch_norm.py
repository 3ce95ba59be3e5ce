"""batch_norm shaped like torch.nn.functional: arguments checked here, then
``torch.ops.cnn.batch_norm_train`` (with ``batch_norm_update_stats`` where there are running
statistics or a counter to update) / ``batch_norm_eval`` (cnn/ops/batch_norm.py).

The kernels see every input as (N, C, H, W) through a view: (N, C) as (1, C, N, 1),
(N, C, L) as (N, C, L, 1), higher ranks as (N, C, prod(rest), 1).
"""
import torch

from ..kernels.runtime import FLOAT_DTYPES, check_device
from ..ops import batch_norm as ops
from ..ops.registry import tracing

_PLAIN = (torch.Tensor, torch.nn.Parameter)

_TYPE_NAMES = {
    torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float32: "Float",
    torch.float64: "Double", torch.int8: "Char", torch.uint8: "Byte", torch.int16: "Short",
    torch.int32: "Int", torch.int64: "Long", torch.bool: "Bool",
}


def type_name(dtype: torch.dtype) -> str:
    """torch's scalar type name ('Float', 'Half', ...) as its error messages spell it."""
    return _TYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def verify_batch_size(shape) -> None:
    """torch's rule: training statistics need more than one value per channel."""
    values = shape[0]
    for s in shape[2:]:
        values *= s
    if values == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size "
            f"{torch.Size(shape)}")


def verify_eps(eps, training: bool) -> None:
    """torch's rule: eps > 0 in training (the batch variance may be 0), eps >= 0 otherwise."""
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")


def check_batch_norm_args(shape, dtype, device, running_mean, running_var, weight, bias,
                          training: bool, *, eps, momentum=0.1,
                          num_batches_tracked=None, dense=True) -> bool:
    """torch.nn.functional.batch_norm's checks, with its exception types and messages and in
    its order, for an input of the given shape, dtype and device; before any launch.
    momentum may be None only with a num_batches_tracked counter (the module's cumulative
    average); torch's functional refuses it. dense: whether the input is contiguous in some
    memory format (training, torch first takes the mean of any other input, which refuses
    non-float dtypes).

    Returns False for an empty input, which torch returns as it is (a clone) without its
    remaining checks; True otherwise.
    """
    if training:
        verify_batch_size(shape)
    verify_eps(eps, training)
    if momentum is None and num_batches_tracked is None:
        raise TypeError("batch_norm(): argument 'momentum' must be float, not NoneType")
    if 0 in shape:
        for t in (weight, bias):  # torch's empty path computes input * weight[0] + bias[0]
            if t is not None and t.numel() == 0:
                raise IndexError(f"select(): index 0 out of range for tensor of size "
                                 f"{list(t.shape)} at dimension 0")
            if t is not None and t.device != device:
                raise RuntimeError(f"Tensor on device {t.device} is not on the expected "
                                   f"device {device}!")
        return False
    channels = shape[1] if len(shape) > 1 else 0
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None:
            if t.numel() != channels:
                raise RuntimeError(f"{name} should contain {channels} elements not {t.numel()}")
        elif not training:
            raise RuntimeError(f"{name} must be defined in evaluation mode")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.numel() != channels:
            raise RuntimeError(f"{name} should contain {channels} elements not {t.numel()}")
    stats = [t for t in (running_mean, running_var) if t is not None and training]
    for t in stats:
        if any(st == 0 and n > 1 for n, st in zip(t.shape, t.stride(), strict=True)):
            # torch writes every channel into the one shared element; refused here instead.
            raise RuntimeError(
                "unsupported operation: more than one element of the written-to tensor "
                "refers to a single memory location. Please clone() the tensor before "
                "performing the operation.")
    if training and not dense and not (dtype.is_floating_point or dtype.is_complex):
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either "
                           f"a floating point or complex dtype. Got: {type_name(dtype)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(
            "running_mean and running_var must either both be None or neither be None")
    if len(shape) < 2:
        raise IndexError(f"Dimension out of range (expected to be in range of [-1, 0], but got "
                         f"1): batch_norm expects an input of at least 2 dimensions (N, C, ...)"
                         f", got size {list(shape)}")
    if dtype not in FLOAT_DTYPES:
        raise NotImplementedError(f"\"batch_norm\" not implemented for '{type_name(dtype)}'")
    given = [t for t in (weight, bias, running_mean, running_var) if t is not None]
    for t in given:
        if t.device != device:
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but found at least two "
                f"devices, {device} and {t.device}!")
    # Parameters share one dtype: the input's, or float32 under a half/bfloat16 input.
    mixed = dtype in (torch.float16, torch.bfloat16) and bool(given) and \
        all(t.dtype == torch.float32 for t in given)
    for t in given:
        if t.dtype != dtype and not mixed:
            raise RuntimeError(
                f"expected scalar type {type_name(dtype)} but found {type_name(t.dtype)}")
    return True


def flat_param(t):
    """A (C,) unit-stride view of a parameter (a copy only if it has none)."""
    if t is None or (t.dim() == 1 and t.stride(0) == 1):
        return t
    return t.reshape(-1).contiguous()


def empty_batch_norm(input, weight, bias, num_batches_tracked):
    """torch's result for an empty input, whatever the other arguments: a copy, scaled and
    shifted by the first weight and bias (so its dtype and autograd graph are torch's)."""
    out = input.clone()
    if weight is not None:
        out = out * weight[0]
    if bias is not None:
        out = out + bias[0]
    if num_batches_tracked is not None:
        num_batches_tracked.add_(1)
    return out


def tracked_batch_norm(input, running_mean, running_var, weight, bias, training, momentum,
                       eps, num_batches_tracked=None):
    """batch_norm with the module's extras (cnn.BatchNorm2d's forward): num_batches_tracked
    (0-dim int64) is advanced by one (eager: inside the last launch), and momentum=None means
    the cumulative average over it."""
    key = _eager_key(input, running_mean, running_var, weight, bias, training, eps,
                     momentum, num_batches_tracked)
    entry = None if key is None else ops.EAGER_CALLS.get(key)
    if entry:
        # Checked before, and a plain training call: straight to the lean eager Function.
        return ops.batch_norm_train_eager(
            input, weight, bias, eps, (running_mean, running_var, num_batches_tracked, momentum),
            entry)
    if not check_batch_norm_args(input.shape, input.dtype, input.device, running_mean,
                                 running_var, weight, bias, training, eps=eps,
                                 momentum=momentum, num_batches_tracked=num_batches_tracked,
                                 dense=ops.is_dense(input)):
        return empty_batch_norm(input, weight, bias, num_batches_tracked)
    update = training and running_mean is not None
    check_device(input, running_mean, running_var, weight, bias)
    if key is not None:
        # The entry: the signature's plan where the lean Function may run, else False.
        lean = training and _lean(input, running_mean, running_var, weight, bias,
                                  num_batches_tracked)
        ops.EAGER_CALLS.put(key, lean and ops.BatchNormPlan(
            ops.lean_formats(input.shape, input.stride(), None)))
    # torch lays the output out by the arguments as given (a strided parameter can change
    # it); the ops see unit-stride copies of strided parameters.
    fmt = ops.output_format(input, weight, bias, running_mean, running_var)
    weight, bias = flat_param(weight), flat_param(bias)
    if not update and not training:
        # Evaluation only reads the running stats: any layout will do once flattened.
        running_mean, running_var = flat_param(running_mean), flat_param(running_var)
        out = ops.batch_norm_eval(input, weight, bias, running_mean, running_var, float(eps))
        return _in_format(out, fmt, input, weight, bias, running_mean, running_var)
    if not update and num_batches_tracked is None:
        out, _, _, _ = ops.batch_norm_train(input, weight, bias, float(eps))
        return _in_format(out, fmt, input, weight, bias)
    # Training updates the running stats in place; strided ones go through a copy.
    stats = [running_mean, running_var] if update else [None, None]
    flat = [flat_param(t) for t in stats]
    out, _, _, _ = ops.batch_norm_train_and_update(
        input, weight, bias, float(eps), *flat, num_batches_tracked,
        None if momentum is None else float(momentum))
    for original, used in zip(stats, flat, strict=True):
        if used is not original:
            original.copy_(used.view_as(original))
    return _in_format(out, fmt, input, weight, bias)


def _tensor_key(t):
    return None if t is None else (type(t), t.shape, t.stride(), t.dtype, t.device)


def _eager_key(input, running_mean, running_var, weight, bias, training, eps, momentum,
               num_batches_tracked) -> tuple | None:
    """The EAGER_CALLS key of an eager call: everything the checks, the choice of path and
    the planned launches read (each tensor's type, shape, strides, dtype and device;
    training; eps; momentum; the launchers' knobs). None for a tensor subclass input, under
    tracing (sizes may be symbolic, and the library ops must see the call), or for options
    not of the exact types the key can tell apart (as a key True == 1 and 1 == 1.0)."""
    if type(input) is not torch.Tensor or type(training) is not bool or tracing():
        return None
    if type(eps) is not float or not (momentum is None or type(momentum) is float):
        return None
    return (input.shape, input.stride(), input.dtype, input.device, training, eps, momentum,
            _tensor_key(running_mean), _tensor_key(running_var), _tensor_key(weight),
            _tensor_key(bias), _tensor_key(num_batches_tracked), ops.knobs())


def _lean(input, *tensors) -> bool:
    """Whether a checked, non-empty training call may take batch_norm_train_eager: plain
    tensors only, every (C,) one unit-stride (no copies, no change of output layout), the
    state either both running stats or none."""
    running_mean, running_var = tensors[:2]
    return all(t is None or (type(t) in _PLAIN and (t.dim() != 1 or t.stride(0) == 1))
               for t in tensors) and (running_mean is None) == (running_var is None) \
        and all(t is None or t.dim() == 1 for t in tensors[:4])


def _in_format(out, fmt, input, *flat_params):
    """out in torch's layout ``fmt``: a copy only where flattening a strided parameter made
    the op pick another (an ambiguous input, dense in two formats)."""
    if ops.output_format(input, *flat_params) == fmt:
        return out
    return out.clone(memory_format=fmt)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Drop-in for ``torch.nn.functional.batch_norm``, running the Triton kernels.

    input: (N, C, H, W) (also (N, C), (N, C, L), (N, C, D, ...)), NCHW or channels_last or
    any strides; running_mean, running_var, weight, bias: (C,) or None. training: normalise
    with the batch statistics and, when given, update the running stats in place as
    (1 - momentum) * running + momentum * batch (unbiased variance); otherwise normalise
    with the running stats. Returns a tensor shaped like input, in its layout (4D).
    """
    key = _eager_key(input, running_mean, running_var, weight, bias, training, eps,
                     momentum, None)
    entry = None if key is None else ops.EAGER_CALLS.get(key)
    if entry:  # tracked_batch_norm's first branch, one call less on the hot path
        return ops.batch_norm_train_eager(
            input, weight, bias, eps, (running_mean, running_var, None, momentum), entry)
    return tracked_batch_norm(input, running_mean, running_var, weight, bias, training,
                              momentum, eps)


__all__ = ["batch_norm", "tracked_batch_norm", "check_batch_norm_args", "verify_batch_size",
           "verify_eps", "flat_param", "empty_batch_norm"]
