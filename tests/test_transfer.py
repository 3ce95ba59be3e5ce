"""cnn.transfer: a frozen backbone gets no gradient and keeps its batch-norm statistics through
model.train(); the new head trains; fine-tuning groups give the backbone a lower rate; and the
seed's snippet, for contrast, trains nothing."""
import pytest
import torch
from torch import nn

import cnn
from cnn.transfer import finetune_param_groups, freeze_backbone, replace_head


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
