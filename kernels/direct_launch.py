"""Launching a planned kernel without Triton's per-call binding (compiled kernels only).

``kernel.run(*args, grid=..., warmup=False, **constexprs)`` binds every argument to the
kernel's signature, specializes each one (a pointer's dtype and 16-byte alignment, an int's
width, divisibility by 16 and equality to 1), builds the compiled kernel's cache key from them,
looks it up, checks the globals the kernel read, and only then calls the compiled kernel's
launcher: 4.5-11 us of host time per launch (published), more than a small layer's kernel
takes on a GPU. A launcher plan (pooling, batch norm, ReLU) fixes everything after the
per-call arguments, so most of that work gives the same answer on every call of the plan.

``DirectLaunch(kernel, fixed, options)`` is ``kernel.run(*args, *fixed, **options)`` for one
plan: per call it reads only what can change there, the current device and the per-call
arguments (each tensor's dtype and whether its pointer is 16-byte aligned, each int as it
is), and a combination it has seen calls the compiled kernel's launcher directly, with the
argument list Triton's own binder produced for that combination's first call. That key is
finer than Triton's specialization, so a direct call always runs the kernel Triton would
pick (the globals check is skipped: these kernels read no global that can change). Anything
else takes ``kernel.run``: the first call of a combination, the interpreter, a launch hook (a
profiler's) set in Triton's knobs, a Triton whose internals differ from what this reads (then
that combination stays on ``kernel.run``), and ``CNN_DIRECT_LAUNCH=0``.

Only a GPU can show the saving and confirm the launches: the GPU check's configs stage runs
the pooling, batch-norm and ReLU ops three times, the third through their direct launches,
against torch.
"""
import os
from typing import NamedTuple

import torch

from .runtime import INTERPRET

try:
    from triton import knobs
    from triton.runtime.driver import driver
except ImportError:  # a Triton before knobs (3.4): kernel.run always
    knobs = driver = None

# Compiled kernels on a GPU (compiled without one, the static tools capture kernel.run's calls).
ENABLED = not INTERPRET and knobs is not None and torch.cuda.is_available() and \
    os.environ.get("CNN_DIRECT_LAUNCH", "1") not in ("0", "")
MAX_COMBINATIONS = 16  # per plan: (device, dtypes, alignments, per-call ints) seen
_KERNEL_RUN = object()  # a combination that stays on kernel.run


def _active(hook) -> bool:
    """Whether a launch hook does something: set, and not an empty HookChain (Triton 3.5+
    keeps one, empty, where earlier Tritons keep None)."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _hooks_set() -> bool:
    """Whether a launch hook (a profiler's) wants launch metadata: kernel.run builds it."""
    runtime = knobs.runtime
    return _active(runtime.launch_enter_hook) or _active(runtime.launch_exit_hook)


def call_key(args) -> tuple:
    """What may change Triton's specialization between two calls of one plan: each tensor's
    dtype and pointer alignment (16 bytes), each other argument as it is."""
    return tuple((a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, torch.Tensor) else a
                 for a in args)


class DirectLaunch:
    """``kernel.run(*args, *fixed, **options)`` for one plan, the binding done once per
    combination of per-call arguments (see the module docstring). kernel: a JITFunction
    whose parameters after the per-call and fixed arguments are all constexprs; options: the
    keyword arguments of ``.run`` (grid, a tuple, and warmup among them)."""

    __slots__ = ("kernel", "fixed", "options", "grid", "launchers")

    def __init__(self, kernel, fixed: tuple, options: dict):
        grid = options["grid"]
        self.kernel, self.fixed, self.options = kernel, tuple(fixed), options
        self.grid = (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)
        self.launchers = {}

    def __call__(self, *args):
        active = driver.active
        device = active.get_current_device()
        key = (device, call_key(args))
        launcher = self.launchers.get(key)
        if launcher is None or launcher is _KERNEL_RUN or _hooks_set():
            return self._kernel_run(key, launcher is None, args)
        run, function, metadata, tail = launcher
        # The compiled kernel's launcher, as kernel.run calls it: grid, stream, function,
        # metadata, launch metadata and the two hooks (none active: _hooks_set), then every
        # bound argument.
        run(*self.grid, active.get_current_stream(device), function, metadata, None, None, None,
            *args, *tail)

    def _kernel_run(self, key, learn: bool, args):
        compiled = self.kernel.run(*args, *self.fixed, **self.options)
        if learn and not _hooks_set():
            if len(self.launchers) >= MAX_COMBINATIONS:
                self.launchers.clear()
            self.launchers[key] = self._launcher(compiled, key[0], args)
        return compiled

    def _launcher(self, compiled, device, args):
        """(launcher, function, packed metadata, the arguments after the per-call ones) of
        the compiled kernel that kernel.run just launched, from Triton's own binder; or
        _KERNEL_RUN where this Triton is not laid out as expected."""
        try:
            binder = self.kernel.device_caches[device][-1]
            kwargs = {k: v for k, v in self.options.items() if k not in ("grid", "warmup")}
            bound = tuple(binder(*args, *self.fixed, **kwargs)[0].values())
            params = self.kernel.params
            given = len(args) + len(self.fixed)
            if len(bound) != len(params) or \
                    any(a is not b for a, b in zip(args, bound[:len(args)], strict=True)) or \
                    not all(p.is_constexpr for p in params[given:]):
                return _KERNEL_RUN
            if compiled.function is None:
                return _KERNEL_RUN
            return compiled.run, compiled.function, compiled.packed_metadata, bound[len(args):]
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            return _KERNEL_RUN


class Launch(NamedTuple):
    """One planned launch: kernel, its arguments after the per-call ones, the keyword
    arguments of its ``.run``, and its DirectLaunch where kernels are compiled (else None).
    Calling it with the per-call arguments launches."""

    kernel: object
    args: tuple
    options: dict
    direct: DirectLaunch | None

    def __call__(self, *per_call):
        if self.direct is not None:
            return self.direct(*per_call)
        return self.kernel.run(*per_call, *self.args, **self.options)


def plan_launch(kernel, args, options: dict) -> Launch:
    """The Launch of kernel with these arguments after the per-call ones and these keyword
    arguments of ``.run`` (grid and warmup among them)."""
    args = tuple(args)
    return Launch(kernel, args, options, direct_or_none(kernel, args, options))


def direct_or_none(kernel, fixed: tuple, options: dict):
    """A DirectLaunch of this plan where kernels are compiled and direct launches are on,
    else None (the caller runs ``kernel.run`` itself)."""
    if not ENABLED or options.get("grid") is None:
        return None
    return DirectLaunch(kernel, fixed, options)


__all__ = ["ENABLED", "DirectLaunch", "Launch", "plan_launch", "direct_or_none", "call_key",
           "MAX_COMBINATIONS"]
