"""python -m benchmarks.static.compile_check: every registered kernel compiles for sm_80 and
sm_90, and the report reads each convolution's main loop against the reference GEMM's.

The full check (every layer x layout x dtype x pass, ~1400 compiles) takes about 15 minutes on
two cores, so the compiling test runs ``--quick``: each kernel's first case and autotune config
and their reference GEMMs, for both targets. It runs in a subprocess with TRITON_INTERPRET=0:
compiling needs the kernels decorated for the GPU path, which this (interpreted) test process
cannot give. The SASS reader is tested on a hand-written listing.
"""
import json
import os
import subprocess
import sys

import pytest
from support import REPO  # noqa: E402

from benchmarks.static import sass

CONV_MODULES = ("kernels.conv2d.forward", "kernels.conv2d.input_grad",
                "kernels.conv2d.weight_grad", "kernels.conv2d.depthwise")
RECORD_FIELDS = {"kernel", "layer", "layout", "dtype", "target", "config", "registers",
                 "spill_bytes", "mma", "operand_loads", "loop_instructions_per_mma",
                 "reference_instructions_per_mma", "ratio_to_reference", "mma_in_flight",
                 "conversion_bytes", "min_bytes", "key"}


def _compiled_env():
    return dict(os.environ, TRITON_INTERPRET="0",
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


@pytest.mark.slow
def test_every_registered_kernel_compiles_for_sm80_and_sm90(tmp_path):
    out = tmp_path / "compile_check.json"
    # SIGTERM on timeout: compile_check then kills its whole process group (workers, ptxas).
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.static.compile_check", "--quick",
                             "--json", str(out)], cwd=REPO, env=_compiled_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        proc.terminate()
        stdout, stderr = proc.communicate()
        pytest.fail("compile_check --quick took over 20 minutes:\n" + stderr[-4000:])
    assert proc.returncode == 0, stdout[-4000:] + stderr[-4000:]
    report = json.loads(out.read_text())
    registered = report["registered"]
    assert set(CONV_MODULES) <= set(registered)
    compiled = {(r["kernel"], r["target"]) for r in report["results"] if r["ok"]}
    for module, names in registered.items():
        assert names, f"{module} lists no kernel"
        for name in names:
            for target in (80, 90):
                assert (name, target) in compiled, f"{module}.{name} not compiled for sm_{target}"
    assert "sm_80" in stdout and "sm_90" in stdout
    results = report["results"]
    assert all(RECORD_FIELDS <= set(r) for r in results)
    # Each implicit-GEMM kernel is set beside the reference GEMM of its problem and tile.
    for name in ("conv2d_forward_kernel", "conv2d_input_grad_kernel",
                 "conv2d_weight_grad_kernel"):
        for target, mma in ((90, "HGMMA"), (80, "HMMA")):
            row = next(r for r in results if r["kernel"] == name and r["target"] == target)
            ref = results[row["reference"]]
            assert ref["kernel"] == "reference_matmul_kernel" and ref["target"] == target
            assert ref["config"] == row["config"] and ref["gemm"] == row["gemm"]
            assert row["mma"] == ref["mma"] == mma
            assert row["reference_instructions_per_mma"] == ref["loop_instructions_per_mma"] > 0
            assert row["ratio_to_reference"] == pytest.approx(
                row["loop_instructions_per_mma"] / ref["loop_instructions_per_mma"], abs=0.01)
    # The reference is the tutorial GEMM: 16-byte cp.async operands, wgmma overlapped on sm_90.
    ref90 = next(r for r in results if r["kernel"] == "reference_matmul_kernel"
                 and r["target"] == 90)
    assert ref90["operand_loads"] == "cp.async16" and ref90["mma_in_flight"] >= 1
    assert ref90["spill_bytes"] == 0
    assert set(report["meta"]["module_hashes"]) >= set(CONV_MODULES)


def test_limits_are_the_opt_in_shared_memory_per_block():
    from benchmarks.static import compile_check
    assert compile_check.SHARED_LIMIT == {80: 166912, 90: 232448}
    assert set(CONV_MODULES) <= set(compile_check.KERNEL_MODULES)


