"""The GPU check rehearsed on the CPU (``python -m benchmarks.gpu_check --rehearse``): every
stage end to end through the interpreter, the same files as a GPU run, so the first GPU run is
not the check's first run. Plus the pieces a rehearsal cannot show failing: the configs stage
catching a wrong result, the bench order, the tests stage's budget."""
import csv
import json
import os
import subprocess
import sys

import pytest
from support import REPO  # noqa: E402

from benchmarks import configs_check, gpu_check, ops, shapes
from benchmarks.__main__ import budget_order, build_benches


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


@pytest.mark.slow
def test_rehearsal_runs_every_stage_and_writes_the_gpu_runs_files(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--rehearse", "--out",
                           str(out)], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=600)
    report = json.loads((out / "gpu_check.json").read_text())
    stages = report["stages"]
    assert report["mode"] == "rehearsal" and list(stages) == ["configs", "tests", "bench", "mnist"]
    # The budgets cut the tests and the bench on purpose: 'timeout', not 'failed' (exit 3).
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    configs = stages["configs"]
    assert configs["status"] == "ok" and configs["run"] == configs["ok"] >= 10
    assert configs["enumerated"] > 500 and "subset" in configs
    rows = json.loads((out / "configs" / "configs.json").read_text())["rows"]
    assert {r["kernel"] for r in rows} == set(configs_check.CONV_KERNELS
                                              + configs_check.DEPTHWISE_KERNELS
                                              + configs_check.POOL_BN_OPS)
    assert stages["tests"]["status"] == "timeout"
    counts = stages["tests"]["counts"]
    assert counts["failed"] == counts["errors"] == 0 and counts["left_out_by_budget"] > 0
    bench = stages["bench"]
    assert bench["status"] == "timeout" and bench["rows"] >= 1 and bench["left_out_by_budget"]
    with open(out / "bench" / "benchmarks.csv", newline="") as f:
        bench_rows = list(csv.DictReader(f))
    assert all(r["check"] == "ok" and r["ours_ms"] for r in bench_rows)
    first = [r["op"] for r in bench_rows[:len(ops.ALL_OPS)]]
    assert len(set(first)) == len(first)  # a row of every op before any op's second row
    mnist = stages["mnist"]
    assert mnist["status"] == "ok"
    assert [(r["run"], r["status"]) for r in mnist["runs"]] == [
        ("torch_compile_fast", "skipped: not in --backends"), ("triton_fast", "ok"),
        ("torch_fast", "ok")]
    assert report["mnist_data"]["source"].startswith("synthetic")
    assert (out / "mnist" / "runs.jsonl").read_text().count("\n") == 3
    # The output ends with the table a person reads whole.
    tail = proc.stdout[proc.stdout.index("[gpu_check] results in"):]
    for text in ("configs ok", "ours/cuDNN speed per layer", "smoke.conv3x3",
                 "MNIST, cnn.train --recipe fast", "torch eager", "torch.compile",
                 "REHEARSAL on a CPU"):
        assert text in tail, text
    assert (out / "summary.txt").read_text().strip() in proc.stdout


def test_configs_stage_catches_a_wrong_result(monkeypatch):
    """A config whose result is off fails its row (here the reference is shifted by 1)."""
    case = next(c for c in configs_check.rehearsal_subset(configs_check.enumerate_cases(
        configs_check.REHEARSAL_POOL_BN_SHAPE)) if c["kernel"] == "forward")
    assert configs_check.run_case(case, configs_check._device())["check"] == "ok"

    torch_conv2d = configs_check.F.conv2d

    class Shifted:
        conv2d = staticmethod(lambda *a, **k: torch_conv2d(*a, **k) + 1)

    monkeypatch.setattr(configs_check, "F", Shifted)
    row = configs_check.run_case(case, configs_check._device())
    assert row["check"] == "MISMATCH" and float(row["max_rel_err"]) > 0.1


def test_configs_stage_enumerates_every_gpu_config():
    from cnn.kernels.conv2d.configs import IMPLICIT_GEMM_TILES_GPU
    from cnn.kernels.conv2d.weight_grad import FP32_IEEE_TILES, WGRAD_TILES_GPU
    cases = configs_check.enumerate_cases()
    forward = {(c["dtype"], c["layout"], c["problem"], c["config"]) for c in cases
               if c["kernel"] == "forward"}
    assert len(forward) == 4 * 2 * 2 * len(IMPLICIT_GEMM_TILES_GPU)
    wgrad = [c["config"] for c in cases if c["kernel"] == "weight_grad"]
    assert set(wgrad) == set(WGRAD_TILES_GPU) | set(FP32_IEEE_TILES)
    assert len({c["case"] for c in cases}) == len(cases)


