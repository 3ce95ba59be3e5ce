"""GPU readiness without a GPU: compile every kernel for sm_80 and sm_90, read its SASS, and set
each convolution's main loop beside a plain GEMM's compiled in the same run.

    python -m benchmarks.static.compile_check [--targets 80,90] [--kernels forward,nchw]
                                              [--dtypes fp16] [--quick] [--json PATH] [--fresh]

What is compiled:
    convolutions  ``compile_cases.conv_cases()``: every layer x layout x dtype x pass,
                  built by the launchers' own ``launch_arguments`` (the kernel that runs)
    reference     ``reference_gemm``: the tutorial's tiled GEMM for the same M, N, K,
                  tile, warps, stages, dtype and target as each convolution config (once per
                  distinct problem)
    other ops     each module in ``OTHER_MODULES`` defines ``compile_cases()`` returning
                  ``(label, kernel, signature, constexprs)``; signature maps every non-constexpr
                  argument to a Triton type ("*fp16", "i32", "i32:16" = divisible by 16)
Every autotune config a case keeps is compiled (see compile_cases for which); num_warps and
num_stages go to the compile options.

Each compile is ``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))``, which needs
no GPU; the ``cuobjdump`` in Triton's wheel gives registers and static shared memory, and the SASS
and PTX are read by ``benchmarks.static.sass``: spills (STL/LDL bytes), MMA kind, the main loop's
instructions per MMA, its operand loads (16-byte cp.async, TMA, plain; "cp.async16+index" when
both operand tiles arrive whole by 16-byte copies and plain loads beside them read an index
table), MMA groups in flight.
Per convolution config the report adds the reference's instructions per MMA and the ratio.

Targets, reported (not the exit status), for the tensor-core convolutions (fp16, bf16, TF32)
with C_in/groups >= 16: ratio to the reference <= 1.3, no spills, both operands by 16-byte async
copies or TMA, on sm_90 at least one MMA group in flight where wgmma runs (HGMMA; a tile under
64 rows per warpgroup runs mma.sync there, as its reference does, and has no groups); for
C_in < 16 the ratio aim is 2. IEEE fp32 has no tensor-core path, so no targets.

Incremental: with ``--json PATH`` an existing report at PATH is read first, and every compile
whose key (the kernel module's source hash with the kernels modules it imports, the case, the
config, the target, Triton's version, the SASS reader) is unchanged is taken from it instead of
recompiled: after an edit of one kernel module only its kernels compile. ``--fresh`` ignores it.

Exit status: 1 when a config fails to compile or needs more shared memory than its target gives
one block (opt-in maximum, static + dynamic). Spills are reported, not failed (``--fail-on-spill``
turns them into failures).
"""
import argparse
import concurrent.futures as futures
import functools
import hashlib
import importlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kernels import runtime

from .compile_cases import launch_signature, module_hash, unwrap  # noqa: F401  (re-exported)

# The op families besides the convolutions, each with a compile_cases() function.
OTHER_MODULES = [
    "kernels.pool2d.max_pool2d",
    "kernels.pool2d.avg_pool2d",
    "kernels.batch_norm.forward", "kernels.batch_norm.backward", "kernels.relu",
    "kernels.batch_norm.merge",
]
CONV_MODULES = ["kernels.conv2d.forward", "kernels.conv2d.input_grad",
                "kernels.conv2d.weight_grad", "kernels.conv2d.depthwise"]
KERNEL_MODULES = CONV_MODULES + OTHER_MODULES
REFERENCE_MODULE = "benchmarks.static.reference_gemm"

# cudaDevAttrMaxSharedMemoryPerBlockOptin: A100 (sm_80) 163 KB, H100/H200 (sm_90) 227 KB.
SHARED_LIMIT = {80: 166912, 90: 232448}
DEFAULT_TARGETS = (80, 90)
# Report targets (see the module docstring).
RATIO_TARGET = 1.3
RATIO_AIM_FEW_CHANNELS = 2.0
TARGET_DTYPES = ("fp16", "bf16", "tf32")  # the tensor-core ones
# Bump when the way a compile is made or read changes, so saved compiles are not reused.
FORMAT_VERSION = 2

_ELEMENT_BYTES = {"fp16": 2, "bf16": 2, "tf32": 4, "fp32": 4, "fp64": 8}


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


