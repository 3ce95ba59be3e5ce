"""Models as real networks are written, against torch.

cnn.fuse on the blocks real CNNs are made of, in torchvision's module structure (ResNet's
BasicBlock and Bottleneck, MobileNetV2's inverted residual with ReLU6, an EfficientNet-style
MBConv stack with SiLU) and the seed's MyCNN (conv -> ReLU, no batch norm): every conv ends up
in a ConvBNAct2d with its batch norm, residual add and activation; the converted and fused
model gives torch's results (the unconverted model in float64) in training and evaluation:
outputs, input and parameter gradients, running statistics, num_batches_tracked; no
activation module runs outside a fused call; an eval forward launches one kernel per conv.
Also the up-sampling networks (a U-Net, DCGAN's generator: transposed convs) converted and
fused, and a 1-D audio-style stack of torch's own modules run under cnn.enabled()."""
import copy

import pytest
import torch
from support import DEVICE, assert_matches, launches
from support import torchvision_structures as tv
from support.torchvision_structures import randomize_batch_norm
from torch import nn

import cnn
from cnn.fusion import FusedGraphModule
from cnn.models import MyCNN

# One depth each (the interpreter's cost is per launch). ResNet at 64x64: at 16x16 layer3 and
# layer4 are 1x1, batch norm in training then normalises 2 values, and torch's own float32
# is 3e-4 off its float64 there; a 64x64 tile is still one program per launch. The ResNet-18
# structure (BasicBlock) trains fused in test_conversion.py (convert(fuse=True)) and
# test_fusion.py (one block), and is checked fused in evaluation in test_resnet.py.
MODELS = {
    "resnet50": (lambda: tv.ResNet(tv.Bottleneck, [1, 1, 1, 1], num_classes=5, width=4),
                 (2, 3, 64, 64)),
    "mobilenet_v2": (lambda: tv.MobileNetV2(), (2, 3, 16, 16)),
    "efficientnet": (lambda: tv.EfficientNet(), (2, 3, 16, 16)),
    "mycnn": (lambda: MyCNN(backend="torch", seed=0), (2, 1, 28, 28)),
}
# Activation modules that follow no conv (MyCNN's ReLU after fc1): they run once a forward.
UNFUSED_ACTIVATIONS = {"mycnn": 1}
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU)


def convert_and_fuse(model: nn.Module):
    """cnn.fuse(cnn.convert(model)) and, for each parameter and buffer of the result, its name
    in ``model`` (fusion keeps the tensors: every one must be found)."""
    ours = cnn.convert(model)
    names = {id(t): n for n, t in (*ours.named_parameters(), *ours.named_buffers())}
    ours = cnn.fuse(ours, inplace=True)
    return ours, names


def count_activation_calls(model: nn.Module) -> list:
    """A list that grows by one per forward call of any activation module of ``model``."""
    calls = []
    for m in model.modules():
        if isinstance(m, ACTIVATIONS):
            m.register_forward_hook(lambda *_: calls.append(1))
    return calls


def step(ours, reference, names, x, train: bool, what: str):
    """One forward and backward of ours (float32) and the reference (float64) on the same
    input; outputs, input and parameter gradients and buffers compared."""
    ours.train(train)
    reference.train(train)
    x_ours, x_ref = x.clone().requires_grad_(), x.double().requires_grad_()
    torch.manual_seed(1)  # the same dropout masks in both
    y = ours(x_ours)
    torch.manual_seed(1)
    y_ref = reference(x_ref)
    assert_matches(y, y_ref, what=f"{what}: output")
    grad = torch.randn_like(y_ref)
    y.backward(grad.float())
    y_ref.backward(grad)
    assert_matches(x_ours.grad, x_ref.grad, what=f"{what}: input gradient")
    ref_params = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        assert_matches(p.grad, ref_params[names[id(p)]].grad, what=f"{what}: {name} gradient")
    ref_buffers = dict(reference.named_buffers())
    for name, b in ours.named_buffers():
        ref = ref_buffers[names[id(b)]]
        if b.is_floating_point():
            assert_matches(b, ref, what=f"{what}: {name}")
        else:
            assert torch.equal(b, ref), f"{what}: {name}"  # num_batches_tracked
    ours.zero_grad()
    reference.zero_grad()


