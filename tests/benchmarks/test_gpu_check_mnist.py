"""The GPU check's MNIST stage: --recipe fast for ours, torch eager and torch.compile (time to
99%), each run on disk as it finishes, and a refusal at once without the data. No GPU here: the
training runs are faked, the code paths around them run."""
import json

from benchmarks import end_to_end, gpu_check
from cnn.train.recipes import RECIPES


def fake_runs(monkeypatch, seconds=None):
    calls = []

    def fake_training(name, args, mnist_dir, epochs, out, timeout_s):
        calls.append((name, list(args), epochs))
        summary = {"run": name, "status": "ok", "wall_s": 5.0, "command": " ".join(args)}
        if seconds and name in seconds:
            summary.update(seconds_to_99_val=seconds[name], test_accuracy=0.991, train_s=9.0)
        return summary

    monkeypatch.setattr(end_to_end, "run_training", fake_training)
    monkeypatch.setattr(end_to_end, "train_supports", lambda option: True)
    return calls


def test_fast_recipe_runs_ours_eager_and_compile_and_reports_time_to_99(tmp_path, monkeypatch):
    calls = fake_runs(monkeypatch, {"triton_fast": 6.0, "torch_fast": 12.0,
                                    "torch_compile_fast": 8.0})
    report = end_to_end.run(None, 3, tmp_path, timeout_s=400.0, recipes=("fast",),
                            warmup="compiled")
    # Warm-ups only where something stays on disk for the timed process: ours, torch.compile.
    assert [c[0] for c in calls] == ["triton_fast_warmup", "triton_fast", "torch_fast",
                                     "torch_compile_fast_warmup", "torch_compile_fast"]
    for name, args, epochs in calls:
        assert args[args.index("--recipe") + 1] == "fast"
        assert ("--compile" in args) == name.startswith("torch_compile")
        if name.endswith("_warmup"):
            assert epochs == 1 and args[-2:] == ["--limit-train",
                                                 str(end_to_end.WARMUP_TRAIN_FAST)]
        else:
            assert epochs == RECIPES["fast"]["epochs"] and "--limit-train" not in args
    # Warm-up batches are all full, as in the timed run (48000 / 128, 12000 / 1000).
    batch = RECIPES["fast"]["batch_size"]
    assert end_to_end.WARMUP_TRAIN_FAST % batch == 0 and 48000 % batch == 0
    assert (end_to_end.WARMUP_TRAIN_FAST // 4) % 1000 == 0
    row = report["fast_recipe"]
    assert row["ours"]["seconds_to_99_val"] == 6.0
    assert row["torch_eager"]["seconds_to_99_val"] == 12.0
    assert row["torch_compile"]["seconds_to_99_val"] == 8.0
    assert row["ours_over_torch_time"] == 0.5
    saved = json.loads((tmp_path / "mnist_end_to_end.json").read_text())
    assert saved["recipes"] == ["fast"] and saved["fast_recipe"] == row and saved["finished"]


def test_each_finished_run_is_on_disk_before_the_next_starts(tmp_path, monkeypatch):
    """A killed stage keeps the runs it finished: the JSON and runs.jsonl are rewritten after
    every run."""
    seen = []

    def fake_training(name, args, mnist_dir, epochs, out, timeout_s):
        report = json.loads((out / "mnist_end_to_end.json").read_text())
        lines = (out / "runs.jsonl").read_text().splitlines()
        seen.append((name, [r["run"] for r in report["runs"]], len(lines), report["finished"]))
        return {"run": name, "status": "ok", "wall_s": 1.0, "seconds_to_99_val": 5.0}

    monkeypatch.setattr(end_to_end, "run_training", fake_training)
    monkeypatch.setattr(end_to_end, "train_supports", lambda option: True)
    end_to_end.run(None, 3, tmp_path, timeout_s=400.0, recipes=("fast",), warmup="none",
                   backends=["triton_fast", "torch_fast"])
    # The run left out by --backends is recorded as skipped first.
    assert seen == [("triton_fast", ["torch_compile_fast"], 1, False),
                    ("torch_fast", ["torch_compile_fast", "triton_fast"], 2, False)]
    saved = json.loads((tmp_path / "mnist_end_to_end.json").read_text())
    assert saved["finished"]
    assert saved["fast_recipe"]["torch_compile"]["status"] == "skipped: not in --backends"


def test_seed_recipe_alone_is_unchanged(tmp_path, monkeypatch):
    calls = fake_runs(monkeypatch)
    assert end_to_end.main(["--out", str(tmp_path), "--no-warmup", "--backends",
                            "triton,torch"]) == 0
    assert [c[0] for c in calls] == ["triton", "torch"]
    assert "fast_recipe" not in json.loads((tmp_path / "mnist_end_to_end.json").read_text())


def test_gpu_check_mnist_stage_asks_for_the_fast_recipe(tmp_path, monkeypatch):
    seen = {}

    def fake_stage(name, cmd, log_path, timeout_s, env=None):
        seen["cmd"] = cmd
        mnist = tmp_path / "mnist"
        mnist.mkdir(exist_ok=True)
        (mnist / "mnist_end_to_end.json").write_text(json.dumps(
            {"runs": [], "finished": True, "fast_recipe": {"ours_over_torch_time": 0.8}}))
        return {"status": "ok"}

    monkeypatch.setattr(gpu_check, "compile_counts", lambda out: {})
    monkeypatch.setattr(gpu_check, "run_stage", fake_stage)
    result = gpu_check.mnist_stage(tmp_path, 140.0, tmp_path / "data", 3)
    cmd = seen["cmd"]
    assert cmd[cmd.index("--recipes") + 1] == "fast"
    assert cmd[cmd.index("--warmup") + 1] == "compiled"
    assert cmd[cmd.index("--mnist-dir") + 1] == str(tmp_path / "data")
    assert result["status"] == "ok" and result["fast_recipe"] == {"ours_over_torch_time": 0.8}


def test_gpu_check_refuses_at_once_without_mnist(tmp_path, monkeypatch, capsys):
    """No network on the GPU machine: a missing MNIST folder stops the check before any stage
    runs, instead of a training run waiting on the mirrors."""
    import torch

    def no_stage(*args, **kwargs):
        raise AssertionError("a stage ran")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "run_stage", no_stage)
    monkeypatch.setattr(gpu_check, "environment", lambda: {
        "gpu": "a GPU", "torch_version": "t", "triton_version": "tr", "date": "d",
        "git_commit": "c"})
    out = tmp_path / "out"
    assert gpu_check.main(["--out", str(out), "--mnist-dir", str(tmp_path / "empty")]) == 2
    assert "does not hold MNIST" in capsys.readouterr().err
    assert not out.exists()
    # The same without --mnist-dir: the cache it would read is named.
    monkeypatch.setenv("CNN_DATA_DIR", str(tmp_path / "cache"))
    assert gpu_check.main(["--out", str(out)]) == 2
    assert "the MNIST cache" in capsys.readouterr().err
    # Without the MNIST stage nothing is needed (here the configs stage is stubbed out).
    monkeypatch.setattr(gpu_check, "configs_stage", lambda out, limit, rehearse: {
        "status": "ok", "run": 0, "ok": 0, "enumerated": 0})
    monkeypatch.setattr(gpu_check, "_nvidia_smi", lambda out: None)
    assert gpu_check.main(["--out", str(out), "--stages", "configs"]) == 0
    assert json.loads((out / "gpu_check.json").read_text())["stages"]["configs"]["status"] == "ok"
