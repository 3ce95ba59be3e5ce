"""Verified tuning: before an autotuner may pick a config for a new key, each candidate's result
is compared with torch's own op on that launch's inputs, and a config that disagrees is dropped
for that key with one warning naming the kernel, the config and the key.

Why: an autotuner keeps the fastest config whether or not it is right, and a Triton miscompile
can hit one config only (a conv main loop flattened over (tap, channel block), as ours are, gave
wrong results at num_warps=8 in inductor's conv template, pytorch #173068). The interpreter
cannot see such a bug, so the check runs where the configs are compiled.

    @verified_autotune(configs=..., key=[...])        # triton.autotune's arguments
    @triton.jit
    def kernel(...): ...

    kernel[grid](**args, reference=functools.partial(build_reference, x, w, ...))

``reference`` is a zero-argument callable returning a ``Reference``; it is called only when a key
is tuned (a new key with more than one candidate left after pruning), so a launch pays for
building a partial and nothing else. Each candidate then runs once, with the autotuner's own
hooks around it (``reset_to_zero`` accumulators are zeroed first, ``restore_value`` arguments
restored after), its result is read before the restore and compared; afterwards accumulators
are zeroed again, as after a benchmark. The survivors are timed as usual. If none agrees,
``RuntimeError``: no config of that kernel computes this launch right.

Agreement is the tests' rule (the tolerance table below; tests/kernels/test_verified_tuning.py
holds it equal to the tests' own): within (rtol, atol = atol_frac * max(|reference|, 1)) of
torch's op evaluated in float64, or, where that fails, no farther from it than torch's own
result in the launch's dtype (an ill-conditioned input that torch misses as well).
``CNN_VERIFY_TUNING=0`` turns the check off (read when a key is tuned).
"""
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from triton.runtime.autotuner import Autotuner

VERIFY_ENV = "CNN_VERIFY_TUNING"

# (rtol, atol as a fraction of the reference's largest magnitude, at least 1), by the dtype of
# the launch's inputs; fp32 through TF32 dots gets TF32's.
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
TF32_TOLERANCE = (5e-3, 5e-3)


def verifying() -> bool:
    """Whether tuning checks its configs against torch (``CNN_VERIFY_TUNING`` is not 0)."""
    return os.environ.get(VERIFY_ENV, "1") != "0"


