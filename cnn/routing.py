"""Route torch's own convolution, pooling, batch norm and ReLU calls to the Triton kernels.

    import cnn
    with cnn.enabled() as report:          # this thread only, restored on exit (also on raise)
        loss = model(x).sum()              # torch.nn.Conv2d, F.max_pool2d, ... run on ours
        loss.backward()                    # gradients from our autograd.Functions
    print(report)                          # per op: calls routed, fallbacks and why

    cnn.enable(); ...; cnn.disable()       # the same, for the current thread, without a block
    cnn.routing_report()                   # every thread's counts since the process started

How: a ``torch.overrides.TorchFunctionMode``. torch calls its ``__torch_function__`` for every
torch function and Tensor method called while the mode is on the current thread's mode
stack; the mode looks the function up in a table (``ROUTES``) and, for the ones we implement
(torch.conv1d, conv2d, conv_transpose1d, conv_transpose2d; F.max_pool2d(_with_indices),
torch.max_pool2d, avg_pool2d, F/torch adaptive avg and max pooling 2-D; F.batch_norm,
torch.batch_norm; F.relu, torch.relu, Tensor.relu and their in-place forms; F.relu6,
F.hardtanh(x, 0, 6) (nn.ReLU6's call), F.leaky_relu, F.silu, F.hardswish, F.gelu and
F.leaky_relu_, F.hardtanh_), calls
``cnn.functional``'s function instead, so forward and backward run on our kernels. torch's
nn modules reach these functions (nn.Conv2d -> torch.conv2d, nn.BatchNorm2d -> F.batch_norm,
nn.ReLU -> F.relu, nn.MaxPool2d -> F.max_pool2d, nn.AvgPool2d -> torch._C._nn.avg_pool2d, ...),
so they are routed too. torch pops the mode while its handler runs, so our functional's own
torch calls do not come back to it.

Why a function mode and not an aten override (``torch.library.Library("aten", "IMPL")``, as
FlagGems does): the mode sees the call before autograd, so the gradient is our backward
rather than aten's derivative formula over our forward; it can be scoped to a block and undone
exactly; and ``torch.compile`` traces through it (the graph holds ``torch.ops.cnn.*``).
The price is that it is per thread (torch keeps mode stacks thread-local) and that every torch
call on the thread passes through a Python method while it is on.

Acceptance, without changing error behaviour: a routed call whose tensors are all on the
device our kernels run on (CUDA when compiled; CPU or CUDA under the interpreter, see
``cnn.kernels.runtime``) goes to ours. Where ours raises (an integer dtype to pooling, an
argument it refuses), torch's own op runs on the same arguments: it returns (a fallback,
counted with our exception's message as the reason) or raises its own error (counted as an
error with torch's message, and re-raised). A function in ``FALLBACKS`` (conv3d, 1-D and 3-D
pooling, ...) always runs torch's op and is counted. Nothing falls back uncounted. Our
functional checks every argument before it launches a kernel, so a refused call has no side
effect (no running-stat update, no in-place write) before torch's op runs.

Cost per call, measured on the CPU (torch 2.13, 2 cores shared with other work, median of
20000 calls on a 4-element tensor, with and without the mode in the same run; two runs):
a torch call that is not routed pays one ``__torch_function__`` dispatch, a dict lookup and
the call: ``torch.add`` 3.6 us under the mode against 1.8 us without (second run, busier:
5.7 against 3.1). A routed call pays the dispatch, a device check and one locked count on top
of our functional's own cost: F.relu routed to a function that does nothing took 4.9 us
against torch's own F.relu 1.9 us (busier run: 8.2-9.1 against 3.1). So about 2-3 us per
torch call on the thread while the mode is on, 3-6 us per routed call.
``test_routing.py::test_cost_per_call`` prints these numbers.

Thread safety: torch keeps function modes per thread, so ``enabled()``, ``enable()`` and
``disable()`` change the current thread's routing only; another thread runs torch's ops unless
it enables routing itself. The backward of a routed call is our autograd.Function whichever
thread runs it (the autograd engine runs backward without function modes, so the mode does
not see backward's own calls: checked on the CPU). Counts are updated under one process-wide
lock, so threads with their own modes count correctly into their own reports and into
``routing_report()``. Under
``torch.compile`` the graph is traced through the mode (it holds ``torch.ops.cnn.*``) and
routed calls are not counted (a compiled graph runs no Python to count in).
"""
import contextlib
import sys
import threading
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from . import functional as ours
from . import kernels

