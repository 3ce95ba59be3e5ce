"""python -m kernels.compile_check compiles every registered kernel for sm_80 and sm_90.

The full check (every config x dtype x epilogue, ~280 compiles) takes tens of minutes on two
shared cores, so this test runs ``--quick``: each registered kernel's first case and first
autotune config, for both targets. The full run is ``python -m kernels.compile_check``.
It runs in a subprocess with TRITON_INTERPRET=0: compiling needs the kernels decorated for the
GPU path, which this (interpreted) test process cannot give.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONV_MODULES = ("kernels.conv2d_forward", "kernels.conv2d_input_grad", "kernels.conv2d_weight_grad")


@pytest.mark.slow
def test_every_registered_kernel_compiles_for_sm80_and_sm90(tmp_path):
    out = tmp_path / "compile_check.json"
    env = dict(os.environ, TRITON_INTERPRET="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    # SIGTERM on timeout: compile_check then kills its whole process group (workers, ptxas).
    proc = subprocess.Popen([sys.executable, "-m", "kernels.compile_check", "--quick", "--json",
                             str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
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
        assert names, f"{module}.compile_cases() lists no kernel"
        for name in names:
            for target in (80, 90):
                assert (name, target) in compiled, f"{module}.{name} not compiled for sm_{target}"
    # The table names every compiled row.
    assert "sm_80" in stdout and "sm_90" in stdout


def test_limits_are_the_opt_in_shared_memory_per_block():
    from kernels import compile_check
    assert compile_check.SHARED_LIMIT == {80: 166912, 90: 232448}
    assert set(CONV_MODULES) <= set(compile_check.KERNEL_MODULES)
