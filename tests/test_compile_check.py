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


_SPECIALISATION_PROBE = """
import importlib, json
from kernels.compile_check import unwrap
out = {}
for module in ("kernels.conv2d_forward", "kernels.conv2d_input_grad", "kernels.conv2d_weight_grad"):
    for label, kernel, signature, constexprs in importlib.import_module(module).compile_cases():
        if module + " " + label in out:
            continue  # the first case of each label is fp16
        params = [p.name for p in unwrap(kernel)[0].params]
        ints = {k: v for k, v in constexprs.items() if type(v) is int}
        out[module + " " + label] = dict(signature=signature, ints=ints, params=params,
                                         covered=sorted(set(signature) | set(constexprs)))
print(json.dumps(out))
"""


def test_conv_cases_are_specialised_as_a_launch_specialises_them():
    """The conv compile cases come from the launchers' own arguments for the example layer:
    unit strides become constants and multiples of 16 are marked divisible, as Triton's
    launcher does, so the report describes the kernel that runs (vector loads on channels_last)."""
    env = dict(os.environ, TRITON_INTERPRET="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", _SPECIALISATION_PROBE], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    cases = json.loads(proc.stdout)
    fwd_nhwc = cases["kernels.conv2d_forward bias nhwc"]
    assert fwd_nhwc["ints"]["sxc"] == fwd_nhwc["ints"]["swi"] == fwd_nhwc["ints"]["syc"] == 1
    assert fwd_nhwc["signature"]["c_in_g"] == "i32:16"  # 64 channels per group
    assert fwd_nhwc["signature"]["H"] == "i32"  # 56 is not a multiple of 16
    assert fwd_nhwc["signature"]["x_ptr"] == "*fp16"
    fwd_nchw = cases["kernels.conv2d_forward bias nchw"]
    assert fwd_nchw["ints"]["sxw"] == 1 and fwd_nchw["signature"]["sxc"] == "i32:16"  # 56*56
    assert cases["kernels.conv2d_forward stats nhwc"]["signature"]["stats_ptr"] == "*fp32"
    assert cases["kernels.conv2d_weight_grad dw+db nhwc"]["signature"]["dw_ptr"] == "*fp32"
    # The weight gradient is compiled with the reduction split as on a GPU, not as one slot.
    assert "SPLIT" not in cases["kernels.conv2d_weight_grad dw+db nhwc"]["ints"]
    assert {label.split()[-1] for label in cases} == {"nhwc", "nchw"}
    for case in cases.values():  # every argument but the autotuned tiles is typed or constant
        tiles = {"BLOCK_M", "BLOCK_N", "BLOCK_K"}
        assert set(case["params"]) - tiles <= set(case["covered"])
