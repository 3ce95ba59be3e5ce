"""GPU readiness without a GPU: compile every kernel config for sm_80 and sm_90, read its resources.

    python -m kernels.compile_check [--targets 80,90] [--kernels forward,pool] [--json PATH]

Each module named in ``KERNEL_MODULES`` defines ``compile_cases()`` returning a list of
``(label, kernel, signature, constexprs)``:
    label       a short name of the variant, e.g. "bias" or "stats"
    kernel      the @triton.jit function, possibly wrapped by @triton.autotune/@triton.heuristics
    signature   every non-constexpr argument name -> Triton type ("*fp16", "i32", "fp32", ...;
                "i32:16" is an i32 known to be divisible by 16)
    constexprs  every tl.constexpr name -> value (tile sizes may come from the autotune configs)
Every autotune config is expanded: its kwargs join the constexprs, num_warps/num_stages go to the
compile options. A constexpr that the case pins (e.g. BLOCK_M for a statistics epilogue whose
launcher prunes the other configs) drops the configs that disagree with it, since they never run.

Each config is compiled with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))``,
which needs no GPU, and the cubin is read with the ``cuobjdump`` shipped in Triton's wheel:
    registers       cuobjdump --dump-resource-usage (REG)
    shared memory   Triton's dynamic shared memory (metadata.shared) + the cubin's static SHARED
    spills          bytes of the local-memory stores/loads (STL/LDL) in the SASS, plus the stack
                    frame; the same numbers ptxas -v prints, but still readable when Triton's
                    cache skipped ptxas
    tensor cores    the MMA instructions in the SASS (HMMA on sm_80, HGMMA/wgmma on sm_90)
Pointer arguments get the 16-byte alignment hint that torch allocations give at run time. The
convolutions build their cases from their launchers' own arguments for an example layer, in NCHW
and channels_last (``launch_signature``): integers are specialised as Triton's launcher
specialises them (1 becomes a constant, multiples of 16 are known divisible), so the registers,
spills and vector widths reported are those of the kernel that runs. The other kernels' integer
arguments stay unspecialised (the most general variant the runtime can build).

Exit status: 1 when a config fails to compile or needs more shared memory than its target gives
one block (opt-in maximum, static + dynamic). Spills are reported, not failed (``--fail-on-spill``
turns them into failures): a spill costs speed, not correctness, the autotuner measures speed on
the GPU and drops slow configs, and a config that spills on one dtype is often the best on another.
"""
import argparse
import concurrent.futures as futures
import functools
import hashlib
import importlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import runtime

# Other op families append their module here.
KERNEL_MODULES = [
    "kernels.conv2d_forward",
    "kernels.conv2d_input_grad",
    "kernels.conv2d_weight_grad",
    "kernels.conv2d_depthwise",
    "kernels.max_pool2d",
    "kernels.avg_pool2d",
    "kernels.batch_norm_forward", "kernels.batch_norm_backward", "kernels.relu",
]

# cudaDevAttrMaxSharedMemoryPerBlockOptin: A100 (sm_80) 163 KB, H100/H200 (sm_90) 227 KB.
SHARED_LIMIT = {80: 166912, 90: 232448}
DEFAULT_TARGETS = (80, 90)

# The dtypes every GPU kernel config is compiled for: (name, pointer type, tl.dot precision).
# fp16 first: --quick compiles each kernel's first case, and fp16 is the tensor-core fast path.
GPU_DTYPES = [
    ("fp16", "*fp16", "ieee"),
    ("bf16", "*bf16", "ieee"),
    ("fp32-tf32", "*fp32", "tf32"),
    ("fp32", "*fp32", "ieee"),
]

# The example layouts of the convolution cases: (label, channels_last). The fast one first.
CONV_LAYOUTS = [("nhwc", True), ("nchw", False)]
# Multiprocessors of an H100/H200: the weight gradients split their reduction as they do there.
EXAMPLE_MULTIPROCESSORS = 132


def torch_dtype(name: str):
    """The torch dtype of a GPU_DTYPES name ("fp32-tf32" is float32)."""
    import torch
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(name, torch.float32)


