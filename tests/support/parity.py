"""The machinery of the parity sweep (tests/test_parity_sweep.py): tensor arguments described
by value (shape, dtype, layout, requires_grad, device, seed) so the same values can be built
for our op, for torch's op in the same dtype and for torch's op in float64; and one check that
calls both and compares everything a user can see.

Layouts: contiguous, channels_last (4D), strided (every other element of the last dim), offset
(a storage offset of 3), expanded (a stride-0 dim), permuted (all strides reversed).
"""
import dataclasses
import math

import torch

import cnn
from support import DEVICE, assert_matches
from support.tripwire import launches

LAYOUTS = ("contiguous", "channels_last", "strided", "offset", "expanded", "permuted")
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclasses.dataclass(frozen=True)
class T:
    """A tensor argument, by description. ``positive``: values in [0.5, 2.5) (variances);
    ``scale``: floating values times it (to reach an activation's far kinks)."""
    shape: tuple
    dtype: torch.dtype = torch.float32
    layout: str = "contiguous"
    requires_grad: bool = False
    device: str = None  # None: the test device (conftest.DEVICE)
    seed: int = 0
    positive: bool = False
    scale: float = 1

    def __repr__(self):
        extras = [f"{k}={v!r}" for k, v in (("layout", self.layout),
                                             ("requires_grad", self.requires_grad),
                                             ("device", self.device),
                                             ("seed", self.seed),
                                             ("positive", self.positive),
                                             ("scale", self.scale))
                  if v != {"layout": "contiguous", "requires_grad": False, "device": None,
                           "seed": 0, "positive": False, "scale": 1}[k]]
        return f"T({self.shape}, {str(self.dtype).replace('torch.', '')}" + \
            "".join(", " + e for e in extras) + ")"


def _expanded_dim(shape) -> int:
    sizes = [i for i, s in enumerate(shape) if s > 1]
    return sizes[0] if sizes else 0


def _base_shape(t: T) -> tuple:
    shape = list(t.shape)
    if t.layout == "strided" and shape:
        shape[-1] *= 2
    elif t.layout == "offset":
        return (math.prod(shape) + 3,)
    elif t.layout == "expanded" and shape:
        shape[_expanded_dim(shape)] = 1
    elif t.layout == "permuted" and len(shape) > 1:
        shape = shape[::-1]
    return tuple(shape)


def _view(leaf: torch.Tensor, t: T) -> torch.Tensor:
    if t.layout == "channels_last" and len(t.shape) == 4:
        return leaf.contiguous(memory_format=torch.channels_last)
    if t.layout == "strided" and t.shape:
        return leaf[..., ::2]
    if t.layout == "offset":
        return leaf[3:].view(t.shape)
    if t.layout == "expanded" and t.shape:
        return leaf.expand(t.shape)
    if t.layout == "permuted" and len(t.shape) > 1:
        return leaf.permute(*reversed(range(len(t.shape))))
    return leaf


def build(t: T, double: bool):
    """(leaf, argument): the leaf holds the values (and the gradient), the argument is the
    view of it in t's layout. ``double``: floating values as float64, rounded to t.dtype first
    so the reference sees exactly our input."""
    g = torch.Generator().manual_seed(t.seed)
    shape = _base_shape(t)
    if t.dtype.is_floating_point:
        v = torch.randn(shape, generator=g, dtype=torch.float64)
        if t.positive:
            v = v.abs() + 0.5
        v = v * t.scale
        v = v.to(t.dtype)
        if double:
            v = v.double()
    elif t.dtype.is_complex:
        v = torch.randn(shape, generator=g, dtype=t.dtype)
    elif t.dtype == torch.bool:
        v = torch.randint(0, 2, shape, generator=g).bool()
    else:
        v = torch.randint(-3, 4, shape, generator=g).to(t.dtype)
    v = v.to(t.device or DEVICE)
    if t.requires_grad and v.is_floating_point():
        v.requires_grad_()
    return v, _view(v, t)


def instantiate(args, kwargs, double: bool):
    """Builds every T in args/kwargs (lists of them too); returns (args, kwargs, leaves)."""
    leaves = []

    def one(value):
        if isinstance(value, T):
            leaf, view = build(value, double)
            leaves.append(leaf)
            return view
        if isinstance(value, list) and any(isinstance(v, T) for v in value):
            return [one(v) for v in value]
        return value
    built_args = tuple(one(a) for a in args)
    built_kwargs = {k: one(v) for k, v in kwargs.items()}
    return built_args, built_kwargs, leaves