def test_bench_order_measures_every_family_first():
    benches = build_benches(list(ops.ALL_OPS), [], list(ops.DTYPES), list(ops.LAYOUTS),
                            shapes.conv_shapes(), shapes.activation_shapes())
    ordered = budget_order(benches)
    assert sorted(ordered, key=id) == sorted(benches, key=id)
    n = len(ops.ALL_OPS)
    first, second = ordered[:n], ordered[n:2 * n]
    assert [b.op for b in first] == [b.op for b in second] == list(ops.ALL_OPS)
    assert {(b.dtype, b.layout) for b in first} == {("bf16", "channels_last")}
    assert {(b.dtype, b.layout) for b in second} == {("tf32", "nchw")}
    assert {b.shape.name for b in first} == {"resnet18.layer1.3x3.b32", "resnet18.layer1_out.b32"}
    # Then layer by layer in bf16 channels_last: the next rows are every op on a second layer.
    third = ordered[2 * n:3 * n]
    assert {(b.dtype, b.layout) for b in third} == {("bf16", "channels_last")}
    assert len({b.op for b in third}) == n


def test_tests_stage_skips_what_its_budget_leaves_out(tmp_path):
    """Past --budget-s the plugin skips tests (pytest ends with its XML), and the stage counts
    them apart from ordinary skips."""
    (tmp_path / "test_two.py").write_text("def test_a():\n    pass\n\n"
                                         "def test_b():\n    pass\n")
    xml = tmp_path / "pytest.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_two.py"),
                           "-o", "addopts=", "-p", "no:cacheprovider", "-p",
                           "benchmarks.pytest_budget", "--budget-s=0", f"--junitxml={xml}"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert gpu_check._junit_counts(xml)["counts"] == {
        "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "left_out_by_budget": 2}


def test_overall_status():
    ok, cut = {"status": "ok"}, {"status": "timeout"}
    assert gpu_check.overall_status({"a": ok, "b": {"status": "skipped: no pytest"}}) == 0
    assert gpu_check.overall_status({"a": ok, "b": cut}) == 3
    assert gpu_check.overall_status({"a": {"status": "failed"}, "b": cut}) == 1


def test_closing_table_reads_ratios_and_time_to_99():
    """What a GPU run's table shows, from stand-in rows (no figure here is a measurement)."""
    from benchmarks.report import gpu_check_summary
    meta = {"gpu": "a GPU", "torch_version": "t", "triton_version": "tr", "date": "d",
            "git_commit": "c"}
    run = lambda s: {"status": "ok", "seconds_to_99_val": s}
    report = {"meta": meta, "mode": "gpu", "stages": {
        "bench": {"status": "timeout", "seconds": 80, "rows": 3, "mismatches": 1, "errors": 0,
                  "left_out_by_budget": 9},
        "mnist": {"status": "ok", "fast_recipe": {
            "ours": run(12.5), "torch_eager": run(25.0),
            "torch_compile": {"status": "timeout"}, "ours_over_torch_time": 0.5}}}}
    rows = [{"op": "conv2d.fwd", "shape": "L", "dtype": "bf16", "layout": "channels_last",
             "check": "ok", "speedup": "0.8"},
            {"op": "conv2d.dgrad", "shape": "L", "dtype": "bf16", "layout": "channels_last",
             "check": "MISMATCH", "speedup": "2.0"},
            {"op": "batch_norm.fwd", "shape": "A", "dtype": "bf16", "layout": "channels_last",
             "check": "ok", "speedup": "1.25"}]
    table = gpu_check_summary(report, rows).splitlines()
    assert "bench   timeout in 80 s: 3 rows, 1 mismatches, 0 errors, 9 left out" in table[1]
    header = next(line for line in table if line.startswith("layer"))
    assert header.split() == ["layer", "dtype", "fwd", "dgrad", "bn"]
    assert next(line for line in table if line.startswith("L ")).split() == [
        "L", "bf16", "channels_last", "0.80", "MISMATCH", "."]
    assert table[-1] == ("  ours 12.5 s | torch eager 25.0 s | torch.compile timeout  "
                         "(ours / torch eager time 0.5)")
