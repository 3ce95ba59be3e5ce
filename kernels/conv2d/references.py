"""torch's own results for the conv2d launches: what verified tuning
(``cnn.kernels.verified_tuning``) compares each candidate config with.

Each builder takes a launcher's own arguments and returns a ``Reference``: torch's op on those
inputs (F.conv2d with the geometry's padding, which may be asymmetric or, for a transposed conv,
negative at the bottom/right, so it is applied by F.pad; the gradients as autograd's vjp of that
conv, i.e. aten's convolution_backward) and how to read the same quantities from the kernel's
arguments by name after a launch. The launchers pass them as ``functools.partial``s, so a launch
that tunes nothing builds none.
"""
import torch
import torch.nn.functional as F

from .. import activation_math as act
from ..runtime import dot_precision
from ..verified_tuning import Reference
from .geometry import Conv2dGeometry


def _conv(x: torch.Tensor, weight: torch.Tensor, g: Conv2dGeometry) -> torch.Tensor:
    """conv2d(x, weight) with g's stride, dilation, groups and (top, bottom, left, right)
    padding, no bias."""
    top, bottom, left, right = g.padding
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, None, g.stride, 0, g.dilation,
                    g.groups)


def _tf32(dtype: torch.dtype) -> bool:
    return dot_precision(dtype) == "tf32"


def _channel_stats(stats: torch.Tensor) -> dict:
    """Per-tile (tiles, 3, C) count/mean/M2 partials merged by Chan's formula:
    {stats.count, stats.mean, stats.var} per channel (var biased)."""
    count, mean, m2 = stats.double().unbind(1)
    mean = torch.where(count > 0, mean, 0.0)
    total = count.sum(0)
    merged = (count * mean).sum(0) / total
    var = (m2.sum(0) + (count * (mean - merged) ** 2).sum(0)) / total
    return {"stats.count": total, "stats.mean": merged, "stats.var": var}


# torch's function for each activation code of ``cnn.kernels.activation_math``.
_TORCH_ACTIVATIONS = {
    act.NONE: lambda y, slope: y, act.RELU: lambda y, slope: F.relu(y),
    act.RELU6: lambda y, slope: F.relu6(y), act.LEAKY_RELU: F.leaky_relu,
    act.SILU: lambda y, slope: F.silu(y), act.HARDSWISH: lambda y, slope: F.hardswish(y),
    act.GELU: lambda y, slope: F.gelu(y),
}


def forward_reference(x, weight, bias, geometry: Conv2dGeometry, *, activation=act.NONE,
                      negative_slope=0.0, residual=None, bn_eval=None, stats=False,
                      keep_pre=False) -> Reference:
    """conv2d_forward's / depthwise_forward's result: y (N, C_out, OH, OW) =
    act(bn_eval(conv + bias) + residual), the pre-activation value with ``keep_pre``, and,
    with ``stats``, the per-channel count, mean and variance of conv + bias, read from the
    kernel's y_ptr, pre_ptr and stats_ptr."""
    def torch_result(dtype):
        y = _conv(x.to(dtype), weight.to(dtype), geometry)
        if bias is not None:
            y = y + bias.to(dtype).view(1, -1, 1, 1)
        out = {}
        if stats:
            flat = y.double().transpose(0, 1).reshape(y.shape[1], -1)
            out = {"stats.count": torch.full((y.shape[1],), float(flat.shape[1]),
                                             dtype=torch.float64, device=y.device),
                   "stats.mean": flat.mean(1), "stats.var": flat.var(1, unbiased=False)}
        if bn_eval is not None:
            mean, var, gamma, beta, eps = bn_eval
            y = F.batch_norm(y, mean.to(dtype), var.to(dtype),
                             None if gamma is None else gamma.to(dtype),
                             None if beta is None else beta.to(dtype), False, 0.0, eps)
        if residual is not None:
            y = y + residual.to(dtype)
        if keep_pre:
            out["pre"] = y
        return {"y": _TORCH_ACTIVATIONS[activation](y, negative_slope), **out}

    def kernel_result(args):
        out = {"y": args["y_ptr"]}
        if keep_pre:
            out["pre"] = args["pre_ptr"]
        if stats:
            out.update(_channel_stats(args["stats_ptr"]))
        return out

    return Reference(torch_result, kernel_result, x.dtype, _tf32(x.dtype))


def input_grad_reference(grad_output, weight, geometry: Conv2dGeometry) -> Reference:
    """conv2d_input_grad's / depthwise_input_grad's result: dx (N, C_in, H, W), the vjp of the
    conv with respect to its input, read from the kernel's dx_ptr."""
    g = geometry
    shape = (g.batch, g.in_channels, g.height, g.width)

    def torch_result(dtype):
        with torch.enable_grad():
            x = torch.zeros(shape, dtype=dtype, device=grad_output.device, requires_grad=True)
            y = _conv(x, weight.detach().to(dtype), g)
            (dx,) = torch.autograd.grad(y, x, grad_output.detach().to(dtype))
        return {"grad_input": dx}

    return Reference(torch_result, lambda args: {"grad_input": args["dx_ptr"]},
                     grad_output.dtype, _tf32(grad_output.dtype))


def weight_grad_reference(grad_output, input, weight, geometry: Conv2dGeometry,
                          need_bias: bool = False) -> Reference:
    """The weight-gradient GEMM's result: dw (C_out, C_in/groups, KH, KW) and db (C_out,), read
    from dw_ptr/db_ptr: the final tensors, or the split reduction's partial slots
    (split, C_out, KH, KW, C_in/groups) and (split, C_out), summed."""
    def torch_result(dtype):
        with torch.enable_grad():
            w = torch.zeros(weight.shape, dtype=dtype, device=weight.device, requires_grad=True)
            y = _conv(input.detach().to(dtype), w, geometry)
            (dw,) = torch.autograd.grad(y, w, grad_output.detach().to(dtype))
        out = {"grad_weight": dw}
        if need_bias:
            out["grad_bias"] = grad_output.to(dtype).sum((0, 2, 3))
        return out

    def kernel_result(args):
        dw = args["dw_ptr"]
        out = {"grad_weight": dw.sum(0).permute(0, 3, 1, 2) if dw.dim() == 5 else dw}
        if need_bias:
            db = args["db_ptr"]
            out["grad_bias"] = db.sum(0) if db.dim() == 2 else db
        return out

    return Reference(torch_result, kernel_result, input.dtype, _tf32(input.dtype))


__all__ = ["forward_reference", "input_grad_reference", "weight_grad_reference"]