# A hand-written SASS listing: a prologue, a loop (0x0100-0x0160) with two HGMMAs, two 16-byte
# cp.async copies and a backward branch, a smaller loop without MMA, and the exit.
_SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E R2, desc[UR4][R4.64] ;
        /*0100*/                   WARPGROUP.ARRIVE ;
        /*0110*/                   HGMMA.64x128x16.F32 R24, gdesc[UR8], R24 ;
        /*0120*/                   HGMMA.64x128x16.F32 R24, gdesc[UR8], R24, gsb0 ;
        /*0130*/                   LDGSTS.E.BYPASS.128 [R35], desc[UR12][R24.64], P1 ;
        /*0140*/                   LDGSTS.E.BYPASS.128 [R35+0x1000], desc[UR12][R26.64], P2 ;
        /*0150*/                   IADD3 R3, R3, 0x1, RZ ;
        /*0160*/              @!P3 BRA 0x100 ;
        /*0170*/                   STL [R1], R3 ;
        /*0180*/                   LDL.64 R6, [R1] ;
        /*0190*/                   FADD R3, R3, R3 ;
        /*01a0*/               @P0 BRA 0x190 ;
        /*01b0*/                   EXIT ;
        /*01c0*/                   BRA 0x1c0;
"""
_PTX = "wgmma.wait_group.sync.aligned 1;\n wgmma.wait_group.sync.aligned 0;\n"


def test_sass_reader_finds_the_main_loop_and_counts_it():
    body = sass.main_loop(_SASS)
    assert [a for a, _ in body] == list(range(0x100, 0x170, 0x10))
    info = sass.analyze(_SASS, _PTX)
    assert info["loop_instructions"] == 7 and info["loop_mma"] == 2
    assert info["loop_instructions_per_mma"] == 3.5
    assert info["loop"]["ldgsts_16"] == 2 and info["loop"]["ldg"] == 0
    assert info["operand_loads"] == "cp.async16"
    assert info["mma_in_flight"] == 1
    assert info["tensor_cores"] == ["HGMMA.64x128x16.F32"]
    assert (info["spill_store_bytes"], info["spill_load_bytes"]) == (4, 8)
    # Plain loads in the loop, a wait for each group, no MMA anywhere.
    plain = _SASS.replace("LDGSTS.E.BYPASS.128 [R35]", "LDG.E.128 R8")
    assert sass.analyze(plain, "")["operand_loads"] == "mixed"
    assert sass.mma_groups_in_flight("wgmma.wait_group.sync.aligned 0;") == 0
    no_mma = sass.analyze(_SASS.replace("HGMMA", "FFMA"), "")
    assert no_mma["loop_instructions"] == 0 and no_mma["loop_instructions_per_mma"] is None


_CASES_PROBE = """
import json
from benchmarks.static.compile_cases import conv_cases, unwrap, LAYERS, LAYOUTS, PASSES
out = {}
for c in conv_cases():
    key = " ".join((unwrap(c.kernel)[0].__name__, c.layer, c.layout, c.dtype, c.label))
    ints = {k: v for k, v in c.constexprs.items() if type(v) is int}
    out[key] = dict(signature=c.signature, ints=ints, configs=c.configs, gemm=c.gemm,
                    kept=len(c.pruned_configs), conversion_bytes=c.conversion_bytes,
                    min_bytes=c.min_bytes, params=[p.name for p in unwrap(c.kernel)[0].params],
                    covered=sorted(set(c.signature) | set(c.constexprs)))
print(json.dumps(dict(cases=out, layers=[l.name for l in LAYERS],
                      layouts=[l[0] for l in LAYOUTS], passes=list(PASSES))))
