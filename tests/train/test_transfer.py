"""cnn.train.transfer: a frozen backbone gets no gradient and keeps its batch-norm statistics
through model.train(); the new head trains; fine-tuning groups give the backbone a lower rate;
and the seed's snippet, for contrast, trains nothing."""
import json

import pytest
import torch
from torch import nn

import cnn
from cnn.train import checkpoint as ckpt
from cnn.train import run
from cnn.train.transfer import finetune_param_groups, freeze_backbone, replace_head
from cnn.train.transfer import main as transfer_main


class TinyNet(nn.Module):
    """conv -> bn -> relu -> global pool -> fc, on our layers."""

    def __init__(self, classes=4):
        super().__init__()
        self.conv1 = cnn.Conv2d(1, 3, 3, padding=1)
        self.bn1 = cnn.BatchNorm2d(3)
        self.relu = cnn.ReLU()
        self.avgpool = cnn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.relu(self.bn1(self.conv1(x)))), 1))


def test_frozen_backbone_gets_no_gradient_and_keeps_its_statistics():
    model = TinyNet()
    new_head = replace_head(model, 2)
    assert model.fc is new_head and new_head.out_features == 2
    freeze_backbone(model)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    head_before = model.fc.weight.clone()
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 6, 6)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    assert model.training and not model.bn1.training
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fc."))
    assert model.fc.weight.grad is not None
    assert not torch.equal(model.fc.weight, head_before)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


def test_seed_snippet_freezes_the_new_head_too():
    """The seed's 4.4: module.requires_grad is an attribute, so nothing would train."""
    model = TinyNet()
    model.fc = nn.Linear(3, 2)
    for param in model.parameters():
        param.requires_grad = False
    model.fc.requires_grad = True
    assert not any(p.requires_grad for p in model.parameters())