def tolerance(dtype: torch.dtype, tf32: bool = False) -> tuple:
    """(rtol, atol_frac) for results computed from inputs of ``dtype``."""
    return TF32_TOLERANCE if tf32 and dtype == torch.float32 else TOLERANCES[dtype]


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest |actual - expected| (NaN where exactly one of them is NaN: inf)."""
    actual, expected = actual.double(), expected.double()
    nan = actual.isnan() != expected.isnan()
    if bool(nan.any()):
        return float("inf")
    diff = (actual - expected).abs()
    diff = torch.where(actual.isnan() | (actual == expected), 0.0, diff)  # NaN, inf alike
    return float(diff.max()) if diff.numel() else 0.0


def mismatch(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype,
             tf32: bool = False):
    """None when ``actual`` is within ``dtype``'s tolerance of the float64 ``expected``
    (torch.isclose's rule, equal NaNs equal), else the largest error, as a short text."""
    if actual.shape != expected.shape:
        return f"shape {tuple(actual.shape)}, torch's {tuple(expected.shape)}"
    rtol, atol_frac = tolerance(dtype, tf32)
    expected = expected.double()
    scale = float(expected.abs().nan_to_num(posinf=0.0).max()) if expected.numel() else 1.0
    atol = atol_frac * max(scale, 1.0)
    if bool(torch.isclose(actual.double(), expected, rtol=rtol, atol=atol, equal_nan=True).all()):
        return None
    return f"max error {max_error(actual, expected):.3g} (atol {atol:.3g}, rtol {rtol:g})"


@dataclass(frozen=True)
class Reference:
    """What a launch must compute, as torch computes it.

    torch_result(dtype): {name: tensor} of torch's op on the launch's inputs cast to ``dtype``
        (float64: the reference; the inputs' dtype: torch's own rounding, used only when a
        config misses the float64 one).
    kernel_result(args): the same names read from a launch's arguments by name after it ran
        (e.g. a split reduction's partial slots summed).
    dtype: the inputs' dtype, whose tolerance applies; tf32: fp32 dots ran in TF32.
    """

    torch_result: Callable
    kernel_result: Callable
    dtype: torch.dtype
    tf32: bool = False

    def disagreement(self, observed: dict, expected: dict, torch_same: Callable):
        """None when every observed result agrees with ``expected`` (float64), else what
        differs. ``torch_same()``: torch's result in the inputs' dtype (asked for only when a
        result misses the float64 one)."""
        for name, want in expected.items():
            got = observed[name]
            miss = mismatch(got, want, self.dtype, self.tf32)
            if miss is None:
                continue
            if self.dtype != torch.float64 and got.shape == want.shape:
                theirs = torch_same()[name]
                if max_error(got, want) <= max_error(theirs, want):
                    continue
            return f"{name}: {miss}"
        return None


def config_text(config) -> str:
    """A config as ``BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3``."""
    parts = [f"{k}={v}" for k, v in config.kwargs.items()]
    parts += [f"num_warps={config.num_warps}", f"num_stages={config.num_stages}"]
    return ", ".join(parts)


class VerifiedAutotuner(Autotuner):
    """triton's Autotuner whose candidates for a new key are first checked against torch
    (``reference=`` of a launch, see the module docstring). Only ``kernel[grid]`` (to take the
    reference) and ``prune_configs`` (the step that names a key's candidates) change."""

    reference_builder = None  # the running launch's ``reference``, while it runs

    def __getitem__(self, grid):
        # As KernelInterface's, with ``reference`` taken off the arguments on the way: one
        # more layer that repacked them would cost a launch microseconds.
        def launch(*args, reference=None, **kwargs):
            self.reference_builder = reference
            try:
                return self.run(*args, grid=grid, warmup=False, **kwargs)
            finally:
                self.reference_builder = None
        return launch

    def prune_configs(self, kwargs):
        configs = super().prune_configs(kwargs)
        if self.reference_builder is None or len(configs) < 2 or not verifying():
            return configs
        return self.verified(configs, kwargs, self.reference_builder())

    def verified(self, configs: list, kwargs: dict, reference: Reference) -> list:
        """The configs whose results agree with ``reference``; one warning per other one."""
        launch = {**self.nargs, **kwargs}
        same = []

        def torch_result(dtype):
            # torch's own op even under cnn's routing (a TorchFunctionMode), and no graph.
            with torch._C.DisableTorchFunction(), torch.no_grad():
                return reference.torch_result(dtype)

        def torch_same():
            if not same:
                same.append(torch_result(reference.dtype))
            return same[0]

        expected = torch_result(torch.float64)

        kept, dropped = [], []
        for config in configs:
            observed = self.observe(config, kwargs, reference)
            why = None if observed is None else reference.disagreement(observed, expected,
                                                                        torch_same)
            (dropped if why else kept).append(config)
            if why:
                warnings.warn(
                    f"cnn: {self.base_fn.__name__} with config {config_text(config)} disagrees "
                    f"with torch for key ({self.key_text(launch)}): {why}; dropped for this key "
                    f"({VERIFY_ENV}=0 turns this check off)", RuntimeWarning, stacklevel=2)
        self.pre_hook(launch, reset_only=True)  # accumulators as before the check
        if not kept:
            raise RuntimeError(
                f"cnn: no config of {self.base_fn.__name__} agrees with torch for key "
                f"({self.key_text(launch)}); configs tried: "
                + "; ".join(config_text(c) for c in dropped))
        return kept

    def observe(self, config, kwargs: dict, reference: Reference):
        """Run ``config`` once as the autotuner's benchmark would (its hooks around it) and
        return its result, read before the post-hook restores anything; None when the config
        does not compile (the benchmark then rates it as it always does)."""
        from triton.compiler.errors import CompileTimeAssertionFailure
        from triton.runtime import errors

        cannot_compile = tuple(e for e in (getattr(errors, "OutOfResources", None),
                                           getattr(errors, "PTXASError", None),
                                           CompileTimeAssertionFailure) if e is not None)
        current = dict(kwargs, **config.all_kwargs())
        full = {**self.nargs, **current}
        if config.pre_hook:
            config.pre_hook(full)
        self.pre_hook(full)
        try:
            self.fn.run(*self.nargs.values(), **current)
            result = {name: t.clone() for name, t in reference.kernel_result(full).items()}
        except cannot_compile as error:
            self.post_hook(full, exception=error)
            return None
        except Exception as error:
            self.post_hook(full, exception=error)
            raise
        self.post_hook(full, exception=None)
        return result

    def key_text(self, launch: dict) -> str:
        """The tuning key as ``name=value, ...`` and the tensors' dtypes."""
        named = [f"{k}={launch[k]}" for k in self.keys if k in launch]
        dtypes = sorted({str(v.dtype).removeprefix("torch.") for k, v in launch.items()
                         if k in self.arg_names and hasattr(v, "dtype")})
        return ", ".join(named + dtypes)


def verified_autotune(configs, key, prune_configs_by=None, reset_to_zero=None,
                      restore_value=None):
    """``triton.autotune`` whose new keys are verified against torch (``VerifiedAutotuner``)."""
    def decorator(fn):
        return VerifiedAutotuner(fn, fn.arg_names, configs, key, reset_to_zero, restore_value,
                                 prune_configs_by=prune_configs_by)
    return decorator


__all__ = ["Reference", "TOLERANCES", "TF32_TOLERANCE", "VERIFY_ENV", "VerifiedAutotuner",
           "config_text", "mismatch", "tolerance", "verified_autotune", "verifying"]
