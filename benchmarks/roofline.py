"""Peak throughput of the GPUs we measure on, and the roofline arithmetic of each benchmark.

Peaks are dense (no 2:4 sparsity) datasheet figures; NVIDIA's datasheets print the tensor-core
numbers with sparsity, so those are halved here. Sources:
    A100: "NVIDIA A100 Tensor Core GPU" datasheet (2021): FP32 19.5, TF32 156, FP16/BF16 312
          TFLOP/s; HBM 1,555 GB/s (40GB SXM), 2,039 GB/s (80GB SXM), 1,935 GB/s (80GB PCIe).
    H100: "NVIDIA H100 Tensor Core GPU" datasheet (2023): SXM FP32 67, TF32 494.7 (989 sparse),
          FP16/BF16 989.4 (1,979 sparse), 3.35 TB/s; PCIe FP32 51, TF32 378 (756 sparse),
          FP16/BF16 756.5 (1,513 sparse), 2.0 TB/s.
    H200: "NVIDIA H200 Tensor Core GPU" datasheet (2024): SXM FP32 67, TF32 494.7 (989 sparse),
          FP16/BF16 989.4 (1,979 sparse), 4.8 TB/s; NVL FP32 60, TF32 417.5 (835 sparse),
          FP16/BF16 835.5 (1,671 sparse), 4.8 TB/s.
A board running below its boost clock (power capping) reaches less: the percent is of the
datasheet, not of that board.

    conv FLOPs (each pass)  = 2 * N * C_out * OH * OW * (C_in / groups) * KH * KW
    conv minimum bytes      = the two operands read once + the result written once
    pooling / ReLU bytes    = input read once + output written once (backward: dy read, dx
                              written; max pooling's indices are left out, so every GB/s here
                              is a lower bound, the same for ours and torch's)
    batch norm bytes        = x read once + y written once (backward: x, dy read, dx written)
    roofline                = min(peak FLOP/s, bytes/s * FLOPs / bytes)
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    """Dense peaks: TFLOP/s by dtype (fp32 = CUDA cores, tf32/fp16/bf16 = tensor cores), GB/s."""

    name: str
    tflops: dict
    gbps: float


def _peak(name, fp32, tf32, half, gbps):
    return Peak(name, {"fp32": fp32, "tf32": tf32, "fp16": half, "bf16": half}, gbps)


# Matched in order against torch.cuda.get_device_name(): first hit wins.
PEAKS = [
    ("H200 NVL", _peak("H200 NVL", 60.0, 417.5, 835.5, 4800.0)),
    ("H200", _peak("H200 SXM", 67.0, 494.7, 989.4, 4800.0)),
    ("H100 PCIe", _peak("H100 PCIe", 51.0, 378.0, 756.5, 2000.0)),
    ("H100", _peak("H100 SXM", 67.0, 494.7, 989.4, 3350.0)),
    ("A100 80GB PCIe", _peak("A100 80GB PCIe", 19.5, 156.0, 312.0, 1935.0)),
    ("A100-SXM4-80GB", _peak("A100 SXM4 80GB", 19.5, 156.0, 312.0, 2039.0)),
    ("A100", _peak("A100 40GB", 19.5, 156.0, 312.0, 1555.0)),
]

ELEMENT_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2}


def peak_for(gpu_name: str):
    """The Peak for a device name, or None for a GPU not in the table."""
    for key, peak in PEAKS:
        if key.lower() in gpu_name.lower():
            return peak
    return None


def conv_flops(shape, groups: int = 1) -> int:
    oh, ow = shape.out_hw
    return 2 * shape.batch * shape.c_out * oh * ow * (shape.c_in // groups) \
        * shape.kernel * shape.kernel


def conv_bytes(shape, dtype: str, pass_: str, groups: int = 1) -> int:
    """Minimum bytes of one conv pass: 'fwd' reads x, w, writes y; 'dgrad' reads dy, w, writes
    dx; 'wgrad' reads dy, x, writes dw; 'fwd+bwd' is the sum of the three."""
    oh, ow = shape.out_hw
    x = shape.batch * shape.c_in * shape.h * shape.w
    w = shape.c_out * (shape.c_in // groups) * shape.kernel * shape.kernel
    y = shape.batch * shape.c_out * oh * ow
    elements = {"fwd": x + w + y, "dgrad": y + w + x, "wgrad": y + x + w}
    elements["fwd+bwd"] = sum(elements.values())
    return elements[pass_] * ELEMENT_BYTES[dtype]


def pool_out_hw(shape) -> tuple:
    f = lambda size: (size + 2 * shape.padding - shape.kernel) // shape.stride + 1
    return f(shape.h), f(shape.w)


def pool_bytes(shape, dtype: str) -> int:
    """Forward: x read + y written; backward: dy read + dx written (the same count)."""
    oh, ow = pool_out_hw(shape)
    return (shape.batch * shape.channels * (shape.h * shape.w + oh * ow)) * ELEMENT_BYTES[dtype]


def elementwise_bytes(shape, dtype: str, tensors: int) -> int:
    """``tensors`` full activations moved once each (ReLU 2, BN forward 2, BN backward 3)."""
    return tensors * shape.batch * shape.channels * shape.h * shape.w * ELEMENT_BYTES[dtype]


def roofline_tflops(peak: Peak, dtype: str, flops: int, nbytes: int) -> float:
    """Attainable TFLOP/s at this arithmetic intensity."""
    return min(peak.tflops[dtype], peak.gbps * 1e9 * flops / nbytes / 1e12)


def percent_of_roofline(peak, dtype: str, flops: int, nbytes: int, seconds: float):
    """Achieved / attainable, in percent: FLOP-bound ops against the roofline, ops with no
    FLOPs counted (pooling, batch norm) against memory bandwidth. None without a peak."""
    if peak is None or seconds <= 0:
        return None
    if flops:
        return 100.0 * flops / seconds / 1e12 / roofline_tflops(peak, dtype, flops, nbytes)
    return 100.0 * nbytes / seconds / 1e9 / peak.gbps