_TC_RE = re.compile(r"\b(?:HMMA|HGMMA|IMMA|WGMMA|QMMA|OMMA|UTCHMMA|UTCQMMA)[.\w]*")
_LOCAL_RE = re.compile(r"\b(STL|LDL)((?:\.\w+)*)")
_WIDTH_BYTES = {"U8": 1, "S8": 1, "U16": 2, "S16": 2, "64": 8, "128": 16}


def signature_for(kernel, constexprs, pointers=None, default_pointer="*fp32", floats=()):
    """A compile signature for ``kernel``: every non-constexpr argument gets a type.

    pointers: name -> pointer type for the arguments not of ``default_pointer`` (any argument
    ending in ``_ptr`` is a pointer); floats: the scalar float arguments; other scalars are i32.
    """
    fn = unwrap(kernel)[0]
    pointers = pointers or {}
    sig = {}
    for p in fn.params:
        if p.is_constexpr or p.name in constexprs:
            continue
        if p.name in pointers or p.name.endswith("_ptr"):
            sig[p.name] = pointers.get(p.name, default_pointer)
        else:
            sig[p.name] = "fp32" if p.name in floats else "i32"
    return sig


# Scalar type of each pointer, by the torch dtype a launcher passes.
_POINTER_TYPES = {"float16": "*fp16", "bfloat16": "*bf16", "float32": "*fp32",
                  "float64": "*fp64", "int64": "*i64", "int32": "*i32", "int8": "*i8",
                  "uint8": "*u8", "bool": "*i1"}


def launch_signature(kernel, args, overrides=None):
    """(signature, constexprs) of ``kernel`` for the named launch arguments ``args``, typed the
    way Triton's launcher specialises them, so the compile matches what runs:
        tensor                    pointer of its dtype, 16-byte aligned (as torch allocates)
        int equal to 1            the constexpr 1 (a unit stride, padding or dilation of 1)
        int divisible by 16       "i32:16" (i64 past int32): known divisibility, which lets
                                  contiguous offsets become vector loads
        other int / float         i32 (i64) / fp32
    ``args`` holds the kernel's constexprs too; ``overrides`` replaces some of them (e.g. the
    tl.dot precision, which a launcher on this machine would choose for the interpreter).
    """
    import torch

    fn = unwrap(kernel)[0]
    constexpr_names = {p.name for p in fn.params if p.is_constexpr}
    signature, constexprs = {}, {}
    for name, value in args.items():
        if name in constexpr_names:
            constexprs[name] = value
        elif isinstance(value, torch.Tensor):
            signature[name] = _POINTER_TYPES[str(value.dtype).removeprefix("torch.")]
        elif isinstance(value, bool) or value is None:
            raise TypeError(f"argument {name!r} = {value!r} should be a tl.constexpr")
        elif isinstance(value, int) and value == 1:
            constexprs[name] = 1
        elif isinstance(value, int):
            width = "i32" if -2**31 <= value < 2**31 else "i64"
            signature[name] = width + (":16" if value % 16 == 0 else "")
        else:
            signature[name] = "fp32"
    constexprs.update(overrides or {})
    return signature, constexprs


def unwrap(kernel):
    """(JITFunction, autotune configs or [None], names a heuristic must get from constexprs)."""
    from triton.runtime.autotuner import Autotuner, Heuristics
    from triton.runtime.jit import JITFunction

    configs, heuristic_names, obj = [None], [], kernel
    while not isinstance(obj, JITFunction):
        if isinstance(obj, Autotuner):
            configs = list(obj.configs)
        elif isinstance(obj, Heuristics):
            heuristic_names += list(obj.values)
        if not hasattr(obj, "fn"):
            raise TypeError(f"{kernel!r} is not a @triton.jit function or a wrapper of one")
        obj = obj.fn
    return obj, configs, heuristic_names


@dataclass
class Job:
    """One (case, autotune config, target) to compile."""

    index: int
    module: str
    case_index: int
    config_index: int  # -1: the kernel has no autotune configs
    label: str
    kernel: str = ""
    config: str = ""
    dtype: str = ""
    target: int = 90


@dataclass
class Result(Job):
    """What one compile gave: resources read from the cubin, or the error."""

    ok: bool = False
    error: str = ""
    registers: int = -1
    shared_dynamic: int = -1
    shared_static: int = -1
    shared: int = -1
    shared_limit: int = 0
    stack: int = -1
    local: int = -1
    spill_store_bytes: int = -1
    spill_load_bytes: int = -1
    tensor_cores: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def spills(self) -> bool:
        return self.spill_store_bytes > 0 or self.spill_load_bytes > 0 or self.stack > 0

    @property
    def over_shared(self) -> bool:
        return self.shared > self.shared_limit