# ---------------------------------------------------------------------------------------------
# What is routed: torch function -> (name in the report, our function taking the same args)


def _max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                             ceil_mode=False, return_indices=True):
    """F.max_pool2d_with_indices / torch._C._nn's form: (output, indices) whatever the flag."""
    return ours.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def _adaptive_max_pool2d_with_indices(input, output_size, return_indices=True):
    return ours.adaptive_max_pool2d(input, output_size, True)


def _batch_norm_torch_order(input, weight, bias, running_mean, running_var, training, momentum,
                            eps, cudnn_enabled=True):
    """torch.batch_norm's argument order (weight, bias before the running stats)."""
    return ours.batch_norm(input, running_mean, running_var, weight, bias, training, momentum,
                           eps)


def _relu_(input):
    return ours.relu(input, inplace=True)


def _hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """nn.ReLU6 calls F.hardtanh(x, 0, 6): that is relu6; other bounds are torch's."""
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    if (min_val, max_val) != (0.0, 6.0):
        raise NotImplementedError("cnn implements hardtanh only as relu6 (min_val=0, "
                                  "max_val=6)")
    return ours.relu6(input, inplace)


def _hardtanh_(input, min_val=-1.0, max_val=1.0):
    return _hardtanh(input, min_val, max_val, inplace=True)


def _leaky_relu_(input, negative_slope=0.01):
    return ours.leaky_relu(input, negative_slope, inplace=True)


ROUTES = {
    torch.conv1d: ("conv1d", ours.conv1d),
    torch.conv2d: ("conv2d", ours.conv2d),
    torch.conv_transpose1d: ("conv_transpose1d", ours.conv_transpose1d),
    torch.conv_transpose2d: ("conv_transpose2d", ours.conv_transpose2d),
    F.max_pool2d: ("max_pool2d", ours.max_pool2d),
    F.max_pool2d_with_indices: ("max_pool2d", _max_pool2d_with_indices),
    torch._C._nn.max_pool2d_with_indices: ("max_pool2d", _max_pool2d_with_indices),
    torch.max_pool2d: ("max_pool2d", ours.max_pool2d),
    torch._C._nn.avg_pool2d: ("avg_pool2d", ours.avg_pool2d),
    F.adaptive_avg_pool2d: ("adaptive_avg_pool2d", ours.adaptive_avg_pool2d),
    torch._C._nn.adaptive_avg_pool2d: ("adaptive_avg_pool2d", ours.adaptive_avg_pool2d),
    F.adaptive_max_pool2d: ("adaptive_max_pool2d", ours.adaptive_max_pool2d),
    F.adaptive_max_pool2d_with_indices: ("adaptive_max_pool2d",
                                         _adaptive_max_pool2d_with_indices),
    torch._C._nn.adaptive_max_pool2d: ("adaptive_max_pool2d", _adaptive_max_pool2d_with_indices),
    F.batch_norm: ("batch_norm", ours.batch_norm),
    torch.batch_norm: ("batch_norm", _batch_norm_torch_order),
    F.relu: ("relu", ours.relu),
    torch.relu: ("relu", ours.relu),
    torch.Tensor.relu: ("relu", ours.relu),
    torch.relu_: ("relu", _relu_),
    torch.Tensor.relu_: ("relu", _relu_),
    F.relu6: ("relu6", ours.relu6),
    F.hardtanh: ("hardtanh", _hardtanh),
    F.hardtanh_: ("hardtanh", _hardtanh_),
    F.leaky_relu: ("leaky_relu", ours.leaky_relu),
    F.leaky_relu_: ("leaky_relu", _leaky_relu_),
    F.silu: ("silu", ours.silu),
    F.hardswish: ("hardswish", ours.hardswish),
    F.gelu: ("gelu", ours.gelu),
}