def _dtype_of(signature, constexprs) -> str:
    """Display dtype of an op case: its first pointer's element type, 'tf32' for TF32 dots."""
    first = next((t for t in signature.values() if t.startswith("*")), "-")
    return "tf32" if constexprs.get("INPUT_PRECISION") == "tf32" else first.lstrip("*")


@functools.lru_cache(maxsize=None)
def all_cases() -> tuple:
    """Every Case: the convolutions', then each OTHER_MODULES module's, in a fixed order (the
    workers rebuild the same list and find their case by index)."""
    from .compile_cases import Case, conv_cases

    cases = list(conv_cases())
    for module in OTHER_MODULES:
        for label, kernel, signature, constexprs in importlib.import_module(module) \
                .compile_cases():
            cases.append(Case(module=module, kernel=kernel, label=label, signature=signature,
                              constexprs=constexprs, dtype=_dtype_of(signature, constexprs)))
    return tuple(cases)


# config_index of a config the kernel's early pruning derived (a tile narrowed to the problem),
# so not in its autotune list; its tiles are the job's.
DERIVED_CONFIG = -2


@dataclass
class Job:
    """One compile: a case's config for a target, or the reference GEMM for a problem."""

    index: int
    case_index: int  # -1: the reference GEMM
    config_index: int  # -1: the kernel has no autotune configs; DERIVED_CONFIG: see there
    kernel: str = ""
    module: str = ""
    label: str = ""
    layer: str = "-"
    layout: str = "-"
    dtype: str = "-"
    conv_pass: str = "-"
    config: str = ""
    target: int = 90
    tile: dict = field(default_factory=dict)  # config kwargs and num_warps/num_stages
    gemm: list = None  # (M, N, K) for a convolution with tl.dot, and for the reference
    reference: int = -1  # index of the reference job of a convolution config
    min_bytes: int = 0
    conversion_bytes: int = 0
    key: str = ""


@dataclass
class Result(Job):
    """What one compile gave: resources read from the cubin and SASS, or the error."""

    ok: bool = False
    cached: bool = False
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
    loop: dict = field(default_factory=dict)
    loop_instructions: int = 0
    loop_mma: int = 0
    loop_instructions_per_mma: float = None
    operand_loads: str = "-"
    async16_coverage: float = None  # operand bytes per stage moved by 16-byte copies / needed
    mma_in_flight: int = 0
    reference_instructions_per_mma: float = None
    ratio_to_reference: float = None
    target_misses: list = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's and its tools' (ptxas, cuobjdump) CPU time

    @property
    def spills(self) -> bool:
        return self.spill_store_bytes > 0 or self.spill_load_bytes > 0 or self.stack > 0

    @property
    def spill_bytes(self) -> int:
        return max(0, self.spill_store_bytes) + max(0, self.spill_load_bytes)

    @property
    def over_shared(self) -> bool:
        return self.shared > self.shared_limit

    @property
    def mma(self) -> str:
        kinds = {k.split(".")[0] for k in self.tensor_cores}
        return "+".join(sorted(kinds)) if kinds else "none"


def _describe_config(cfg) -> str:
    if cfg is None:
        return "-"
    tiles = ",".join(f"{k.replace('BLOCK_', '')}{v}" for k, v in cfg.kwargs.items())
    return f"{tiles} w{cfg.num_warps} s{cfg.num_stages}"


def _tile(cfg) -> dict:
    if cfg is None:
        return {}
    return dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


@functools.lru_cache(maxsize=None)
def _tool_hash() -> str:
    import triton
    h = hashlib.sha256(f"{FORMAT_VERSION} {triton.__version__}".encode())
    h.update((Path(__file__).parent / "sass.py").read_bytes())
    return h.hexdigest()[:16]


def _job_key(module: str, kernel: str, signature, constexprs, tile, target) -> str:
    what = json.dumps([module_hash(module), _tool_hash(), kernel, signature,
                       sorted((k, str(v)) for k, v in constexprs.items()), tile, target],
                      sort_keys=True, default=str)
    return hashlib.sha256(what.encode()).hexdigest()[:20]


def _reference_case(job: Job):
    from .reference_gemm import reference_signature
    m, n, k = job.gemm
    pointer = "*fp32" if job.dtype in ("tf32", "fp32") else f"*{job.dtype}"
    signature, constexprs = reference_signature(m, n, k, pointer,
                                                "tf32" if job.dtype == "tf32" else "ieee")
    constexprs.update({k: v for k, v in job.tile.items() if k.startswith("BLOCK_")})
    return signature, constexprs