def test_finetune_groups():
    model = TinyNet()
    groups = finetune_param_groups(model, lr=1e-2, backbone_lr_scale=0.1)
    optimizer = torch.optim.Adam(groups)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 1e-2])
    assert {id(p) for p in groups[1]["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert len(groups[0]["params"]) == 4


def test_missing_head_raises():
    with pytest.raises(AttributeError, match="classifier"):
        freeze_backbone(TinyNet(), head="classifier")


# ---------------------------------------------------------------------------------------------
# python -m cnn.train --weights ... --freeze-backbone / --finetune (tiny synthetic runs)

def _resnet_weights(path, width=4):
    """A torchvision-shaped ResNet-18 file: 3 input channels, 1000 classes, BN stats moved off
    their defaults (so a frozen backbone that kept them is told from a reset one)."""
    torch.manual_seed(1)
    model = cnn.models.resnet18(num_classes=1000, in_channels=3, width=width)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(100)
    torch.save(model.state_dict(), path)
    return path


def _cli_run(tmp_path, name, *extra, backend="torch"):
    out = tmp_path / name
    argv = ["--synthetic", "30", "--limit-train", "12", "--batch-size", "4", "--epochs", "1",
            "--backend", backend, "--no-progress", "--no-plots", "--out", str(out), *extra]
    assert run.main(argv) == 0
    return out


def _record_grads(monkeypatch):
    """Patch Trainer.train_step to record, after every step, which parameters have a gradient."""
    seen = []
    real = run.Trainer.train_step

    def step(self, x, y):
        result = real(self, x, y)
        seen.append({n: p.grad is not None and bool(p.grad.abs().sum() > 0)
                     for n, p in self.model.named_parameters()})
        return result

    monkeypatch.setattr(run.Trainer, "train_step", step)
    return seen


def test_cli_freeze_backbone_trains_the_head_only(tmp_path, monkeypatch, capsys):
    """resnet18 on our kernels from a 3-channel 1000-class file, MNIST-shaped input: the new
    10-way head trains; the backbone gets no gradient, and neither its weights nor its
    batch-norm running statistics move; the optimizer holds the head alone."""
    weights = _resnet_weights(tmp_path / "resnet18.pth")
    seen = _record_grads(monkeypatch)
    out = _cli_run(tmp_path, "frozen", "--arch", "resnet18", "--resnet-width", "4", "--weights",
                   str(weights), "--freeze-backbone", backend="triton")
    err = capsys.readouterr().err
    assert "fc starts fresh" in err and "backbone frozen" in err
    assert len(seen) == 3
    for grads in seen:
        assert {n for n, has in grads.items() if has} == {"fc.weight", "fc.bias"}
    expected = cnn.models.resnet18(num_classes=10, in_channels=1, width=4, weights=weights)
    expected = expected.state_dict()   # conv1 summed over RGB; head fresh
    trained = ckpt.load_checkpoint(out / ckpt.LAST)
    for key, value in trained["model"].items():
        if key.startswith("fc."):
            assert value.shape[0] == 10
            continue
        assert torch.equal(value, expected[key]), key   # weights and running stats as loaded
    head = torch.load(weights, weights_only=True)["fc.weight"]
    assert head.shape == (1000, 32)
    state = trained["optimizer"]["state"]
    assert len(trained["optimizer"]["param_groups"][0]["params"]) == 2 and len(state) == 2
    best = ckpt.load_checkpoint(out / ckpt.BEST)
    assert best["config"] == {"arch": "resnet18", "num_classes": 10, "in_channels": 1,
                              "width": 4}
    again = cnn.models.resnet18(**{k: v for k, v in best["config"].items() if k != "arch"})
    again.load_state_dict(best["model"])  # best.pt rebuilds its model


def test_cli_finetune_trains_everything_with_a_lower_backbone_rate(tmp_path, monkeypatch,
                                                                    capsys):
    weights = _resnet_weights(tmp_path / "resnet18.pth")
    seen = _record_grads(monkeypatch)
    out = _cli_run(tmp_path, "finetune", "--arch", "resnet18", "--resnet-width", "4",
                   "--weights", str(weights), "--finetune", "--backbone-lr-scale", "0.2",
                   "--lr", "1e-2")
    assert "fine-tuned at lr 0.01 x 0.2" in capsys.readouterr().err
    assert all(all(grads.values()) for grads in seen)  # every parameter has a gradient
    groups = ckpt.load_checkpoint(out / ckpt.LAST)["optimizer"]["param_groups"]
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([2e-3, 1e-2])
    assert len(groups[1]["params"]) == 2


def test_cli_mycnn_transfer_from_its_own_checkpoint(tmp_path, monkeypatch):
    """--weights takes a best.pt of cnn.train: MyCNN's head is fc2; with batch norm, the
    frozen fused conv+BN keeps its statistics on our kernels' training path."""
    first = _cli_run(tmp_path, "first", "--batchnorm")
    seen = _record_grads(monkeypatch)
    out = _cli_run(tmp_path, "second", "--batchnorm", "--weights", str(first / ckpt.BEST),
                   "--freeze-backbone", backend="triton")
    assert {n for n, has in seen[-1].items() if has} == {"fc2.weight", "fc2.bias"}
    before = ckpt.load_checkpoint(first / ckpt.BEST)["model"]
    after = ckpt.load_checkpoint(out / ckpt.LAST)["model"]
    for key, value in before.items():
        if not key.startswith("fc2."):
            assert torch.equal(after[key], value), key
    assert not torch.equal(after["fc2.weight"], before["fc2.weight"])


# ---------------------------------------------------------------------------------------------
# python -m cnn.train.transfer, in a tiny synthetic configuration

def test_transfer_demo_writes_metrics_and_reuses_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["--synthetic", "120", "--subset", "20", "--epochs", "2", "--pretrain-epochs", "1",
            "--batch-size", "10", "--out", str(out)]
    assert transfer_main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("frozen_test_accuracy", "scratch_test_accuracy"):
        assert 0 <= metrics[key] <= 1
    assert metrics["subset"] == 20 and metrics["backend"] == "torch"
    frozen, scratch = metrics["runs"]["frozen"], metrics["runs"]["scratch"]
    assert frozen["steps"] == scratch["steps"] == 4          # the same budget
    assert len(frozen["accuracy"]) == len(scratch["accuracy"]) == 2
    classifier = 3136 * 128 + 128 + 128 * 5 + 5              # the new fc1, fc2 only
    assert frozen["trainable_parameters"] == classifier
    assert scratch["trainable_parameters"] == classifier + 32 * 9 + 32 + 64 * 32 * 9 + 64
    assert metrics["frozen_run_trains"] == "fc1,fc2"
    assert metrics["pretrain"]["reused"] is False
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        assert (out / "learning_curves.png").stat().st_size > 1000
    checkpoint = out / "pretrained_0-4.pt"
    written = checkpoint.stat().st_mtime_ns
    assert not list(out.glob(".*.partial"))                  # written atomically, nothing left
    capsys.readouterr()
    assert transfer_main([*argv, "--no-plots"]) == 0
    assert "reusing" in capsys.readouterr().err
    assert checkpoint.stat().st_mtime_ns == written
    again = json.loads((out / "metrics.json").read_text())
    assert again["pretrain"]["reused"] is True
    assert again["runs"]["frozen"]["train_loss"] == frozen["train_loss"]  # reproducible
    assert transfer_main([*argv, "--seed", "1", "--no-plots", "--head", "fc2"]) == 0
    assert "made with other settings" in capsys.readouterr().err             # another seed
    assert json.loads((out / "metrics.json").read_text())["runs"]["frozen"][
        "trainable_parameters"] == 128 * 5 + 5                                # a linear probe


def test_transfer_demo_refuses_bad_options(tmp_path, capsys):
    assert transfer_main(["--subset", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--subset" in capsys.readouterr().err
    assert transfer_main(["--synthetic", "30", "--subset", "400",
                          "--out", str(tmp_path / "x")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("python -m cnn.train.transfer: error: argument --subset")


def test_transfer_demo_on_our_kernels(tmp_path):
    """The same demonstration on the triton backend (the interpreter here), a few images."""
    out = tmp_path / "ours"
    assert transfer_main(["--synthetic", "60", "--subset", "8", "--epochs", "1",
                          "--pretrain-epochs", "1", "--batch-size", "4", "--backend", "triton",
                          "--no-plots", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "triton" and metrics["runs"]["frozen"]["steps"] == 2
    assert 0 <= metrics["frozen_test_accuracy"] <= 1


def test_resnet_on_the_torch_backend_is_torchs_layers_with_the_same_keys():
    """--arch resnet18 --backend torch: the same ResNet with torch's own layer classes (the
    reference the triton backend is compared with), same keys, same outputs."""
    from cnn.train.factory import build_model
    torch.manual_seed(0)
    ours = build_model("resnet18", backend="triton", width=2)
    torch.manual_seed(0)
    theirs = build_model("resnet18", backend="torch", width=2)
    assert type(theirs.conv1) is nn.Conv2d and type(theirs.layer1[0].bn1) is nn.BatchNorm2d
    assert type(ours.conv1) is cnn.Conv2d
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=1e-4, atol=1e-5)