def _describe_config(cfg) -> str:
    if cfg is None:
        return "-"
    tiles = ",".join(f"{k.replace('BLOCK_', '')}{v}" for k, v in cfg.kwargs.items())
    return f"{tiles} w{cfg.num_warps} s{cfg.num_stages}"


def _dtype_of(signature, constexprs) -> str:
    """Display dtype: the first pointer's element type, '-tf32' when tl.dot runs in TF32."""
    first = next((t for t in signature.values() if t.startswith("*")), "-")
    name = first.lstrip("*")
    if constexprs.get("INPUT_PRECISION") == "tf32":
        name += "-tf32"
    return name


@functools.lru_cache(maxsize=None)
def _cases(module: str):
    return importlib.import_module(module).compile_cases()


def collect_jobs(modules, targets, name_filter=(), dtype_filter=(), quick=False):
    """Expand every module's cases over configs and targets; filters match as substrings."""
    jobs, seen_kernels = [], set()
    for module in modules:
        for ci, (label, kernel, signature, constexprs) in enumerate(_cases(module)):
            fn, configs, _ = unwrap(kernel)
            names = (module, fn.__name__, label)
            if name_filter and not any(f in n for f in name_filter for n in names):
                continue
            dtype = _dtype_of(signature, constexprs)
            if dtype_filter and dtype not in dtype_filter:
                continue
            if quick:  # one representative: the first case and first config of each kernel
                if fn.__name__ in seen_kernels:
                    continue
                seen_kernels.add(fn.__name__)
            for k, cfg in enumerate(configs):
                if cfg is not None and any(key in constexprs and constexprs[key] != value
                                           for key, value in cfg.kwargs.items()):
                    continue  # pinned away (see module docstring)
                for target in targets:
                    jobs.append(Job(len(jobs), module, ci, k if cfg is not None else -1, label,
                                    fn.__name__, _describe_config(cfg), dtype, target))
                if quick:
                    break
    return jobs


def _nvidia_tool(name: str):
    import triton
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(path) if path.exists() else shutil.which(name)


def read_cubin(cubin: bytes, name: str) -> dict:
    """Registers, static shared, stack and local bytes, spill bytes and MMA instructions."""
    cuobjdump = _nvidia_tool("cuobjdump")
    if cuobjdump is None:
        raise RuntimeError("cuobjdump not found in triton/backends/nvidia/bin or on PATH")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], check=True,
                               capture_output=True, text=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", f.name], check=True, capture_output=True,
                              text=True).stdout
    line = next((ln for ln in usage.splitlines() if "REG:" in ln), "")
    fields = dict(re.findall(r"(\w+):(\d+)", line))
    if "REG" not in fields:
        raise RuntimeError(f"no resource usage for {name} in cuobjdump output:\n{usage}")
    spill = {"STL": 0, "LDL": 0}
    for op, mods in _LOCAL_RE.findall(sass):
        width = [_WIDTH_BYTES[m] for m in mods.split(".") if m in _WIDTH_BYTES]
        spill[op] += width[0] if width else 4
    return {
        "registers": int(fields["REG"]), "shared_static": int(fields.get("SHARED", 0)),
        "stack": int(fields.get("STACK", 0)), "local": int(fields.get("LOCAL", 0)),
        "spill_store_bytes": spill["STL"], "spill_load_bytes": spill["LDL"],
        "tensor_cores": sorted(set(_TC_RE.findall(sass))),
    }