def _matches(case, name_filter, dtype_filter) -> bool:
    names = (case.module, unwrap(case.kernel)[0].__name__, case.label, case.layer, case.layout,
             case.conv_pass)
    if name_filter and not any(f in n for f in name_filter for n in names):
        return False
    return not dtype_filter or case.dtype in dtype_filter


def collect_jobs(targets, name_filter=(), dtype_filter=(), quick=False):
    """Expand the cases over their configs and targets, plus one reference job per distinct
    GEMM problem; filters match as substrings. quick: each kernel's first case and config.
    Every case's first config comes before the other configs of any case, the newest target
    first (an interrupted run then covers every kernel on sm_90), and each reference right
    after its first user."""
    first, more, seen_kernels = [], [], set()
    for ci, case in enumerate(all_cases()):
        fn, configs, _ = unwrap(case.kernel)
        if not _matches(case, name_filter, dtype_filter):
            continue
        if quick:
            if fn.__name__ in seen_kernels:
                continue
            seen_kernels.add(fn.__name__)
        kept = case.pruned_configs if case.pruned_configs is not None else configs
        # What the autotuner would time: the kept configs (pruning may narrow a tile to the
        # problem, giving a config that is not in the list: index DERIVED_CONFIG), minus those
        # a constexpr of the case pins away.
        chosen = [(configs.index(cfg) if cfg in configs else DERIVED_CONFIG, cfg)
                  for cfg in kept
                  if cfg is None or not any(key in case.constexprs
                                            and case.constexprs[key] != value
                                            for key, value in cfg.kwargs.items())]
        if quick or case.configs == "first":
            chosen = chosen[:1]
        for n, (k, cfg) in enumerate(chosen):
            (first if n == 0 else more).extend((ci, case, fn, k, cfg, t) for t in targets)
    # The newest target first within each group (stable: case order is kept).
    order = lambda group: sorted(group, key=lambda item: -item[-1])
    jobs, references = [], {}
    for ci, case, fn, k, cfg, target in order(first) + order(more):
        job = Job(len(jobs), ci, k if cfg is not None else -1, fn.__name__, case.module,
                  case.label, case.layer, case.layout, case.dtype, case.conv_pass,
                  _describe_config(cfg), target, _tile(cfg),
                  list(case.gemm) if case.gemm else None,
                  min_bytes=case.min_bytes, conversion_bytes=case.conversion_bytes)
        job.key = _job_key(case.module, fn.__name__, case.signature, case.constexprs, job.tile,
                           target)
        jobs.append(job)
        if job.gemm and cfg is not None:
            ref_id = (tuple(job.gemm), job.dtype, json.dumps(job.tile, sort_keys=True), target)
            if ref_id not in references:
                ref = Job(len(jobs), -1, -1, "reference_matmul_kernel", REFERENCE_MODULE,
                          "reference", "-", "-", job.dtype, "-", job.config, target, job.tile,
                          job.gemm)
                sig, consts = _reference_case(ref)
                ref.key = _job_key(REFERENCE_MODULE, ref.kernel, sig, consts, ref.tile, target)
                references[ref_id] = ref.index
                jobs.append(ref)
            job.reference = references[ref_id]
    return jobs


def _nvidia_tool(name: str):
    import triton
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(path) if path.exists() else shutil.which(name)


def read_cubin(cubin: bytes, name: str, ptx: str = "") -> dict:
    """Registers, static shared, stack and local bytes from cuobjdump, and what sass
    reads from the SASS and PTX (spills, MMA kinds, the main loop)."""
    from . import sass as sass_reader

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
    import re
    line = next((ln for ln in usage.splitlines() if "REG:" in ln), "")
    fields = dict(re.findall(r"(\w+):(\d+)", line))
    if "REG" not in fields:
        raise RuntimeError(f"no resource usage for {name} in cuobjdump output:\n{usage}")
    return {"registers": int(fields["REG"]), "shared_static": int(fields.get("SHARED", 0)),
            "stack": int(fields.get("STACK", 0)), "local": int(fields.get("LOCAL", 0)),
            **sass_reader.analyze(sass, ptx)}


def _async16_coverage(job: Job, loop: dict):
    """16-byte copies per stage x 16 B x threads / the A and B tile bytes (1.0: both operands
    arrive by 16-byte async copies); None without a tl.dot tile."""
    t = job.tile
    if not job.gemm or not {"BLOCK_M", "BLOCK_N", "BLOCK_K"} <= set(t):
        return None
    needed = (t["BLOCK_M"] + t["BLOCK_N"]) * t["BLOCK_K"] * _ELEMENT_BYTES.get(job.dtype, 4)
    moved = loop.get("ldgsts_16", 0) * 16 * 32 * t["num_warps"]
    return round(moved / needed, 3)