@pytest.mark.parametrize("name", list(MODELS))
def test_fused_model_matches_torch_in_training_then_evaluation(name):
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model = randomize_batch_norm(build()).to(DEVICE)
    reference = copy.deepcopy(model).double()
    ours, names = convert_and_fuse(model)
    assert sorted(names.values()) == sorted(
        n for n, _ in (*reference.named_parameters(), *reference.named_buffers()))
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert sum(isinstance(m, cnn.ConvBNAct2d) for m in ours.modules()) == convs
    ours_calls, reference_calls = count_activation_calls(ours), count_activation_calls(reference)
    x = torch.randn(shape, device=DEVICE)
    step(ours, reference, names, x, train=True, what="train")
    step(ours, reference, names, x, train=False, what="eval")
    assert reference_calls, "the counter saw no activation in the unfused model"
    left = 2 * UNFUSED_ACTIVATIONS.get(name, 0)  # two forwards
    assert len(ours_calls) == left, "an activation module ran outside a fused call"


def assert_every_conv_fused(model: nn.Module, convs: int) -> None:
    """``convs`` ConvBNAct2d and no other conv; adds and activations inside the fused calls:
    every activation module is in a ConvBNAct2d or is one a rewritten forward never calls."""
    fused = [m for m in model.modules() if isinstance(m, cnn.ConvBNAct2d)]
    assert len(fused) == convs
    inside = {id(part) for m in fused for part in m.modules()}
    assert all(id(m) in inside for m in model.modules() if isinstance(m, nn.Conv2d))
    called = set()
    for m in model.modules():
        if isinstance(m, FusedGraphModule):
            nodes = list(m.graph.nodes)
            assert {n.op for n in nodes} == {"placeholder", "call_module", "output"}, m.code
            called |= {id(m.get_submodule(n.target)) for n in nodes if n.op == "call_module"}
    for m in model.modules():
        if isinstance(m, ACTIVATIONS):
            assert id(m) in inside or id(m) not in called


@pytest.mark.parametrize("block,layers,convs", [("basic", [2, 2, 2, 2], 20),
                                                ("bottleneck", [3, 4, 6, 3], 53)],
                         ids=["resnet18", "resnet50"])
def test_every_resnet_conv_is_fused_with_its_add_and_relu(block, layers, convs):
    block = {"basic": tv.BasicBlock, "bottleneck": tv.Bottleneck}[block]
    fused, report = cnn.convert(tv.ResNet(block, layers, width=4), fuse=True, report=True)
    assert_every_conv_fused(fused, convs)
    assert len(report.fused) == convs and f"{convs} convs fused" in str(report)
    downsample = fused.layer2[0].downsample[0]
    assert isinstance(downsample[2], nn.Identity)  # conv + bn, no activation
    assert isinstance(fused.layer2[0], FusedGraphModule)
    assert type(fused.layer2[0]).__name__ == block.__name__


def test_mobilenet_and_efficientnet_residuals_are_fused():
    for model, convs in ((tv.MobileNetV2(), 10), (tv.EfficientNet(), 10)):
        assert_every_conv_fused(cnn.fuse(model), convs)


@pytest.mark.parametrize("name,pools", [("resnet18", 2), ("mobilenet_v2", 0)])
def test_fused_eval_forward_launches_one_kernel_per_conv(name, pools):
    """Linear layers and MobileNetV2's functional pooling are torch's: no launch."""
    build, shape = {"resnet18": (lambda: tv.ResNet(tv.BasicBlock, [2, 2, 2, 2], width=4),
                                 (2, 3, 16, 16)),
                    "mobilenet_v2": MODELS["mobilenet_v2"]}[name]
    model = randomize_batch_norm(build()).to(DEVICE).eval()
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    ours = cnn.convert(model, fuse=True)
    x = torch.randn(shape, device=DEVICE)
    with torch.no_grad(), launches() as launched:
        y = ours(x)
    assert len(launched) == convs + pools, launched
    with torch.no_grad():
        assert_matches(y, model.double()(x.double()), torch.float32, "eval output")


# ------------------------------------------------------------------ up-sampling and 1-D models


