"""benchmarks.static.compile: the cases expand to jobs (every kept config, each target, one
reference GEMM per problem), and a saved compile is reused while its key is unchanged."""
CONV_MODULES = ("cnn.kernels.conv2d.forward", "cnn.kernels.conv2d.input_grad",
                "cnn.kernels.conv2d.weight_grad", "cnn.kernels.conv2d.depthwise")


def test_limits_are_the_opt_in_shared_memory_per_block():
    from benchmarks.static import cases
    from benchmarks.static.compile import SHARED_LIMIT
    assert SHARED_LIMIT == {80: 166912, 90: 232448}
    assert set(CONV_MODULES) <= set(cases.KERNEL_MODULES)


_JOBS_PROBE = """
import json
from benchmarks.static.cases import all_cases
from benchmarks.static.compile import collect_jobs, DERIVED_CONFIG
jobs = collect_jobs([90])
covered = {j.case_index for j in jobs}
missing = [" ".join((c.layer, c.layout, c.dtype, c.label)) for i, c in enumerate(all_cases())
           if i not in covered]
derived = sorted({(j.layer, j.config) for j in jobs if j.config_index == DERIVED_CONFIG})
print(json.dumps(dict(missing=missing, derived=derived)))
"""


def test_every_case_gets_a_compile_even_when_pruning_narrows_its_tiles(probe):
    """A case whose launcher's pruning narrows every tile to the problem (MNIST's 1-channel
    conv1: K = 9, so BLOCK_K 16) keeps configs that are not in the kernel's list; they are
    compiled as narrowed, not dropped from the report."""
    found = probe(_JOBS_PROBE)
    assert found["missing"] == []
    assert any(layer == "mnist.conv1.b64" and "K16" in config
               for layer, config in found["derived"])


def test_saved_compiles_are_reused_by_key(monkeypatch):
    """A compile whose key is in the saved report is taken from it, not recompiled; the key
    follows the kernel module's source (and what it imports)."""
    from benchmarks.static import compile as static_compile
    from benchmarks.static.compile import Job

    assert {"cnn.kernels.runtime", "cnn.kernels.conv2d.configs", "cnn.kernels.conv2d.geometry"} <= \
        static_compile.local_imports("cnn.kernels.conv2d.forward")
    assert static_compile.module_hash("cnn.kernels.conv2d.forward") != \
        static_compile.module_hash("cnn.kernels.relu")
    jobs = [Job(0, 0, 0, "k", "cnn.kernels.relu", "a", key="x1"),
            Job(1, 0, 0, "k", "cnn.kernels.relu", "b", key="x2")]
    saved = {"x1": {"key": "x1", "ok": True, "registers": 40, "spill_store_bytes": 0,
                    "spill_load_bytes": 0, "stack": 0, "shared": 0}}
    compiled = []
    monkeypatch.setattr(static_compile, "compile_job",
                        lambda job: compiled.append(job.key) or static_compile.Result(
                            **vars(job), ok=True))
    results = static_compile.run_jobs(jobs, 1, saved)
    assert compiled == ["x2"]
    assert results[0].cached and results[0].registers == 40 and results[0].label == "a"
    assert not results[1].cached


def test_a_kernel_depends_on_what_it_imports_not_on_the_package(monkeypatch):
    """``from .. import runtime`` depends on runtime, not on everything cnn.kernels re-exports:
    an edit of batch norm leaves the convolutions' saved compiles valid (and batch norm's
    backward, which imports its forward, stale)."""
    from benchmarks.static import compile as static_compile

    imports = static_compile.local_imports("cnn.kernels.conv2d.input_grad")
    assert "cnn.kernels.runtime" in imports and "cnn.kernels" not in imports
    modules = ("cnn.kernels.conv2d.forward", "cnn.kernels.batch_norm.backward")
    before = [static_compile.module_hash(m) for m in modules]
    real = static_compile._source
    monkeypatch.setattr(static_compile, "_source", lambda name: real(
        "cnn.kernels.relu" if name == "cnn.kernels.batch_norm.forward" else name))
    static_compile.module_hash.cache_clear()
    try:
        after = [static_compile.module_hash(m) for m in modules]
    finally:
        static_compile.module_hash.cache_clear()
    assert after[0] == before[0] and after[1] != before[1]
