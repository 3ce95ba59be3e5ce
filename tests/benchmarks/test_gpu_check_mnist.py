"""The GPU check's MNIST stage times --recipe fast (ours against torch eager, time to 99%) before
the seed's recipe. No GPU here: the training runs are faked, the code paths around them run."""
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


def test_fast_recipe_runs_first_and_reports_time_to_99(tmp_path, monkeypatch):
    calls = fake_runs(monkeypatch, {"triton_fast": 6.0, "torch_fast": 12.0})
    report = end_to_end.run(None, 3, tmp_path, timeout_s=400.0, recipes=("fast", "seed"))
    assert [c[0] for c in calls] == [
        "triton_fast_warmup", "triton_fast", "torch_fast_warmup", "torch_fast",
        "triton_warmup", "triton", "torch_warmup", "torch", "torch_compile_warmup",
        "torch_compile"]
    for name, args, epochs in calls[:4]:
        assert args[args.index("--recipe") + 1] == "fast"
        if name.endswith("_warmup"):
            assert epochs == 1 and args[-2:] == ["--limit-train",
                                                 str(end_to_end.WARMUP_TRAIN_FAST)]
        else:
            assert epochs == RECIPES["fast"]["epochs"] and "--limit-train" not in args
    assert all("--recipe" not in args and epochs in (1, 3) for _, args, epochs in calls[4:])
    # Warm-up batches are all full, as in the timed run (48000 / 128, 12000 / 1000).
    batch = RECIPES["fast"]["batch_size"]
    assert end_to_end.WARMUP_TRAIN_FAST % batch == 0 and 48000 % batch == 0
    assert (end_to_end.WARMUP_TRAIN_FAST // 4) % 1000 == 0
    row = report["fast_recipe"]
    assert row["ours"]["seconds_to_99_val"] == 6.0
    assert row["torch_eager"]["seconds_to_99_val"] == 12.0
    assert row["ours_over_torch_time"] == 0.5
    saved = json.loads((tmp_path / "mnist_end_to_end.json").read_text())
    assert saved["recipes"] == ["fast", "seed"] and saved["fast_recipe"] == row


def test_seed_recipe_alone_is_unchanged(tmp_path, monkeypatch):
    calls = fake_runs(monkeypatch)
    assert end_to_end.main(["--out", str(tmp_path), "--no-warmup", "--backends",
                            "triton,torch"]) == 0
    assert [c[0] for c in calls] == ["triton", "torch"]
    assert "fast_recipe" not in json.loads((tmp_path / "mnist_end_to_end.json").read_text())


def test_gpu_check_mnist_stage_asks_for_the_fast_recipe(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_stage(name, cmd, log_path, timeout_s, env=None):
        seen["cmd"] = cmd
        mnist = tmp_path / "mnist"
        mnist.mkdir(exist_ok=True)
        (mnist / "mnist_end_to_end.json").write_text(json.dumps(
            {"runs": [], "fast_recipe": {"ours_over_torch_time": 0.8}}))
        return {"status": "ok"}

    monkeypatch.setattr(gpu_check, "compile_counts", lambda out: {})
    monkeypatch.setattr(gpu_check, "run_stage", fake_stage)
    result = gpu_check.mnist_stage(tmp_path, 140.0, None, 3)
    cmd = seen["cmd"]
    assert cmd[cmd.index("--recipes") + 1] == "fast,seed"
    assert result["fast_recipe"] == {"ours_over_torch_time": 0.8}