def compile_job(job: Job) -> Result:
    """Compile one job and read its cubin (runs in a worker process)."""
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    result = Result(**asdict(job), shared_limit=SHARED_LIMIT.get(job.target, 0))
    start = time.perf_counter()
    try:
        label, kernel, signature, constexprs = _cases(job.module)[job.case_index]
        fn, configs, heuristic_names = unwrap(kernel)
        cfg = configs[job.config_index] if job.config_index >= 0 else None
        consts = dict(constexprs, **(cfg.kwargs if cfg is not None else {}))
        missing = [n for n in heuristic_names if n not in consts]
        if missing:
            raise ValueError(f"heuristic values {missing} must be given in constexprs")
        full_sig, attrs = {}, {}
        for i, p in enumerate(fn.params):
            if p.name in consts:
                full_sig[p.name] = "constexpr"
            elif p.name in signature:
                # Pointers are 16-byte aligned; an int typed "i32:16" is divisible by 16.
                kind, _, divisor = signature[p.name].partition(":")
                full_sig[p.name] = kind
                if kind.startswith("*") or divisor == "16":
                    attrs[(i,)] = [["tt.divisibility", 16]]
            else:
                raise ValueError(f"argument {p.name!r} has neither a type nor a constexpr value")
        options = {}
        if cfg is not None:
            options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages,
                       "num_ctas": getattr(cfg, "num_ctas", 1)}
            if getattr(cfg, "maxnreg", None) is not None:
                options["maxnreg"] = cfg.maxnreg
        compiled = triton.compile(ASTSource(fn, full_sig, consts, attrs),
                                  target=GPUTarget("cuda", job.target, 32), options=options)
        info = read_cubin(compiled.asm["cubin"], fn.__name__)
        result.__dict__.update(info)
        result.shared_dynamic = int(compiled.metadata.shared)
        result.shared = result.shared_dynamic + result.shared_static
        result.ok = True
    except Exception as exc:  # every failure is a row of the report, not a crash of the check
        result.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}" \
            if str(exc).strip() else type(exc).__name__
    result.seconds = time.perf_counter() - start
    return result


def run_jobs(jobs, workers: int):
    """Compile the jobs over a pool of ``workers`` processes, results in job order."""
    def progress(done):
        if done % 20 == 0 or done == len(jobs):
            print(f"  {done}/{len(jobs)} compiled", file=sys.stderr, flush=True)

    if workers <= 1 or len(jobs) <= 1:
        results = []
        for job in jobs:
            results.append(compile_job(job))
            progress(len(results))
        return results
    # spawn: the workers must not inherit the parent's torch threads.
    ctx = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        results = []
        for result in pool.map(compile_job, jobs, chunksize=1):
            results.append(result)
            progress(len(results))
    return results