def _tensors(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _memory_format(t: torch.Tensor):
    return (t.is_contiguous(), t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _arg_tensors(args, kwargs):
    return [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]


class Mismatch(AssertionError):
    pass


def _numel(out) -> int:
    return sum(t.numel() for t in _tensors(out) if isinstance(t, torch.Tensor))


def routed(func, op: str):
    """func (a torch.nn.functional function) called inside ``cnn.enabled()``, for check() to
    compare with the same call outside it. The routing must also account for the call:
    exactly one count, under op; a call counted as routed that returns elements launched our
    kernels; a fallback names its reason and launched nothing (ours refused before any launch,
    then torch's op ran). ``call.last`` holds how the last call went: "routed", "error" or
    "fallback: <reason>"."""
    def call(*args, **kwargs):
        out, error = None, None
        with launches() as launched, cnn.enabled() as report:
            try:
                out = func(*args, **kwargs)
            except Exception as raised:  # compared with torch's by check(), after the count
                error = raised
        counts = report.snapshot()
        seen = {name: c["routed"] + sum(c["fallbacks"].values()) + sum(c["errors"].values())
                for name, c in counts.items()}
        if not seen and isinstance(error, TypeError):
            # torch's argument parser refused the call before any function mode saw it
            call.last = "error before routing"
            raise error
        if seen != {op: 1}:
            raise Mismatch(f"routing counted {seen} for one call of {op}")
        fallbacks = counts[op]["fallbacks"]
        if counts[op]["routed"]:
            call.last = "routed"
            if error is not None:
                raise Mismatch(f"routed call counted as routed, but raised {error!r}")
            if not launched and _numel(out):
                raise Mismatch("routed call counted as routed launched none of our kernels")
        elif fallbacks:
            (reason,) = fallbacks
            call.last = f"fallback: {reason}"
            if not reason.strip() or reason.strip().endswith(":"):
                raise Mismatch(f"fallback counted without a reason: {reason!r}")
            if launched:
                raise Mismatch(f"fallback ({reason}) after launching {launched}")
        else:
            call.last = "error"
            if error is None:
                raise Mismatch("routing counted an error, but the call returned")
        if error is not None:
            raise error
        return out
    call.last = None
    return call


def check(ours, theirs, args, kwargs) -> str:
    """Calls ours and torch's op on the same arguments and compares: exception type (and that
    ours launched nothing), or output structure, shape, dtype, memory format and values,
    integer outputs exactly, arguments the op mutates, aliasing (inplace), and the gradient of
    every leaf. Returns "error" or "value"; raises Mismatch.
    """
    same_args, same_kwargs, _ = instantiate(args, kwargs, double=False)
    try:
        expected = theirs(*same_args, **same_kwargs)
        torch_error = None
    except Exception as error:  # torch's own exception is the specification
        torch_error = error
    our_args, our_kwargs, our_leaves = instantiate(args, kwargs, double=False)
    with launches() as launched:
        try:
            got = ours(*our_args, **our_kwargs)
            our_error = None
        except Exception as error:
            our_error = error
    if torch_error is not None:
        if our_error is None:
            raise Mismatch(f"torch raises {type(torch_error).__name__}({torch_error}); ours "
                           f"returns")
        # The same type, or a subclass of it (NotImplementedError for RuntimeError): every
        # ``except`` written for torch's error catches ours.
        if not isinstance(our_error, type(torch_error)):
            raise Mismatch(f"torch raises {type(torch_error).__name__}({torch_error}); ours "
                           f"raises {type(our_error).__name__}({our_error})")
        if launched:
            raise Mismatch(f"ours raised {type(our_error).__name__} after launching {launched}")
        return "error"
    if our_error is not None:
        raise Mismatch(f"torch returns; ours raises {type(our_error).__name__}({our_error})")

    ref_args, ref_kwargs, ref_leaves = instantiate(args, kwargs, double=True)
    try:
        reference = theirs(*ref_args, **ref_kwargs)
    except RuntimeError:
        # torch's float64 backend may refuse what its backend for this dtype accepts (a
        # transposed convolution with an output size of 0: float32's gives an empty result,
        # float64's raises); an empty result has no values, so torch's own is the reference.
        if any(t.numel() for t in _tensors(expected)):
            raise
        ref_args, ref_kwargs, ref_leaves = instantiate(args, kwargs, double=False)
        reference = theirs(*ref_args, **ref_kwargs)
    outs, same, refs = _tensors(got), _tensors(expected), _tensors(reference)
    if type(got) is not type(expected) or len(outs) != len(same):
        raise Mismatch(f"torch returns {type(expected).__name__} of {len(same)}, ours "
                       f"{type(got).__name__} of {len(outs)}")
    for i, (o, s, r) in enumerate(zip(outs, same, refs, strict=True)):
        if o.shape != s.shape or o.dtype != s.dtype or o.device != s.device:
            raise Mismatch(f"output {i}: torch {tuple(s.shape)} {s.dtype} {s.device}, ours "
                           f"{tuple(o.shape)} {o.dtype} {o.device}")
        if o.device.type != "meta" and o.numel() and _memory_format(o) != _memory_format(s):
            raise Mismatch(f"output {i}: torch strides {s.stride()}, ours {o.stride()} "
                           f"(shape {tuple(s.shape)})")
        if o.requires_grad != s.requires_grad:
            raise Mismatch(f"output {i}: requires_grad torch {s.requires_grad}, ours "
                           f"{o.requires_grad}")
        if o.device.type == "meta":
            continue
        if o.is_floating_point():
            _close(o, r, f"output {i}", s)
        elif not torch.equal(o, s):
            raise Mismatch(f"output {i}: torch {s.tolist()}, ours {o.tolist()}")
    for i, (a, s) in enumerate(zip(_arg_tensors(our_args, our_kwargs),
                                   _arg_tensors(same_args, same_kwargs), strict=True)):
        if any(a is o for o in outs) != any(s is e for e in same):
            raise Mismatch(f"output aliasing of argument {i} differs from torch's")
    for i, (a, r) in enumerate(zip(_arg_tensors(our_args, our_kwargs),
                                   _arg_tensors(ref_args, ref_kwargs), strict=True)):
        if a.device.type != "meta" and a.is_floating_point():
            _close(a.detach(), r.detach(), f"argument {i} after the call")
    same_args, same_kwargs, same_leaves = instantiate(args, kwargs, double=False)
    _check_gradients(outs, refs, _tensors(theirs(*same_args, **same_kwargs)), our_leaves,
                     ref_leaves, same_leaves)
    return "value"


def _close(actual, expected, what, torch_same=None, dtype=None):
    """actual against the float64 reference at its dtype's tolerance. float16, bfloat16 and
    float32: where torch's own result in that dtype (torch_same) misses the reference too (an
    ill-conditioned case, e.g. batch-norm gradients of 3 values per channel, or of a batch
    with zero variance, an expanded input, where 1/sqrt(eps) amplifies float32's rounding of
    the mean gradient 300 times), being no farther from it than torch's result is also
    accepted. dtype: the tolerance's dtype (default actual's)."""
    dtype = dtype or actual.dtype
    nan = expected.isnan()
    if nan.any():  # torch's NaN where torch has them; the other values compared as always
        if not torch.equal(actual.isnan(), nan):
            raise Mismatch(f"{what}: NaN at {actual.isnan().nonzero().tolist()}, torch's at "
                           f"{nan.nonzero().tolist()}")
        actual, expected = actual[~nan], expected[~nan]
        torch_same = None if torch_same is None else torch_same[~nan]
    try:
        assert_matches(actual, expected, dtype, what)
    except AssertionError as error:
        if torch_same is not None and dtype in (torch.float16, torch.bfloat16, torch.float32):
            ours_err = (actual.double() - expected.double()).abs().max().item()
            torch_err = (torch_same.double() - expected.double()).abs().max().item()
            if ours_err <= torch_err:
                return
            error = f"{error}\n(torch's own {actual.dtype} misses by {torch_err:.3g})"
        raise Mismatch(str(error)) from None


_LOOSENESS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _check_gradients(outs, refs, torch_outs, our_leaves, ref_leaves, torch_leaves):
    pairs = [(o, r, t) for o, r, t in zip(outs, refs, torch_outs, strict=True)
             if o.requires_grad]
    if not pairs:
        return
    g = torch.Generator().manual_seed(1234)
    grads = [torch.randn(r.shape, generator=g, dtype=torch.float64).to(o.dtype)
             for o, r, _ in pairs]
    try:
        torch.autograd.backward([r for _, r, _ in pairs], [gr.double() for gr in grads])
    except Exception as torch_error:  # torch's backward refuses: ours must refuse alike
        try:
            torch.autograd.backward([o for o, _, _ in pairs], grads)
        except Exception as our_error:
            if isinstance(our_error, type(torch_error)):
                return
            raise Mismatch(f"backward: torch raises {type(torch_error).__name__}"
                           f"({torch_error}); ours {type(our_error).__name__}({our_error})"
                           ) from None
        raise Mismatch(f"backward: torch raises {type(torch_error).__name__}({torch_error}); "
                       f"ours returns") from None
    torch.autograd.backward([o for o, _, _ in pairs], grads)
    torch.autograd.backward([t for _, _, t in pairs], grads)
    # Gradients are as exact as the lowest precision they were computed through: a float32
    # batch-norm weight's gradient under a bfloat16 input sums bfloat16 activations.
    floating = [a.dtype for a in our_leaves if a.is_floating_point()]
    compute_dtype = max(floating, key=_LOOSENESS.index) if floating else None
    for i, (a, r, t) in enumerate(zip(our_leaves, ref_leaves, torch_leaves, strict=True)):
        if (a.grad is None) != (r.grad is None):
            raise Mismatch(f"leaf {i}: gradient torch {r.grad is not None}, ours "
                           f"{a.grad is not None}")
        if a.grad is not None:
            _close(a.grad, r.grad, f"gradient of leaf {i}", t.grad, compute_dtype)
