"""torch.export of MyCNN and a ResNet-style stack: the exported program holds our ops as
``cnn::`` ops, runs, and matches the eager model."""
import pytest
import torch
from support import DEVICE
from support.layer_stacks import resnet_stack

import cnn
from cnn.models import MyCNN

MODELS = {
    "mnist_cnn": (lambda: MyCNN(seed=0), (2, 1, 28, 28)),
    "mnist_cnn_batchnorm": (lambda: MyCNN(batchnorm=True, seed=0), (2, 1, 28, 28)),
    "resnet_stack": (resnet_stack, (2, 3, 16, 16)),
    "fused_resnet_stack": (lambda: cnn.fuse(resnet_stack()), (2, 3, 16, 16)),
}


def cnn_ops(program) -> set:
    return {n.target.name() for n in program.graph.nodes
            if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
            and n.target.namespace == "cnn"}


@pytest.mark.parametrize("name", MODELS)
def test_export_runs_and_matches_eager(name):
    build, shape = MODELS[name]
    model = build().to(DEVICE).eval()
    x = torch.randn(shape, device=DEVICE)
    program = torch.export.export(model, (x,))
    assert cnn_ops(program), program.graph
    x2 = torch.randn(shape, device=DEVICE)
    torch.testing.assert_close(program.module()(x2), model(x2))


def test_exported_resnet_names_its_ops():
    program = torch.export.export(resnet_stack().eval(), (torch.randn(1, 3, 16, 16,
                                                                      device=DEVICE),))
    assert {"cnn::conv2d", "cnn::batch_norm_eval", "cnn::relu", "cnn::max_pool2d",
            "cnn::adaptive_avg_pool2d"} <= cnn_ops(program)


def test_export_training_mode_updates_running_stats():
    """In train mode the batch-norm statistics are a declared mutation: exported as buffer
    updates, applied when the program runs."""
    model = torch.nn.Sequential(cnn.Conv2d(1, 2, 3), cnn.BatchNorm2d(2), cnn.ReLU()).to(DEVICE)
    x = torch.randn(2, 1, 5, 5, device=DEVICE)
    program = torch.export.export(model.train(), (x,))
    assert "cnn::batch_norm_train" in cnn_ops(program)
    exported = program.module()
    y = exported(x)
    torch.testing.assert_close(y, model(x))
    for (name, b_exported), b_eager in zip(exported.named_buffers(), model.buffers(),
                                           strict=True):
        torch.testing.assert_close(b_exported, b_eager, msg=lambda m: f"{name}: {m}")