def compile_job(job: Job) -> Result:
    """Compile one job and read its cubin (runs in a worker process)."""
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    result = Result(**asdict(job), shared_limit=SHARED_LIMIT.get(job.target, 0))
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    try:
        if job.case_index < 0:
            from .reference_gemm import reference_matmul_kernel as fn
            signature, consts = _reference_case(job)
            cfg, heuristic_names = None, []
        else:
            case = all_cases()[job.case_index]
            signature = case.signature
            fn, configs, heuristic_names = unwrap(case.kernel)
            cfg = configs[job.config_index] if job.config_index >= 0 else None
            # The tiles come from the job (a derived config is not in the kernel's list).
            consts = dict(case.constexprs, **{k: v for k, v in job.tile.items()
                                              if k not in ("num_warps", "num_stages")})
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
        if job.tile:
            options = {"num_warps": job.tile["num_warps"], "num_stages": job.tile["num_stages"]}
        if cfg is not None:
            options["num_ctas"] = getattr(cfg, "num_ctas", 1)
            if getattr(cfg, "maxnreg", None) is not None:
                options["maxnreg"] = cfg.maxnreg
        compiled = triton.compile(ASTSource(fn, full_sig, consts, attrs),
                                  target=GPUTarget("cuda", job.target, 32), options=options)
        info = read_cubin(compiled.asm["cubin"], fn.__name__, compiled.asm.get("ptx", ""))
        result.__dict__.update(info)
        result.shared_dynamic = int(compiled.metadata.shared)
        result.shared = result.shared_dynamic + result.shared_static
        result.async16_coverage = _async16_coverage(job, result.loop)
        if result.operand_loads == "mixed" and not result.loop.get("ldgsts_narrow") \
                and (result.async16_coverage or 0) >= 1:
            # Both operand tiles arrive whole by 16-byte copies; the plain loads beside them
            # read an index table (the weight gradient's row table), not operands.
            result.operand_loads = "cp.async16+index"
        result.ok = True
    except Exception as exc:  # every failure is a row of the report, not a crash of the check
        result.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}" \
            if str(exc).strip() else type(exc).__name__
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = round(_cpu_seconds() - cpu_start, 3)
    return result


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children: the cost of a compile on an idle
    machine, whatever else runs beside it."""
    import resource
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                     resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_jobs(jobs, workers: int, saved=None, checkpoint=None, every_s: float = 60.0):
    """Compile the jobs over a pool of ``workers`` processes, results in job order; a job whose
    key is in ``saved`` (key -> result record) is taken from there. ``checkpoint(results)``,
    called every ``every_s`` seconds with the results so far, lets an interrupted run resume."""
    saved = saved or {}
    results = [None] * len(jobs)
    todo = []
    for job in jobs:
        record = saved.get(job.key)
        if record is None:
            todo.append(job)
            continue
        known = {k: v for k, v in record.items() if k in Result.__dataclass_fields__}
        results[job.index] = Result(**dict(known, **asdict(job), cached=True))
    print(f"  {len(jobs) - len(todo)} taken from the saved report, {len(todo)} to compile",
          file=sys.stderr, flush=True)

    last = [time.perf_counter()]

    def progress(done):
        if done % 20 == 0 or done == len(todo):
            print(f"  {done}/{len(todo)} compiled", file=sys.stderr, flush=True)
        if checkpoint and time.perf_counter() - last[0] > every_s and done < len(todo):
            last[0] = time.perf_counter()
            partial = [r for r in results if r is not None]
            link_references(results, partial)
            checkpoint(partial)

    if workers <= 1 or len(todo) <= 1:
        for n, job in enumerate(todo, 1):
            results[job.index] = compile_job(job)
            progress(n)
    else:
        # spawn: the workers must not inherit the parent's torch threads.
        ctx = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for n, (job, result) in enumerate(zip(todo, pool.map(compile_job, todo, chunksize=1),
                                                  strict=True), 1):
                results[job.index] = result
                progress(n)
    link_references(results)
    return results


def link_references(results, subset=None) -> None:
    """Give each convolution config (of ``subset``, default all) its reference's instructions
    per MMA, the ratio, and the report targets it misses (see the module docstring)."""
    for r in results if subset is None else subset:
        reference = results[r.reference] if r.reference >= 0 else None
        if reference is not None and r.ok and reference.ok:
            ref = reference.loop_instructions_per_mma
            r.reference_instructions_per_mma = ref
            if ref and r.loop_instructions_per_mma:
                r.ratio_to_reference = round(r.loop_instructions_per_mma / ref, 2)
        r.target_misses = _target_misses(r, reference) \
            if r.ok and r.gemm and r.case_index >= 0 and r.dtype in TARGET_DTYPES else []


def _c_in_per_group(layer: str):
    from .compile_cases import LAYERS
    found = next((lay for lay in LAYERS if lay.name == layer), None)
    return found.c_in // found.groups if found else None


def _target_misses(r: Result, reference=None) -> list:
    misses = []
    few = (_c_in_per_group(r.layer) or 16) < 16
    limit = RATIO_AIM_FEW_CHANNELS if few else RATIO_TARGET
    if r.ratio_to_reference is None or r.ratio_to_reference > limit:
        misses.append(f"ratio {r.ratio_to_reference} > {limit}")
    if few:
        return misses  # the other targets are for C_in/groups >= 16
    if r.spills:
        misses.append("spills")
    loads_ok = r.operand_loads == "tma" or (r.operand_loads in ("cp.async16", "cp.async16+index")
                                            and (r.async16_coverage or 0) >= 1)
    if not loads_ok:
        misses.append(f"operands by {r.operand_loads} (coverage {r.async16_coverage})")
    wgmma = "HGMMA" in (r.mma, getattr(reference, "mma", None))
    if r.target >= 90 and wgmma and r.mma_in_flight < 1:
        misses.append("no MMA group in flight")
    return misses


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fmt(value) -> str:
    return "-" if value is None else str(value)


def _status(r: Result) -> str:
    if not r.ok:
        return "FAIL " + r.error
    if r.over_shared:
        return f"OVER smem limit {r.shared_limit}"
    return "ok (spills)" if r.spills else "ok"


def format_table(results) -> str:
    """One row per compile (reference GEMMs last)."""
    head = ("kernel", "layer", "layout", "case", "config", "dtype", "target", "regs", "smem",
            "spill", "mma", "loads", "in flight", "loop/mma", "ref/mma", "ratio", "status")
    rows = [head]
    for r in results:
        ok = r.ok
        rows.append((r.kernel, r.layer, r.layout, r.label, r.config, r.dtype, f"sm_{r.target}",
                     str(r.registers) if ok else "-", str(r.shared) if ok else "-",
                     str(r.spill_bytes) if ok else "-", r.mma if ok else "-",
                     r.operand_loads if ok else "-", str(r.mma_in_flight) if ok else "-",
                     _fmt(r.loop_instructions_per_mma), _fmt(r.reference_instructions_per_mma),
                     _fmt(r.ratio_to_reference), _status(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  "
                     + row[-1] for row in rows)


def summarize(results, fail_on_spill: bool):
    """(exit status, summary lines)."""
    failed = [r for r in results if not r.ok]
    over = [r for r in results if r.ok and r.over_shared]
    spilling = [r for r in results if r.ok and r.spills]
    conv = [r for r in results if r.ok and r.gemm and r.case_index >= 0
            and r.dtype in TARGET_DTYPES]
    lines = [
        f"{len(results)} compiles ({sum(r.cached for r in results)} from the saved report): "
        f"{len(failed)} failed, {len(over)} over the shared-memory limit, {len(spilling)} spill "
        f"(reported{', failing' if fail_on_spill else ''})",
        f"{len(conv)} tensor-core implicit-GEMM convolution configs: "
        f"{sum(not r.target_misses for r in conv)} meet the report targets (ratio to the "
        f"reference GEMM <= {RATIO_TARGET}, no spills, 16-byte async operands, an MMA group in "
        "flight where sm_90 runs wgmma; reported, not enforced)",
    ]
    if spilling:
        worst = max(spilling, key=lambda r: r.spill_bytes)
        lines.append(f"most spill: {worst.kernel} {worst.layer} {worst.layout} {worst.label} "
                     f"{worst.config} {worst.dtype} sm_{worst.target}: {worst.spill_store_bytes} "
                     f"B stored / {worst.spill_load_bytes} B loaded, stack {worst.stack} B")
    bad = failed or over or (fail_on_spill and spilling)
    return (1 if bad else 0), lines


def registered_kernels() -> dict:
    """module -> the kernel names its cases list (before any filter)."""
    out = {}
    for case in all_cases():
        out.setdefault(case.module, set()).add(unwrap(case.kernel)[0].__name__)
    return {m: sorted(names) for m, names in out.items()}


def record(r: Result) -> dict:
    """One JSON record of a result (every field, and the derived ones)."""
    return dict(asdict(r), spills=r.spills, spill_bytes=r.spill_bytes, mma=r.mma,
                over_shared=r.over_shared, config_kwargs=r.tile)


def to_json(results, wall_s: float, targets, quick: bool, partial: bool = False) -> dict:
    import triton
    modules = sorted({r.module for r in results} | set(KERNEL_MODULES) | {REFERENCE_MODULE})
    return {
        "registered": registered_kernels(),
        "meta": {"triton": triton.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                 "git_commit": _git_commit(), "module_hashes": {m: module_hash(m)
                                                                for m in modules},
                 "tool_hash": _tool_hash(), "targets": list(targets), "quick": quick,
                 "partial": partial,
                 "wall_s": round(wall_s, 1), "compiled": sum(not r.cached for r in results),
                 "reused": sum(r.cached for r in results),
                 "compile_s": round(sum(r.seconds for r in results if not r.cached), 1),
                 "compile_cpu_s": round(sum(r.cpu_seconds for r in results if not r.cached), 1),
                 "shared_limit": SHARED_LIMIT},
        "results": [record(r) for r in results],
    }


def load_saved(path) -> dict:
    """key -> result record of a saved report (empty when there is none or it is unreadable)."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {r["key"]: r for r in report.get("results", []) if r.get("key")}


