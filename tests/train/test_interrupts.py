"""Ctrl-C at any point of ``python -m cnn.train`` leaves a resumable state, or says truthfully
that there is none: during setup, inside a step (a second Ctrl-C), during validation, during
the test. Each resumed run must end exactly where an uninterrupted one does. The torch backend
on the CPU (deterministic), batch norm, dropout and augmentation on, so that every RNG state and
buffer matters; 4 steps of 4 images per epoch."""
import json
import signal

import pytest

from cnn.models import MyCNN
from cnn.train import checkpoint as ckpt
from cnn.train import run as train_run
from cnn.train.interrupt import Interrupts
from cnn.train.run import main

ARGS = ["--synthetic", "60", "--limit-train", "16", "--batch-size", "4", "--eval-batch-size",
        "4", "--backend", "torch", "--device", "cpu", "--augment", "--dropout", "--batchnorm",
        "--epochs", "1", "--no-progress", "--no-plots"]


def run(out, *extra):
    return main([*ARGS, "--out", str(out), *extra])


def metrics(out):
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    assert run(out) == 0
    return metrics(out)


def interrupt_in_forward(monkeypatch, training: bool, call: int, signals: int):
    """On the model's call-th forward in training (or eval) mode, once it has run (batch-norm
    statistics updated, dropout drawn), deliver `signals` SIGINTs."""
    real_forward, calls = MyCNN.forward, []

    def forward(self, x):
        y = real_forward(self, x)
        if self.training == training:
            calls.append(1)
            if len(calls) == call:
                for _ in range(signals):
                    signal.raise_signal(signal.SIGINT)
        return y

    monkeypatch.setattr(MyCNN, "forward", forward)


def assert_resumes_exactly(out, straight, capsys):
    capsys.readouterr()
    assert run(out, "--resume") == 0
    resumed = metrics(out)
    assert resumed["history"]["train_loss"] == straight["history"]["train_loss"]
    assert resumed["history"]["val_loss"] == straight["history"]["val_loss"]
    assert resumed["test_loss"] == straight["test_loss"]


def test_second_ctrl_c_inside_a_step_saves_the_last_finished_step(tmp_path, monkeypatch,
                                                                   capsys, straight):
    """Before any checkpoint exists: the state after step 2 is saved, the half-done step 3
    (its batch-norm statistics and random draws) is rolled back."""
    interrupt_in_forward(monkeypatch, training=True, call=3, signals=2)
    out = tmp_path / "run"
    assert run(out) == 130
    err = capsys.readouterr().err
    assert "stopping after this step; a step takes about" in err or \
        "stopping after this step (" in err  # steps under a second get no figure
    assert f"saved {out / ckpt.LAST} at epoch 1 step 2/4" in err
    assert "the unfinished step is not in it" in err
    state = ckpt.load_checkpoint(out / ckpt.LAST)
    assert (state["epoch"], state["step"]) == (0, 2) and len(state["history"]["train_loss"]) == 2
    monkeypatch.undo()
    assert_resumes_exactly(out, straight, capsys)


def test_first_ctrl_c_inside_a_step_stops_after_it(tmp_path, monkeypatch, capsys, straight):
    interrupt_in_forward(monkeypatch, training=True, call=2, signals=1)
    out = tmp_path / "run"
    assert run(out) == 130
    assert "at epoch 1 step 2/4; continue" in capsys.readouterr().err
    monkeypatch.undo()
    assert_resumes_exactly(out, straight, capsys)


def test_ctrl_c_during_validation_saves_at_once(tmp_path, monkeypatch, capsys, straight):
    interrupt_in_forward(monkeypatch, training=False, call=1, signals=1)
    out = tmp_path / "run"
    assert run(out) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "its validation reruns on --resume" in err
    state = ckpt.load_checkpoint(out / ckpt.LAST)
    assert (state["epoch"], state["step"]) == (0, 4)
    monkeypatch.undo()
    assert_resumes_exactly(out, straight, capsys)


def test_ctrl_c_during_the_test_keeps_the_finished_training(tmp_path, monkeypatch, capsys,
                                                             straight):
    validation_batches = 1  # 4 validation images in one batch of 4
    interrupt_in_forward(monkeypatch, training=False, call=validation_batches + 1, signals=1)
    out = tmp_path / "run"
    assert run(out) == 130
    assert "interrupted during the test" in capsys.readouterr().err
    assert not (out / "metrics.json").exists()
    assert ckpt.load_checkpoint(out / ckpt.LAST)["epoch"] == 1
    monkeypatch.undo()
    assert_resumes_exactly(out, straight, capsys)


def test_ctrl_c_before_training_says_there_is_nothing_to_resume(tmp_path, monkeypatch, capsys):
    def interrupted_data(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_run, "synthetic_mnist", interrupted_data)
    out = tmp_path / "run"
    assert run(out) == 130
    assert "no checkpoint was written, there is nothing to resume" in capsys.readouterr().err
    assert not (out / ckpt.LAST).exists()


def test_critical_section_holds_the_interrupt_back():
    said = []
    with Interrupts(said.append) as interrupts:
        with pytest.raises(KeyboardInterrupt):
            with interrupts.critical():
                signal.raise_signal(signal.SIGINT)
                finished = True  # reached: the interrupt waited for the end of the block
        assert finished
        with interrupts.graceful_phase(lambda: "a step takes about 12 s here"):
            signal.raise_signal(signal.SIGINT)
            assert interrupts.requested and "about 12 s" in said[-1]
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
