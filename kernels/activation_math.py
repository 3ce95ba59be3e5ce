"""The activations our kernels apply, and their derivatives, as Triton device functions.

One constexpr ``ACT`` picks the function, so a kernel that takes an activation compiles only the
one it uses. Each follows torch's definition, NaN and signed zeros included:

    ACT          forward a(x)                          derivative a'(x) (torch's backward)
    NONE         x                                      1
    RELU         0 if x < 0 else x                      0 if x <= 0 else 1
    RELU6        min(max(x, 0), 6) (hardtanh(x, 0, 6))  1 if 0 < x < 6 else 0
    LEAKY_RELU   x if x > 0 else slope * x              1 if x > 0 else slope
    SILU         x * s, s = 1 / (1 + exp(-x))           s * (1 + x * (1 - s))
    HARDSWISH    x * min(max(x + 3, 0), 6) / 6          0 if x <= -3; 1 if x >= 3; else x / 3 + 1/2
    GELU         x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2
                                                        Phi(x) + x * exp(-x^2 / 2) / sqrt(2 pi)
    GELU_TANH    x * (1 + tanh(u)) / 2 = x * s          s + 2 x s (1 - s) u'
                 u = sqrt(2/pi) (x + 0.044715 x^3), s = sigmoid(2u) = (1 + tanh(u)) / 2,
                 u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)  (torch's approximate='tanh')

(NaN: every forward returns NaN; the gradient at NaN is torch's vectorised CPU and CUDA one:
RELU passes it, RELU6 gives 0, LEAKY_RELU multiplies by slope, the others give NaN. torch's
scalar CPU loop, used for short tensors, differs for RELU6 and HARDSWISH.) The backward of a
fused op recomputes the pre-activation x and applies ``activation_grad``; ReLU alone can also
use its output (``a(x) > 0`` iff ``x > 0``). GELU_TANH's tanh is written with exp, as
sigmoid(2u), which both Triton 3.6 and 3.9 compile and which does not cancel in 1 + tanh(u) as
tanh(u) -> -1.
"""
import triton
import triton.language as tl

NONE, RELU, RELU6, LEAKY_RELU, SILU, HARDSWISH, GELU, GELU_TANH = range(8)

ACTIVATIONS = {"none": NONE, "relu": RELU, "relu6": RELU6, "leaky_relu": LEAKY_RELU,
               "silu": SILU, "hardswish": HARDSWISH, "gelu": GELU, "gelu_tanh": GELU_TANH}
"""torch.nn.functional's name of each activation -> its ACT code."""


def activation_code(name: str) -> int:
    """The ACT code of a torch.nn.functional activation name ("relu", "silu", ...)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{', '.join(map(repr, ACTIVATIONS))}") from None


@triton.jit
def activate(x, slope, ACT: tl.constexpr):
    """a(x), elementwise, in x's dtype (fp32 or fp64); slope is LEAKY_RELU's negative slope."""
    if ACT == 1:  # RELU
        x = tl.where(x < 0.0, 0.0, x)
    elif ACT == 2:  # RELU6
        x = tl.where(x < 0.0, 0.0, tl.where(x > 6.0, 6.0, x))
    elif ACT == 3:  # LEAKY_RELU
        x = tl.where(x > 0.0, x, x * slope)
    elif ACT == 4:  # SILU
        x = x / (1.0 + tl.exp(-x))
    elif ACT == 5:  # HARDSWISH
        x = x * tl.where(x + 3.0 < 0.0, 0.0, tl.where(x + 3.0 > 6.0, 6.0, x + 3.0)) / 6.0
    elif ACT == 6:  # GELU
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACT == 7:  # GELU_TANH
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        x = x / (1.0 + tl.exp(-2.0 * u))
    return x


@triton.jit
def activation_grad(x, grad, slope, ACT: tl.constexpr):
    """grad * a'(x), elementwise: the gradient through the activation at pre-activation x."""
    if ACT == 1:  # RELU
        grad = tl.where(x <= 0.0, 0.0, grad)
    elif ACT == 2:  # RELU6
        grad = tl.where((x > 0.0) & (x < 6.0), grad, 0.0)
    elif ACT == 3:  # LEAKY_RELU
        grad = tl.where(x > 0.0, grad, grad * slope)
    elif ACT == 4:  # SILU
        s = 1.0 / (1.0 + tl.exp(-x))
        grad = grad * s * (1.0 + x * (1.0 - s))
    elif ACT == 5:  # HARDSWISH
        grad = tl.where(x <= -3.0, 0.0, tl.where(x >= 3.0, grad, grad * (x / 3.0 + 0.5)))
    elif ACT == 6:  # GELU
        cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
        pdf = tl.exp(-0.5 * x * x) * 0.3989422804014327
        grad = grad * (cdf + x * pdf)
    elif ACT == 7:  # GELU_TANH
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        du = 0.7978845608028654 * (1.0 + 0.134145 * x * x)
        s = 1.0 / (1.0 + tl.exp(-2.0 * u))
        grad = grad * (s + 2.0 * x * s * (1.0 - s) * du)
    return grad


__all__ = ["NONE", "RELU", "RELU6", "LEAKY_RELU", "SILU", "HARDSWISH", "GELU", "GELU_TANH",
           "ACTIVATIONS", "activation_code", "activate", "activation_grad"]