def _parse_targets(text: str):
    targets = []
    for t in text.split(","):
        t = t.strip().lower().removeprefix("sm_").removeprefix("sm")
        if not t.isdigit():
            raise argparse.ArgumentTypeError(f"bad target {t!r}: use e.g. 80,90 or sm_90")
        targets.append(int(t))
    return targets


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.static.compile_check",
                                description=__doc__.split("\n")[0])
    p.add_argument("--targets", type=_parse_targets, default=list(DEFAULT_TARGETS),
                   help="compute capabilities, comma separated (default 80,90)")
    p.add_argument("--kernels", default="", help="comma-separated substrings of module, kernel, "
                   "case, layer or layout names to keep (default: all)")
    p.add_argument("--dtypes", default="", help="comma-separated dtypes to keep, e.g. fp16,tf32 "
                   "(default: all)")
    p.add_argument("--quick", action="store_true", help="a representative subset: the first "
                   "case and first config of each kernel, and their references")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (default: min(2, CPUs))")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON; an existing report "
                   "there supplies the unchanged compiles")
    p.add_argument("--fresh", action="store_true", help="recompile everything (ignore the saved "
                   "report at --json PATH)")
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
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.static.compile_check", *argv],
                            env=env, start_new_session=True)

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
    # by its importable name, so workers can unpickle jobs
    import benchmarks.static.compile_check as cc

    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())
    start = time.perf_counter()
    try:
        jobs = cc.collect_jobs(args.targets, split(args.kernels), split(args.dtypes), args.quick)
    except Exception as exc:  # a module that fails to import or list its cases fails the check
        print(f"compile_check: could not collect the kernel cases: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    if not jobs:
        print("compile_check: no kernel config matches the filters", file=sys.stderr)
        return 1
    saved = {} if args.fresh or not args.json else load_saved(args.json)
    print(f"{len(jobs)} kernel configs for {', '.join(f'sm_{t}' for t in args.targets)} on "
          f"{args.jobs} processes ...", flush=True)
    def checkpoint(partial):  # an interrupted run resumes from here (its keys are reused)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(to_json(
            partial, time.perf_counter() - start, args.targets, args.quick, partial=True)))

    results = cc.run_jobs(jobs, args.jobs, saved, checkpoint if args.json else None)
    wall = time.perf_counter() - start
    print(format_table(results))
    status, lines = summarize(results, args.fail_on_spill)
    for line in lines:
        print(line)
    compiled = [r for r in results if not r.cached]
    print(f"wall time {wall:.1f} s ({len(compiled)} compiled, "
          f"{sum(r.seconds for r in compiled):.1f} s of compiling, "
          f"{sum(r.cpu_seconds for r in compiled):.1f} CPU s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(to_json(results, wall, args.targets, args.quick),
                                              indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