# Torch's neighbours of the routed ops that we do not implement: always torch's, counted.
FALLBACKS = {
    torch.conv3d: "conv3d",
    torch.conv_transpose3d: "conv_transpose3d",
    F.max_pool1d: "max_pool1d",
    F.max_pool1d_with_indices: "max_pool1d",
    torch.max_pool1d: "max_pool1d",
    F.max_pool3d: "max_pool3d",
    F.max_pool3d_with_indices: "max_pool3d",
    torch.max_pool3d: "max_pool3d",
    torch.avg_pool1d: "avg_pool1d",
    torch._C._nn.avg_pool3d: "avg_pool3d",
    F.adaptive_avg_pool1d: "adaptive_avg_pool1d",
    torch.adaptive_avg_pool1d: "adaptive_avg_pool1d",
    F.adaptive_avg_pool3d: "adaptive_avg_pool3d",
    F.adaptive_max_pool1d: "adaptive_max_pool1d",
    F.adaptive_max_pool1d_with_indices: "adaptive_max_pool1d",
    F.adaptive_max_pool3d: "adaptive_max_pool3d",
    F.adaptive_max_pool3d_with_indices: "adaptive_max_pool3d",
}
NOT_IMPLEMENTED = "not implemented by cnn"

# Device types whose tensors our kernels take (cnn.kernels.runtime.check_device's rule).
DEVICE_TYPES = ("cpu", "cuda") if kernels.runtime.INTERPRET else ("cuda",)
_TAKES_CPU = kernels.runtime.INTERPRET


def _foreign_device(args, kwargs):
    """The first device of a tensor argument that our kernels do not run on, or None.
    (``is_cuda``/``is_cpu`` rather than ``device.type``: no device object per tensor.)"""
    for value in (*args, *kwargs.values()) if kwargs else args:
        if isinstance(value, torch.Tensor) and not (value.is_cuda or _TAKES_CPU and value.is_cpu):
            return value.device
    return None


# ---------------------------------------------------------------------------------------------
# Counting


class RoutingReport:
    """Per op: calls that ran on our kernels (``routed``), calls that ran torch's op
    (``fallbacks``: reason -> count) and calls that raised torch's error (``errors``:
    message -> count). Thread-safe (one lock for every report); ``snapshot()`` gives plain
    dicts."""

    def __init__(self):
        self._routed = defaultdict(int)
        self._fallbacks = defaultdict(lambda: defaultdict(int))
        self._errors = defaultdict(lambda: defaultdict(int))

    def reset(self) -> None:
        with _LOCK:
            self._routed.clear()
            self._fallbacks.clear()
            self._errors.clear()

    def snapshot(self) -> dict:
        """{op: {"routed": n, "fallbacks": {reason: n}, "errors": {message: n}}}."""
        with _LOCK:
            ops = sorted({*self._routed, *self._fallbacks, *self._errors})
            return {op: {"routed": self._routed.get(op, 0),
                         "fallbacks": dict(self._fallbacks.get(op, {})),
                         "errors": dict(self._errors.get(op, {}))} for op in ops}

    def routed(self, op: str) -> int:
        return self.snapshot().get(op, {}).get("routed", 0)

    def fallbacks(self, op: str) -> dict:
        return self.snapshot().get(op, {}).get("fallbacks", {})

    def __str__(self) -> str:
        lines = ["cnn routing: op, calls on cnn's kernels, calls on torch's (reason)"]
        for op, counts in self.snapshot().items():
            fell = sum(counts["fallbacks"].values())
            raised = sum(counts["errors"].values())
            lines.append(f"  {op}: {counts['routed']} routed, {fell} fallback, {raised} raised")
            lines += [f"    {n} x fallback: {reason}" for reason, n in counts["fallbacks"].items()]
            lines += [f"    {n} x raised: {message}" for message, n in counts["errors"].items()]
        return "\n".join(lines)

    __repr__ = __str__