class UNet(nn.Module):
    """A two-level U-Net: conv-BN-ReLU pairs, max-pool down, a 2x2 stride-2 transposed conv up,
    the skip joined by torch.cat, a 1x1 head."""

    def __init__(self, width: int = 4):
        super().__init__()

        def pair(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.down = pair(1, width)
        self.pool = nn.MaxPool2d(2)
        self.bottom = pair(width, 2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.decode = pair(2 * width, width)
        self.head = nn.Conv2d(width, 2, 1)

    def forward(self, x):
        skip = self.down(x)
        x = self.up(self.bottom(self.pool(skip)))
        return self.head(self.decode(torch.cat([x, skip], dim=1)))


def dcgan_generator(latent: int = 8, width: int = 4) -> nn.Module:
    """DCGAN's generator: 4x4 transposed convs (the first from 1x1, then stride 2 with padding 1)
    with batch norm and ReLU, Tanh out (Tanh stays torch's)."""
    return nn.Sequential(
        nn.ConvTranspose2d(latent, 4 * width, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * width),
        nn.ReLU(True),
        nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width),
        nn.ReLU(True),
        nn.ConvTranspose2d(2 * width, 1, 4, 2, 1, bias=False), nn.Tanh())


UPSAMPLING_MODELS = {
    "unet": (UNet, (2, 1, 16, 16), 6),          # every conv-BN-ReLU fused, the head conv not
    "dcgan_generator": (dcgan_generator, (2, 8, 1, 1), 0),
}


@pytest.mark.parametrize("name", list(UPSAMPLING_MODELS))
def test_upsampling_model_matches_torch_in_training_then_evaluation(name):
    build, shape, fused = UPSAMPLING_MODELS[name]
    torch.manual_seed(0)
    model = randomize_batch_norm(build()).to(DEVICE)
    reference = copy.deepcopy(model).double()
    ours, names = convert_and_fuse(model)
    assert sum(isinstance(m, cnn.ConvBNAct2d) for m in ours.modules()) == fused
    assert all(type(m) is cnn.ConvTranspose2d
               for m in ours.modules() if isinstance(m, nn.ConvTranspose2d))
    x = torch.randn(shape, device=DEVICE)
    step(ours, reference, names, x, train=True, what="train")
    step(ours, reference, names, x, train=False, what="eval")


class Routed(nn.Module):
    """Runs ``inner`` (a plain torch model) inside cnn.enabled(); the report of every call."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.reports = []

    def forward(self, x):
        with cnn.enabled() as report:
            y = self.inner(x)
        self.reports.append(report.snapshot())
        return y


def audio_stack() -> nn.Module:
    """A 1-D audio-style stack: a strided wide conv, a dilated conv, a depthwise conv, batch
    norm and ReLU between them, global average pooling, a linear head."""
    return nn.Sequential(
        nn.Conv1d(1, 4, 9, stride=2, padding=4), nn.BatchNorm1d(4), nn.ReLU(),
        nn.Conv1d(4, 8, 3, padding=2, dilation=2), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Conv1d(8, 8, 3, stride=2, padding=1, groups=8), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3))


def test_audio_stack_under_enabled_matches_torch_in_training_then_evaluation():
    """torch's own modules, untouched, routed by cnn.enabled(): its 1-D convs, batch norms and
    ReLUs run on our kernels (1-D pooling falls back, counted with its reason)."""
    torch.manual_seed(0)
    model = randomize_batch_norm(audio_stack()).to(DEVICE)
    reference = copy.deepcopy(model).double()
    ours = Routed(model)
    names = {id(t): n for n, t in (*model.named_parameters(), *model.named_buffers())}
    x = torch.randn(2, 1, 32, device=DEVICE)
    step(ours, reference, names, x, train=True, what="train")
    step(ours, reference, names, x, train=False, what="eval")
    for report in ours.reports:
        assert {op: c["routed"] for op, c in report.items() if c["routed"]} == {
            "conv1d": 3, "batch_norm": 2, "relu": 3}, report
        assert {op: c["fallbacks"] for op, c in report.items() if c["fallbacks"]} == {
            "adaptive_avg_pool1d": {"not implemented by cnn": 1}}, report
        assert not any(c["errors"] for c in report.values()), report
