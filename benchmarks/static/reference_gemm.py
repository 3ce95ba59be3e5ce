"""A plain tiled GEMM, Triton's matmul tutorial's design: the yardstick the compile report sets
every convolution's main loop against.

    c[m, n] = sum_k a[m, k] * b[k, n]        a: (M, K) row-major, b: (K, N) row-major

Each program owns a BLOCK_M x BLOCK_N tile of c (grouped launch order for L2 reuse), walks K in
BLOCK_K steps with pointer increments, masks only the K tail, accumulates in fp32. It is never
launched by the library: ``python -m benchmarks.static`` compiles it for the same M, N,
K, tile, warps, stages, dtype and target as each convolution config and compares the SASS of
the two main loops (instructions per MMA, load kinds, MMA groups in flight).
"""
import triton
import triton.language as tl


@triton.jit
def reference_matmul_kernel(
    a_ptr, b_ptr, c_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # Rows and columns past the edge wrap around (read, never stored), as in the tutorial.
    offs_am = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_bn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + (offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak)
    b_ptrs = b_ptr + (offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        a = tl.load(a_ptrs, mask=offs_k[None, :] < K - k * BLOCK_K, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < K - k * BLOCK_K, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    offs_cm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_cn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = c_ptr + stride_cm * offs_cm[:, None] + stride_cn * offs_cn[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty),
             mask=(offs_cm[:, None] < M) & (offs_cn[None, :] < N))


def reference_signature(m: int, n: int, k: int, pointer: str, precision: str):
    """(signature, constexprs) of the reference for an (M, N, K) problem with contiguous
    row-major operands of type ``pointer`` ("*fp16", ...), specialised as a launch would be:
    the unit strides are constants, sizes and strides divisible by 16 are marked so."""
    def size(value):
        return "i32:16" if value % 16 == 0 else "i32"

    signature = {"a_ptr": pointer, "b_ptr": pointer, "c_ptr": pointer,
                 "M": size(m), "N": size(n), "K": size(k),
                 "stride_am": size(k), "stride_bk": size(n), "stride_cm": size(n)}
    constexprs = {"stride_ak": 1, "stride_bn": 1, "stride_cn": 1, "INPUT_PRECISION": precision,
                  "GROUP_M": 8}
    return signature, constexprs


__all__ = ["reference_matmul_kernel", "reference_signature"]
