"""Compiling the cases: each case's configs for each target become jobs, each job is one
``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`` (no GPU needed) read back
with the ``cuobjdump`` in Triton's wheel and ``benchmarks.static.sass``; the jobs run over a
process pool that checkpoints, and a job whose key is unchanged is taken from the saved report.

    key   the kernel module's source hash with the kernels modules it imports
          (``module_hash``), the case, the config, the target, Triton's version and the SASS
          reader (``tool_hash``): after an edit of one kernel module only its kernels compile
"""
import ast
import concurrent.futures as futures
import functools
import hashlib
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

from ..env import REPO
from .cases import REFERENCE_MODULE, all_cases, unwrap

# cudaDevAttrMaxSharedMemoryPerBlockOptin: A100 (sm_80) 163 KB, H100/H200 (sm_90) 227 KB.
SHARED_LIMIT = {80: 166912, 90: 232448}
DEFAULT_TARGETS = (80, 90)
# Bump when the way a compile is made or read changes, so saved compiles are not reused.
FORMAT_VERSION = 2

_ELEMENT_BYTES = {"fp16": 2, "bf16": 2, "tf32": 4, "fp32": 4, "fp64": 8}
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


# ---- keys: a saved compile is reused while its key is unchanged ------------------------------

def _source(module: str) -> Path:
    """The file of a dotted module name of this repository (a package is its __init__.py);
    cnn.kernels is the folder kernels/."""
    parts = module.split(".")
    base = REPO.joinpath(*(parts[1:] if parts[:2] == ["cnn", "kernels"] else parts))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def local_imports(module: str) -> set:
    """The modules of this repository's kernels/ that a module imports (relative, or as
    ``cnn.kernels.x``), as dotted names."""
    path = _source(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1])
                parent = f"{base}.{node.module}" if node.module else base
                if node.module:  # ``from .. import x`` imports x, not what the package re-exports
                    names.add(parent)
                names.update(f"{parent}.{a.name}" for a in node.names)
            elif node.module and node.module.startswith("cnn.kernels"):
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("cnn.kernels"))
    return {n for n in names if n.startswith("cnn.kernels") and _source(n).exists()}


@functools.lru_cache(maxsize=None)
def module_hash(module: str) -> str:
    """sha256 of a kernel module's source and of every kernels module it imports, transitively
    (a helper such as runtime.py or configs.py changes what its users compile)."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name == module or _source(name).name != "__init__.py":
            # A package's __init__ only re-exports: its own imports change nothing compiled here.
            todo.extend(local_imports(name))
    h = hashlib.sha256()
    for name in sorted(seen):
        h.update(name.encode())
        h.update(_source(name).read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def tool_hash() -> str:
    """FORMAT_VERSION, Triton's version and the SASS reader's source."""
    import triton
    h = hashlib.sha256(f"{FORMAT_VERSION} {triton.__version__}".encode())
    h.update((Path(__file__).parent / "sass.py").read_bytes())
    return h.hexdigest()[:16]


def _job_key(module: str, kernel: str, signature, constexprs, tile, target, options=None) -> str:
    what = [module_hash(module), tool_hash(), kernel, signature,
            sorted((k, str(v)) for k, v in constexprs.items()), tile, target]
    if options:
        what.append(options)
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()) \
        .hexdigest()[:20]


# ---- jobs: the cases' configs x targets, and one reference GEMM per distinct problem ---------

def _describe_config(cfg) -> str:
    if cfg is None:
        return "-"
    tiles = ",".join(f"{k.replace('BLOCK_', '')}{v}" for k, v in cfg.kwargs.items())
    return f"{tiles} w{cfg.num_warps} s{cfg.num_stages}"


def _tile(cfg) -> dict:
    if cfg is None:
        return {}
    return dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


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
                           target, case.options)
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


# ---- one compile, read back ------------------------------------------------------------------

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
        options = {}
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
            options = dict(case.options)
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


# ---- the pool: every job, reused or compiled, checkpointed -----------------------------------

def run_jobs(jobs, workers: int, saved=None, checkpoint=None, every_s: float = 60.0):
    """Compile the jobs over a pool of ``workers`` processes, results in job order; a job whose
    key is in ``saved`` (key -> result record) is taken from there. ``checkpoint(results)``,
    called every ``every_s`` seconds with the results so far (in job order, None for the jobs
    not done), lets an interrupted run resume."""
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
            checkpoint(list(results))

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
    return results


_GROUP_ENV = "CNN_STATIC_GROUP"


def in_own_group() -> bool:
    """Whether this process is the child ``run_in_own_group`` started."""
    return os.environ.get(_GROUP_ENV) == "1"


def run_in_own_group(module: str, argv) -> int:
    """Run ``python -m module argv`` in a child process in its own process group with
    TRITON_INTERPRET=0, and return its exit status.

    The interpreter decision is made when the kernels are decorated, so an interpreted process
    cannot compile them; and the child's group (pool workers, their ptxas runs) is killed as a
    whole when this process is interrupted or terminated, so nothing is left running.
    """
    env = dict(os.environ, TRITON_INTERPRET="0", **{_GROUP_ENV: "1"})
    env.pop("CNN_AUTOTUNE", None)  # every config is compiled, whatever the caller tunes
    proc = subprocess.Popen([sys.executable, "-m", module, *argv], env=env,
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


__all__ = ["Job", "Result", "SHARED_LIMIT", "DEFAULT_TARGETS", "FORMAT_VERSION",
           "DERIVED_CONFIG", "module_hash", "local_imports", "tool_hash", "collect_jobs",
           "read_cubin", "compile_job", "run_jobs", "in_own_group", "run_in_own_group"]
