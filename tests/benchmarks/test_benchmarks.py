"""CPU smoke of ``python -m benchmarks`` and the arithmetic behind its columns (fast)."""
import csv
import json
import os
import subprocess
import sys

import pytest
from support import REPO  # noqa: E402

from benchmarks import ops, roofline, shapes
from benchmarks.__main__ import budget_order, build_benches
from benchmarks.end_to_end import seconds_to_accuracy


def test_cpu_run_is_a_labelled_smoke_check(tmp_path):
    static = tmp_path / "cc.json"  # a one-row static report stands in for the real one
    static.write_text(json.dumps({"meta": {}, "results": [{
        "kernel": "k", "label": "forward", "config": "M64 w4 s3", "dtype": "fp16", "target": 90,
        "layer": "example.resnet.3x3.b32", "layout": "nchw", "ok": True, "registers": 128,
        "shared": 1024, "spill_store_bytes": 0, "spill_load_bytes": 0, "stack": 0,
        "tensor_cores": ["HGMMA.64x64x16.F32"], "mma": "HGMMA", "operand_loads": "cp.async16",
        "mma_in_flight": 1, "loop_instructions_per_mma": 90.5,
        "reference_instructions_per_mma": 38.5, "ratio_to_reference": 2.35,
        "conversion_bytes": 51_000_000, "min_bytes": 25_800_000,
        "target_misses": ["ratio 2.35 > 1.3"], "spills": False, "over_shared": False,
        "error": ""}]}))
    out = tmp_path / "out"
    env = dict(os.environ, TRITON_INTERPRET="1",  # the CPU path even on a CUDA machine
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--ops", "relu.fwd", "--layouts",
                           "nchw", "--shapes", "mnist.act1.b64", "--static-report", str(static),
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NOT a performance figure" in proc.stdout
    # The static sm_90 report: the loop against the reference, the layout conversions' bytes.
    row = next(line for line in proc.stdout.splitlines() if line.startswith("k "))
    for cell in ("example.resnet.3x3.b32", "HGMMA", "cp.async16", "90.5", "38.5", "2.35",
                 "51.0/25.8", "misses: ratio 2.35 > 1.3"):
        assert cell in row, (cell, row)
    assert "STALE for conv2d.forward" in proc.stdout  # a report without per-module hashes
    smoke = list(csv.DictReader((out / "cpu_smoke.csv").open()))
    assert [(r["op"], r["check"]) for r in smoke] == [("relu.fwd", "ok")]
    assert not any(k.endswith("_ms") for k in smoke[0])  # nothing timed on a CPU
    arithmetic = list(csv.DictReader((out / "roofline_arithmetic.csv").open()))
    assert {r["shape"] for r in arithmetic} == {"mnist.act1.b64"}


def test_conv_flops_and_bytes():
    stem = shapes.resnet18_convs()[0]
    assert stem.out_hw == (112, 112)
    assert roofline.conv_flops(stem) == 2 * 32 * 64 * 112 * 112 * 3 * 7 * 7
    x, w, y = 32 * 3 * 224 * 224, 64 * 3 * 7 * 7, 32 * 64 * 112 * 112
    assert roofline.conv_bytes(stem, "bf16", "fwd") == 2 * (x + w + y)
    assert roofline.conv_bytes(stem, "fp32", "fwd+bwd") == 3 * 4 * (x + w + y)
    bench = ops.Bench("conv2d.fwd+bwd", stem, "bf16", "nchw")
    assert bench.flops == 3 * roofline.conv_flops(stem)


def test_roofline_percent():
    h200 = roofline.peak_for("NVIDIA H200")
    assert h200.name == "H200 SXM" and roofline.peak_for("NVIDIA H100 PCIe").gbps == 2000.0
    assert roofline.peak_for("Some Other GPU") is None
    # Memory-bound: 4.8e9 bytes in 1 ms against 4.8 TB/s is 100%.
    assert roofline.percent_of_roofline(h200, "bf16", 0, 4_800_000_000, 1e-3) \
        == pytest.approx(100)
    # Compute-bound at high intensity: 989.4 TFLOP in 1 s is 100% for bf16.
    flops = int(989.4e12)
    assert roofline.percent_of_roofline(h200, "bf16", flops, 1, 1.0) == pytest.approx(100)


def test_op_selection_and_budget_order():
    assert ops.select_ops(["conv2d.fwd"]) == ["conv2d.fwd"]
    assert ops.select_ops(["conv_bn_relu.train"]) == ["conv_bn_relu.train.fwd",
                                                      "conv_bn_relu.train.fwd+bwd"]
    with pytest.raises(ValueError):
        ops.select_ops(["conv3d"])
    benches = build_benches(["conv2d.fwd"], ["b64", "layer3.3x3.b32"], ["fp32", "bf16"],
                            ["nchw", "channels_last"], shapes.conv_shapes(), [])
    first = budget_order(benches)[0]
    assert (first.shape.name, first.dtype, first.layout) == ("resnet18.layer3.3x3.b32", "bf16",
                                                             "channels_last")


def test_missing_op_fails_loudly():
    with pytest.raises(ops.MissingOp, match="does not exist"):
        ops.ours("cnn.functional.no_such_op")


def test_seconds_to_accuracy():
    history = {"val_accuracy": [0.97, 0.991, 0.993], "epoch_train_time_s": [2.0, 1.5, 1.5]}
    assert seconds_to_accuracy(history) == pytest.approx(3.5)
    assert seconds_to_accuracy({"val_accuracy": [98.0], "epoch_train_time_s": [1.0]}) is None


def test_gpu_check_stage_is_killed_at_its_time_limit(tmp_path):
    from benchmarks.gpu_check import run_stage
    # A child that also starts a grandchild: the whole process group must go.
    cmd = [sys.executable, "-c", "import subprocess, sys, time; "
           "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
           "time.sleep(120)"]
    result = run_stage("sleepy", cmd, tmp_path / "sleepy.log", 2.0)
    assert result["status"] == "timeout" and result["seconds"] < 60
    assert "killed after 2 s" in (tmp_path / "sleepy.log").read_text()


def test_gpu_check_tests_stage_runs_one_config_per_kernel(tmp_path, monkeypatch):
    """The tests stage sets CNN_AUTOTUNE=0, and the kernels then keep one config each."""
    from benchmarks import gpu_check
    run_stage, seen = gpu_check.run_stage, {}

    def fake_run_stage(name, cmd, log_path, timeout_s, env=None):
        seen.update(name=name, env=env)
        return {"status": "ok"}

    monkeypatch.setattr(gpu_check, "run_stage", fake_run_stage)
    gpu_check.tests_stage(tmp_path, 5.0)
    assert seen == {"name": "tests", "env": {"CNN_AUTOTUNE": "0"}}
    # The stage's environment reaches the child process.
    cmd = [sys.executable, "-c", "import os; print('tune', os.environ['CNN_AUTOTUNE'])"]
    assert run_stage("env", cmd, tmp_path / "env.log", 60,
                     env={"CNN_AUTOTUNE": "0"})["status"] == "ok"
    assert "tune 0" in (tmp_path / "env.log").read_text()
    probe = ("from cnn.kernels.conv2d.configs import implicit_gemm_configs, "
             "IMPLICIT_GEMM_TILES_GPU\n"
             "import cnn.kernels.conv2d.depthwise as d\n"
             "print(len(implicit_gemm_configs()), len(IMPLICIT_GEMM_TILES_GPU),"
             " len(d.depthwise_forward_kernel.configs), len(d.DEPTHWISE_TILES_GPU))")
    for tune, expected in (("0", "1 10 1 4"), ("1", "10 10 4 4")):
        env = dict(os.environ, TRITON_INTERPRET="0", CNN_AUTOTUNE=tune,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                            os.environ.get("PYTHONPATH")])))
        proc = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split() == expected.split(), (tune, proc.stdout)