def kernels_hash() -> str:
    """sha256 over the kernel sources, so a saved report can tell whether it is stale."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fmt_tc(r: Result) -> str:
    return ",".join(r.tensor_cores) if r.tensor_cores else "no"


def format_table(results) -> str:
    """One row per (kernel, case, config, dtype, target)."""
    head = ("kernel", "case", "config", "dtype", "target", "regs", "smem", "spill st/ld", "stack",
            "tensor cores", "status")
    rows = [head]
    for r in results:
        status = "ok" if r.ok else "FAIL " + r.error
        if r.ok and r.over_shared:
            status = f"OVER smem limit {r.shared_limit}"
        elif r.ok and r.spills:
            status = "ok (spills)"
        rows.append((r.kernel, r.label, r.config, r.dtype, f"sm_{r.target}",
                     str(r.registers) if r.ok else "-", str(r.shared) if r.ok else "-",
                     f"{r.spill_store_bytes}/{r.spill_load_bytes}" if r.ok else "-",
                     str(r.stack) if r.ok else "-", _fmt_tc(r) if r.ok else "-", status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
             for row in rows]
    return "\n".join(lines)


def summarize(results, fail_on_spill: bool):
    """(exit status, summary lines)."""
    failed = [r for r in results if not r.ok]
    over = [r for r in results if r.ok and r.over_shared]
    spilling = [r for r in results if r.ok and r.spills]
    no_tc = [r for r in results if r.ok and not r.tensor_cores]
    lines = [
        f"{len(results)} compiles: {len(failed)} failed, {len(over)} over the shared-memory "
        f"limit, {len(spilling)} spill (reported{', failing' if fail_on_spill else ''}), "
        f"{len(no_tc)} without tensor-core instructions",
    ]
    if spilling:
        worst = max(spilling, key=lambda r: r.spill_store_bytes + r.spill_load_bytes)
        lines.append(f"most spill: {worst.kernel} {worst.label} {worst.config} {worst.dtype} "
                     f"sm_{worst.target}: {worst.spill_store_bytes} B stored / "
                     f"{worst.spill_load_bytes} B loaded, stack {worst.stack} B")
    bad = failed or over or (fail_on_spill and spilling)
    return (1 if bad else 0), lines


def registered_kernels() -> dict:
    """module -> the kernel names its compile_cases() lists (before any filter)."""
    return {m: sorted({unwrap(case[1])[0].__name__ for case in _cases(m)})
            for m in KERNEL_MODULES}


def to_json(results, wall_s: float, targets, sources_hash: str) -> dict:
    import triton
    return {
        "registered": registered_kernels(),
        "meta": {"triton": triton.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                 "git_commit": _git_commit(), "kernels_hash": sources_hash,
                 "targets": list(targets), "wall_s": round(wall_s, 1),
                 "shared_limit": SHARED_LIMIT},
        "results": [dict(asdict(r), spills=r.spills, over_shared=r.over_shared)
                    for r in results],
    }


def _parse_targets(text: str):
    targets = []
    for t in text.split(","):
        t = t.strip().lower().removeprefix("sm_").removeprefix("sm")
        if not t.isdigit():
            raise argparse.ArgumentTypeError(f"bad target {t!r}: use e.g. 80,90 or sm_90")
        targets.append(int(t))
    return targets


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m kernels.compile_check", description=__doc__
                                .split("\n")[0])
    p.add_argument("--targets", type=_parse_targets, default=list(DEFAULT_TARGETS),
                   help="compute capabilities, comma separated (default 80,90)")
    p.add_argument("--kernels", default="", help="comma-separated substrings of module, kernel "
                   "or case names to keep (default: all)")
    p.add_argument("--dtypes", default="", help="comma-separated dtypes to keep, e.g. fp16,"
                   "fp32-tf32 (default: all)")
    p.add_argument("--quick", action="store_true", help="a representative subset: the first "
                   "case and first config of each kernel")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (default: min(2, CPUs))")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--fail-on-spill", action="store_true", help="exit 1 when a config spills")
    return p.parse_args(argv)


_GROUP_ENV = "CNN_COMPILE_CHECK_GROUP"


def _run_in_own_group(argv) -> int:
    """Run the check in a child process in its own process group with TRITON_INTERPRET=0.

    The interpreter decision is made when the kernels are decorated, so an interpreted process
    cannot compile them; and the child's group (pool workers, their ptxas runs) is killed as a
    whole when this process is interrupted or terminated, so nothing is left running.
    """
    env = dict(os.environ, TRITON_INTERPRET="0", **{_GROUP_ENV: "1"})
    env.pop("CNN_AUTOTUNE", None)  # every config is compiled, whatever the caller tunes
    proc = subprocess.Popen([sys.executable, "-m", "kernels.compile_check", *argv], env=env,
                            start_new_session=True)

    def stop(signum, _frame):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop(signal.SIGINT, None)


def main(argv=None) -> int:
    args = parse_args(argv)
    if runtime.INTERPRET or os.environ.get(_GROUP_ENV) != "1":
        return _run_in_own_group(sys.argv[1:] if argv is None else list(argv))
    import kernels.compile_check as cc  # by its importable name, so workers can unpickle jobs

    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())
    start = time.perf_counter()
    sources_hash = kernels_hash()  # of the sources compiled, taken before compiling
    try:
        jobs = cc.collect_jobs(KERNEL_MODULES, args.targets, split(args.kernels),
                               split(args.dtypes), args.quick)
    except Exception as exc:  # a module that fails to import or list its cases fails the check
        print(f"compile_check: could not collect the kernel cases: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    if not jobs:
        print("compile_check: no kernel config matches the filters", file=sys.stderr)
        return 1
    print(f"compiling {len(jobs)} kernel configs for "
          f"{', '.join(f'sm_{t}' for t in args.targets)} on {args.jobs} processes ...",
          flush=True)
    results = cc.run_jobs(jobs, args.jobs)
    wall = time.perf_counter() - start
    print(format_table(results))
    status, lines = summarize(results, args.fail_on_spill)
    for line in lines:
        print(line)
    print(f"wall time {wall:.1f} s ({sum(r.seconds for r in results):.1f} s of compiling)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(to_json(results, wall, args.targets, sources_hash),
                                              indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
