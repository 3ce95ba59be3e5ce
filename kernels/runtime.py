"""Where the kernels run, and the small helpers every launcher shares.

On a machine with CUDA the kernels are compiled. Without CUDA they run through Triton's
interpreter (``TRITON_INTERPRET=1``), which Triton reads when a kernel is decorated, so this
module must be imported before any kernel module: ``kernels/__init__.py`` does that.
An explicit ``TRITON_INTERPRET`` in the environment is always respected.
"""
import os
import sys
import warnings

import torch


def _decide_interpret() -> bool:
    if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
        if "triton.language" in sys.modules:
            # triton.language's own helpers were already compiled for the GPU path.
            raise RuntimeError(
                "cnn: no CUDA device, and triton was imported before cnn without "
                "TRITON_INTERPRET=1; set TRITON_INTERPRET=1 or import cnn before triton")
        os.environ["TRITON_INTERPRET"] = "1"
        warnings.warn(
            "cnn: no CUDA device found, so the Triton kernels run through Triton's interpreter "
            "on the CPU: results are exact, speed is not representative.",
            RuntimeWarning,
            stacklevel=3,
        )
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


INTERPRET: bool = _decide_interpret()

import triton  # noqa: E402  (after the interpreter decision, see above)
import triton.language as tl  # noqa: E402


def _major_minor(version: str) -> tuple:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def interpreter_numpy_conflict(triton_version: str, numpy_version: str):
    """The message to raise when this Triton's interpreter cannot run with this numpy, or None.

    numpy 2.4 turned the conversion of a 1-element array to a Python int into a TypeError;
    Triton's interpreter before 3.7 relies on it (``tensor.__index__``), so every kernel with
    a loop over a runtime bound fails with "only 0-dimensional arrays can be converted to
    Python scalars". Measured: Triton 3.4, 3.5, 3.6 fail with numpy 2.4 and pass with 2.3;
    3.7, 3.8, 3.9 pass with 2.4. Compiled kernels are not affected.
    """
    if _major_minor(triton_version) >= (3, 7) or _major_minor(numpy_version) < (2, 4):
        return None
    return (
        f"cnn: Triton {triton_version}'s interpreter (TRITON_INTERPRET=1, used without CUDA) "
        f"cannot run with numpy {numpy_version}: numpy 2.4 made a conversion it relies on a "
        f"TypeError, fixed in Triton 3.7. Fix: pip install 'numpy<2.4' (or a Triton >= 3.7 "
        f"that your torch accepts)")


if INTERPRET:
    import numpy

    _conflict = interpreter_numpy_conflict(triton.__version__, numpy.__version__)
    if _conflict:
        raise RuntimeError(_conflict)

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def accumulator_dtype(dtype: torch.dtype):
    """fp32 accumulation for every float type, fp64 for fp64 (so gradcheck is exact)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def cudnn_conv_allows_tf32() -> bool:
    """Whether cuDNN would run an fp32 convolution in TF32 now, read as torch reads it.

    torch >= 2.9 has per-operator precision settings (``torch.backends.cudnn.conv.fp32_precision``,
    falling back to ``torch.backends.cudnn.fp32_precision``, then ``torch.backends.fp32_precision``
    while a level says "none"); the legacy ``torch.backends.cudnn.allow_tf32`` raises once the
    conv and RNN settings differ, so it is read only where the new settings do not exist.
    """
    cudnn = torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        return bool(cudnn.allow_tf32)
    for precision in (conv.fp32_precision, getattr(cudnn, "fp32_precision", "none"),
                      getattr(torch.backends, "fp32_precision", "none")):
        if precision != "none":
            return precision == "tf32"
    return False


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: TF32 for fp32 only where cuDNN would use it (never under
    the interpreter, which computes in fp32)."""
    if dtype == torch.float32 and not INTERPRET and cudnn_conv_allows_tf32():
        return "tf32"
    return "ieee"


def dot_upcast(dtype: torch.dtype) -> bool:
    """The interpreter's ``tl.dot`` multiplies bfloat16 bit patterns; cast to fp32 there
    (the kernels' UPCAST, see ``upcast_dot``)."""
    return INTERPRET and dtype == torch.bfloat16


@triton.jit
def upcast_dot(a, b, acc, UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """acc + a @ b in acc's dtype (``tl.dot``); UPCAST: a and b in fp32 first."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=acc.dtype)


def check_device(*tensors: torch.Tensor) -> None:
    """Compiled kernels need CUDA tensors; the interpreter runs on CPU (or CUDA) tensors."""
    if INTERPRET:
        return
    for t in tensors:
        if t is not None and not t.is_cuda:
            raise RuntimeError(
                f"cnn kernels are compiled for CUDA but got a tensor on {t.device}; move it to "
                "a CUDA device (or set TRITON_INTERPRET=1 to run through the interpreter)"
            )


def is_channels_last(t: torch.Tensor) -> bool:
    """torch's ``suggest_memory_format(t) == channels_last`` for a 4D tensor: channels
    innermost in stride order (sizes of 1 are ambiguous and resolved as torch resolves them)."""
    if t.dim() != 4:
        return False
    sizes, strides = t.shape, t.stride()
    smallest = 0
    for d in (1, 3, 2, 0):
        if strides[d] == 0 or strides[d] < smallest:
            return False
        if d == 0 and smallest == strides[1]:
            return False
        smallest = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True


def output_memory_format(*tensors: torch.Tensor) -> torch.memory_format:
    """channels_last when any tensor given suggests channels_last (torch's rule for conv)."""
    if any(t is not None and is_channels_last(t) for t in tensors):
        return torch.channels_last
    return torch.contiguous_format


def needs_int64(*tensors: torch.Tensor, margin: int = 1 << 16) -> bool:
    """Whether element offsets into any of these tensors can pass int32's range. Kernels keep
    their offset tiles in int32 otherwise: half the registers of 64-bit pointers. ``margin``
    covers the lanes of the last tile that run past the end (masked, but computed)."""
    for t in tensors:
        if t is not None and sum((size - 1) * abs(stride) for size, stride
                                 in zip(t.shape, t.stride(), strict=True)) + margin >= 2**31:
            return True
    return False


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    return triton.next_power_of_2(max(1, int(n)))


def multiprocessor_count(device: torch.device) -> int:
    """Streaming multiprocessors to fill; a nominal 1 under the interpreter."""
    if INTERPRET or device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def launchable_kernels() -> list:
    """The innermost launchable object of every kernel in the loaded modules of this package
    (``cnn.kernels``): the JITFunction (compiled) or InterpretedFunction (interpreter) whose
    ``run`` launches. Used to count launches (tests, benchmarks) by wrapping ``run``."""
    found, package = {}, f"{__package__}."
    for name, module in list(sys.modules.items()):
        if not name.startswith(package) or module is None:
            continue
        for value in vars(module).values():
            if isinstance(value, triton.runtime.KernelInterface):
                while isinstance(getattr(value, "fn", None), triton.runtime.KernelInterface):
                    value = value.fn
                found[id(value)] = value
    return list(found.values())
