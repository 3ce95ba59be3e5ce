"""python -m benchmarks.static: every registered kernel compiles for sm_80 and sm_90, and the
report reads each convolution's main loop against the reference GEMM's.

The full check (every layer x layout x dtype x pass, ~1400 compiles) takes about 15 minutes on
two cores, so the compiling test runs ``--quick``: each kernel's first case and autotune config
and their reference GEMMs, for both targets. It runs in a subprocess with TRITON_INTERPRET=0:
compiling needs the kernels decorated for the GPU path, which this (interpreted) test process
cannot give.
"""
import json
import subprocess
import sys

import pytest
from support import REPO  # noqa: E402

CONV_MODULES = ("cnn.kernels.conv2d.forward", "cnn.kernels.conv2d.input_grad",
                "cnn.kernels.conv2d.weight_grad", "cnn.kernels.conv2d.depthwise")
RECORD_FIELDS = {"kernel", "layer", "layout", "dtype", "target", "config", "registers",
                 "spill_bytes", "mma", "operand_loads", "loop_instructions_per_mma",
                 "reference_instructions_per_mma", "ratio_to_reference", "mma_in_flight",
                 "conversion_bytes", "min_bytes", "key"}


@pytest.mark.slow
def test_every_registered_kernel_compiles_for_sm80_and_sm90(tmp_path, compiled_env):
    out = tmp_path / "compile_check.json"
    # SIGTERM on timeout: the tool then kills its whole process group (workers, ptxas).
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.static", "--quick",
                             "--json", str(out)], cwd=REPO, env=compiled_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        proc.terminate()
        stdout, stderr = proc.communicate()
        pytest.fail("python -m benchmarks.static --quick took over 20 minutes:\n" + stderr[-4000:])
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