"""


def test_conv_cases_are_specialised_as_a_launch_specialises_them():
    """The conv cases come from the launchers' own arguments: unit strides become constants and
    multiples of 16 are marked divisible, as Triton's launcher does, so the report describes the
    kernel that runs; every layer x layout x dtype x pass is there."""
    proc = subprocess.run([sys.executable, "-c", _CASES_PROBE], cwd=REPO, env=_compiled_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    probe = json.loads(proc.stdout)
    cases = probe["cases"]
    example = "example.resnet.3x3.b32"
    fwd_cl = cases[f"conv2d_forward_kernel {example} channels_last fp16 forward"]
    assert fwd_cl["ints"]["sxc"] == fwd_cl["ints"]["swi"] == fwd_cl["ints"]["syc"] == 1
    assert fwd_cl["signature"]["c_in_g"] == "i32:16"  # 64 channels per group
    assert fwd_cl["signature"]["H"] == "i32"  # 56 is not a multiple of 16
    assert fwd_cl["signature"]["x_ptr"] == "*fp16"
    assert fwd_cl["gemm"] == [32 * 56 * 56, 64, 9 * 64]
    # 64 output channels: the launcher's pruning clamps BLOCK_N to 64, so two of the ten
    # configs become duplicates of others and are dropped.
    assert fwd_cl["configs"] == "all" and fwd_cl["kept"] == 8
    assert fwd_cl["min_bytes"] == 2 * (32 * 64 * 56 * 56 * 2 + 64 * 64 * 9 + 64)
    # The statistics epilogue keeps only the tiles its launcher allows.
    assert cases[f"conv2d_forward_kernel {example} channels_last fp16 forward stats"]["kept"] < 10
    # The weight gradient is two launches there (split GEMM, then the sum of its slots).
    wgrad = cases[f"conv2d_weight_grad_kernel {example} channels_last fp16 wgrad "
                  "conv2d_weight_grad_kernel"]
    assert wgrad["signature"]["dw_ptr"] == "*fp32" and "SPLIT" not in wgrad["ints"]
    assert cases["conv2d_forward_kernel mnist.conv1.b64 nchw tf32 forward"]["configs"] == "first"
    for layer in probe["layers"]:
        for layout in probe["layouts"]:
            for dtype in ("fp16", "bf16", "tf32"):
                for conv_pass in probe["passes"]:
                    assert any(f" {layer} {layout} {dtype} {conv_pass}" in key for key in cases), \
                        (layer, layout, dtype, conv_pass)
    for case in cases.values():  # every argument but the autotuned tiles is typed or constant
        tiles = {"BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_P", "BLOCK_C", "BLOCK_R"}
        assert set(case["params"]) - tiles <= set(case["covered"])
        assert case["min_bytes"] > 0 and case["conversion_bytes"] >= 0


_JOBS_PROBE = """
import json
from benchmarks.static.compile_check import all_cases, collect_jobs, DERIVED_CONFIG
jobs = collect_jobs([90])
covered = {j.case_index for j in jobs}
missing = [" ".join((c.layer, c.layout, c.dtype, c.label)) for i, c in enumerate(all_cases())
           if i not in covered]
derived = sorted({(j.layer, j.config) for j in jobs if j.config_index == DERIVED_CONFIG})
print(json.dumps(dict(missing=missing, derived=derived)))
"""


def test_every_case_gets_a_compile_even_when_pruning_narrows_its_tiles():
    """A case whose launcher's pruning narrows every tile to the problem (MNIST's 1-channel
    conv1: K = 9, so BLOCK_K 16) keeps configs that are not in the kernel's list; they are
    compiled as narrowed, not dropped from the report."""
    proc = subprocess.run([sys.executable, "-c", _JOBS_PROBE], cwd=REPO, env=_compiled_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    probe = json.loads(proc.stdout)
    assert probe["missing"] == []
    assert any(layer == "mnist.conv1.b64" and "K16" in config
               for layer, config in probe["derived"])


def test_saved_compiles_are_reused_by_key(monkeypatch):
    """A compile whose key is in the saved report is taken from it, not recompiled; the key
    follows the kernel module's source (and what it imports)."""
    from benchmarks.static import compile_cases, compile_check
    from benchmarks.static.compile_check import Job

    assert {"kernels.runtime", "kernels.conv2d.configs", "kernels.conv2d.geometry"} <= \
        compile_cases.local_imports("kernels.conv2d.forward")
    assert compile_cases.module_hash("kernels.conv2d.forward") != \
        compile_cases.module_hash("kernels.relu")
    jobs = [Job(0, 0, 0, "k", "kernels.relu", "a", key="x1"),
            Job(1, 0, 0, "k", "kernels.relu", "b", key="x2")]
    saved = {"x1": {"key": "x1", "ok": True, "registers": 40, "spill_store_bytes": 0,
                    "spill_load_bytes": 0, "stack": 0, "shared": 0}}
    compiled = []
    monkeypatch.setattr(compile_check, "compile_job",
                        lambda job: compiled.append(job.key) or compile_check.Result(
                            **vars(job), ok=True))
    results = compile_check.run_jobs(jobs, 1, saved)
    assert compiled == ["x2"]
    assert results[0].cached and results[0].registers == 40 and results[0].label == "a"
    assert not results[1].cached