def test_gpu_check_reads_pytest_junit_counts(tmp_path):
    from benchmarks.gpu_check import _junit_counts
    xml = tmp_path / "pytest.xml"
    xml.write_text('<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" '
                   'tests="10"></testsuite></testsuites>')
    assert _junit_counts(xml)["counts"] == {"passed": 4, "failed": 2, "errors": 1, "skipped": 3}
    (tmp_path / "killed.log").write_text("tests/test_a.py::test_x[1] PASSED   [ 1%]\n"
                                         "tests/test_a.py::test_y FAILED   [ 2%]\n")
    killed = _junit_counts(tmp_path / "killed.xml")
    assert killed["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 0}


def test_row_rates_follow_from_the_measured_times(monkeypatch):
    from benchmarks import runner, timing
    # Stand-in medians, only to check the arithmetic of the derived columns.
    medians = iter([(2.0, 1.9, 2.1), (1.0, 0.95, 1.05)])  # ours, then torch
    monkeypatch.setattr(timing, "measure", lambda fn, warmup_ms, rep_ms: next(medians))
    bench = ops.Bench("conv2d.fwd", shapes.resnet18_convs()[3], "bf16", "channels_last")
    row = {}
    runner._time_both(row, bench, None, None, roofline.peak_for("H200"), 10, 50)
    assert row["speedup"] == pytest.approx(0.5)  # torch 1 ms / ours 2 ms
    assert row["ours_tflops"] == pytest.approx(bench.flops / 2e-3 / 1e12, rel=1e-3)
    assert row["ours_gbps"] == pytest.approx(bench.nbytes / 2e-3 / 1e9, rel=1e-3)
    assert row["peak"] == "H200 SXM"
    assert 0 < row["ours_pct_roofline"] < row["torch_pct_roofline"] <= 100


def test_fused_traffic_report_counts_launches_and_bytes():
    from benchmarks import fused_traffic, shapes

    rows, counts = fused_traffic.report_rows(shapes.conv_shapes()[:1])
    assert counts["ours_train"] == ["conv2d_forward_kernel", "batch_norm_finalize_kernel",
                                    "batch_norm_normalize_kernel"]
    assert counts["ours_eval"] == ["conv2d_forward_kernel"]
    assert {"convolution", "native_batch_norm", "relu"} <= set(counts["torch_train"])
    shape = shapes.conv_shapes()[0]
    oh, ow = shape.out_hw
    x = shape.batch * shape.c_in * shape.h * shape.w * 2
    y = shape.batch * shape.c_out * oh * ow * 2
    assert rows[0]["eval_MB_ours"] == round((x + y) / 1e6, 2)
    assert rows[0]["train_MB_torch"] == round((x + 6 * y) / 1e6, 2)


def test_end_to_end_warms_each_backend_up_before_timing_it(tmp_path, monkeypatch):
    from benchmarks import end_to_end

    calls = []

    def fake_training(name, args, mnist_dir, epochs, out, timeout_s):
        calls.append((name, list(args), epochs, timeout_s))
        return {"run": name, "status": "ok", "wall_s": 5.0, "command": " ".join(args)}

    monkeypatch.setattr(end_to_end, "run_training", fake_training)
    monkeypatch.setattr(end_to_end, "train_supports", lambda option: option == "--channels-last")
    report = end_to_end.run(None, 3, tmp_path, timeout_s=200.0)
    names = [c[0] for c in calls]
    assert names == ["triton_warmup", "triton", "torch_warmup", "torch"]
    for (warm, warm_args, warm_epochs, _), (timed, timed_args, epochs, _) in zip(
            calls[::2], calls[1::2], strict=True):
        assert warm == timed + "_warmup" and warm_epochs == 1 and epochs == 3
        assert warm_args == timed_args + ["--limit-train", str(end_to_end.WARMUP_TRAIN)]
        assert "--channels-last" in timed_args
    assert end_to_end.WARMUP_TRAIN % 64 == 0 and (end_to_end.WARMUP_TRAIN // 4) % 1000 == 0
    assert report["runs"][0]["warmup"]["wall_s"] == 5.0
    assert "no --compile option" in report["note"]
    # Without the trainer's option the runs stay NCHW, and the report says so.
    monkeypatch.setattr(end_to_end, "train_supports", lambda option: False)
    calls.clear()
    report = end_to_end.run(None, 3, tmp_path, timeout_s=200.0, warmup=False)
    assert [c[0] for c in calls] == ["triton", "torch"]
    assert "no --channels-last option" in report["note"]


def test_gpu_check_counts_the_mnist_runs_compiles(tmp_path, monkeypatch):
    from benchmarks import gpu_check

    monkeypatch.setattr(gpu_check, "COUNT_S", 240)  # a shared CPU is slower than a GPU host
    counts = gpu_check.compile_counts(tmp_path)
    assert set(counts) == {"channels_last", "nchw"}
    for layout in counts.values():
        assert layout["compiles"] >= 5 and layout["tuning_runs"] >= 0
        assert [s["batches"] for s in layout["steps"]] == ["train", "eval"]
    assert (tmp_path / "mnist" / "compile_count_nchw.json").exists()