_LOCK = threading.Lock()
_TOTAL = RoutingReport()


def routing_report() -> RoutingReport:
    """The counts of every routing mode in this process (all threads) since it started or
    since ``routing_report().reset()``."""
    return _TOTAL


def _reason(error: BaseException) -> str:
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}"


# ---------------------------------------------------------------------------------------------
# The mode


class RoutingMode(TorchFunctionMode):
    """Sends the torch functions in ``ROUTES`` to ``cnn.functional`` (see the module's
    docstring); every other torch function runs unchanged. ``report`` counts this mode's
    calls (and ``routing_report()`` every mode's)."""

    def __init__(self, report: RoutingReport | None = None):
        super().__init__()
        self.report = RoutingReport() if report is None else report

    def _count(self, kind: str, op: str, detail: str = "") -> None:
        if torch.compiler.is_compiling():  # dynamo traces no lock; a graph counts nothing
            return
        with _LOCK:
            for report in (self.report, _TOTAL):
                if kind == "routed":
                    report._routed[op] += 1
                elif kind == "fallback":
                    report._fallbacks[op][detail] += 1
                else:
                    report._errors[op][detail] += 1

    def _torch(self, func, op: str, reason: str, args, kwargs):
        try:
            out = func(*args, **kwargs)
        except Exception as error:
            self._count("error", op, _reason(error))
            raise
        self._count("fallback", op, reason)
        return out

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = {} if kwargs is None else kwargs
        route = ROUTES.get(func)
        if route is None:
            op = FALLBACKS.get(func)
            if op is None:
                return func(*args, **kwargs)
            return self._torch(func, op, NOT_IMPLEMENTED, args, kwargs)
        op, implementation = route
        device = _foreign_device(args, kwargs)
        if device is not None:
            return self._torch(func, op, f"tensor on {device.type}, cnn's kernels run on "
                               f"{'/'.join(DEVICE_TYPES)}", args, kwargs)
        try:
            out = implementation(*args, **kwargs)
        except Exception as error:
            return self._torch(func, op, _reason(error), args, kwargs)
        self._count("routed", op)
        return out


@contextlib.contextmanager
def enabled(report: bool = False):
    """Routes torch's conv/pool/batch-norm/ReLU calls to cnn's kernels inside the block, on
    the current thread only; yields the block's ``RoutingReport``. Nests; on exit (also when
    the body raises) torch's mode stack is as it was. ``report=True`` also prints the
    block's report to stderr on exit."""
    mode = RoutingMode()
    try:
        with mode:
            yield mode.report
    finally:
        if report:
            print(mode.report, file=sys.stderr)


_ENABLED = threading.local()


def enable() -> RoutingReport:
    """Routes torch's calls to cnn's kernels on the current thread until ``disable()`` (other
    threads are not affected). Calling it again while enabled does nothing. Returns the
    report of this enabling."""
    mode = getattr(_ENABLED, "mode", None)
    if mode is None:
        mode = RoutingMode()
        mode.__enter__()
        _ENABLED.mode = mode
    return mode.report


def disable() -> None:
    """Undoes ``enable()`` on the current thread (nothing if it is not enabled). Raises
    RuntimeError if a mode entered after ``enable()`` is still active (leave that first)."""
    mode = getattr(_ENABLED, "mode", None)
    if mode is None:
        return
    if torch.overrides._get_current_function_mode() is not mode:
        raise RuntimeError("cnn.disable(): a torch function mode entered after cnn.enable() is "
                           "still active on this thread; leave it first")
    mode.__exit__(None, None, None)
    _ENABLED.mode = None


__all__ = ["enable", "disable", "enabled", "routing_report", "RoutingMode", "RoutingReport",
           "ROUTES", "FALLBACKS"]
