"""torch.compile over models built from our layers, fullgraph=True: every op of ours is a
``torch.ops.cnn`` op in the graph (no graph breaks), and outputs, input and parameter
gradients and running statistics equal the same model run eagerly, in train and eval mode.
aot_eager needs no C++ compiler and gets every model; inductor (C++ on a CPU, tens of seconds a
model here) gets MyCNN and the ResNet stack, plain and fused."""
import copy

import pytest
import torch
import torch._dynamo.testing
from support import DEVICE
from support.layer_stacks import resnet_stack
from torch import nn

import cnn
from cnn.models import MyCNN


def compiled_matches_eager(model, x, train: bool, backend: str, compiled=None):
    """Run a copy of ``model`` eagerly and ``model`` compiled (fullgraph) on the same input;
    compare outputs, input and parameter gradients and buffers. Returns the compiled model."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    eager = copy.deepcopy(model)
    if compiled is None:
        compiled = torch.compile(model, backend=backend, fullgraph=True)
    x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_eager, y_compiled = eager(x_eager), compiled(x_compiled)
    torch.testing.assert_close(y_compiled, y_eager)
    grad = torch.randn_like(y_eager)
    y_eager.backward(grad)
    y_compiled.backward(grad)
    torch.testing.assert_close(x_compiled.grad, x_eager.grad)
    for (name, p_compiled), p_eager in zip(model.named_parameters(), eager.parameters(),
                                           strict=True):
        torch.testing.assert_close(p_compiled.grad, p_eager.grad, msg=lambda m: f"{name}: {m}")
    for (name, b_compiled), b_eager in zip(model.named_buffers(), eager.buffers(), strict=True):
        torch.testing.assert_close(b_compiled, b_eager, msg=lambda m: f"{name}: {m}")
    return compiled


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def every_layer():
    torch.manual_seed(0)
    return nn.Sequential(
        cnn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), cnn.BatchNorm2d(4), cnn.ReLU(),
        cnn.MaxPool2d(2, ceil_mode=True), cnn.AvgPool2d(2, ceil_mode=True,
                                                        count_include_pad=False),
        cnn.AdaptiveMaxPool2d(2), cnn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    ).to(DEVICE)


MODELS = {
    "every_layer": (every_layer, (2, 3, 9, 9)),
    "mnist_cnn": (lambda: MyCNN(seed=0).to(DEVICE), (2, 1, 28, 28)),
    "mnist_cnn_batchnorm": (lambda: MyCNN(batchnorm=True, seed=0).to(DEVICE), (2, 1, 28, 28)),
    "resnet_stack": (resnet_stack, (2, 3, 16, 16)),
    "fused_resnet_stack": (lambda: cnn.fuse(resnet_stack()), (2, 3, 16, 16)),
}


@pytest.mark.parametrize("name", ["every_layer", "mnist_cnn", "resnet_stack",
                                  "fused_resnet_stack"])
def test_fullgraph_aot_eager_train_then_eval(name):
    build, shape = MODELS[name]
    model = build()
    x = torch.randn(shape, device=DEVICE)
    compiled = compiled_matches_eager(model, x, True, "aot_eager")
    compiled_matches_eager(model, x, False, "aot_eager", compiled)  # recompiles for eval


@pytest.mark.slow
@pytest.mark.parametrize("name,modes", [("mnist_cnn_batchnorm", (True, False)),
                                        ("mnist_cnn", (True,)),
                                        ("resnet_stack", (True, False)),
                                        ("fused_resnet_stack", (True, False))])
def test_fullgraph_inductor(name, modes):
    build, shape = MODELS[name]
    model = build()
    x = torch.randn(shape, device=DEVICE)
    compiled = None
    for train in modes:
        compiled = compiled_matches_eager(model, x, train, "inductor", compiled)


def test_graph_holds_our_ops():
    """What the compiler sees: our ops by name (opaque custom ops), nothing of the launchers."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    model = cnn.fuse(resnet_stack()).eval()
    torch.compile(model, backend=backend, fullgraph=True)(torch.randn(1, 3, 16, 16,
                                                                     device=DEVICE))
    targets = {str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"}
    # Fused, every conv of the stack (residual block ends and downsample included) is one
    # conv_bn_act2d_eval call; no unfused conv or batch norm is left.
    ours = {t for t in targets if t.startswith("cnn.")}
    assert ours == {"cnn.conv_bn_act2d_eval.default", "cnn.max_pool2d.default",
                    "cnn.adaptive_avg_pool2d.default"}, targets
    assert not any("convolution" in t or "batch_norm" in t for t in targets), targets


def test_dynamic_batch_compiles_once():
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    model = nn.Sequential(cnn.Conv2d(1, 2, 3, padding=1), cnn.BatchNorm2d(2), cnn.ReLU(),
                          cnn.MaxPool2d(2)).to(DEVICE)
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    frames = []
    for batch in (2, 3, 5):
        x = torch.randn(batch, 1, 6, 6, device=DEVICE, requires_grad=True)
        y = compiled(x)
        torch.testing.assert_close(y, model(x))
        y.sum().backward()
        frames.append(counter.frame_count)
    assert frames[0] >= 1 and frames[1:] == frames[:1] * 2, frames  # no recompile


def test_bad_input_fails_early_under_compile():
    conv = cnn.Conv2d(2, 3, 3).to(DEVICE)
    with pytest.raises(RuntimeError, match="expected input"):
        torch.compile(conv, backend="aot_eager", fullgraph=True)(
            torch.randn(1, 5, 6, 6, device=DEVICE))


@pytest.mark.parametrize("argv,mode", [([], None), (["--compile"], "default"),
                                       (["--compile", "reduce-overhead"], "reduce-overhead")])
def test_train_compile_option(argv, mode):
    from cnn.train.cli import parse_args
    from cnn.train.run import compile_model

    args = parse_args(["--backend", "torch", *argv])
    assert args.compile == mode
    if mode is not None:
        model = MyCNN(backend="torch", seed=0)
        keys = list(model.state_dict())
        compile_model(model, mode)
        assert model._compiled_call_impl is not None  # compiled in place, lazily
        assert list(model.state_dict()) == keys
