"""cnn.convert: torchvision-structured models (ResNet basic and bottleneck blocks, VGG with
batch norm, MobileNetV2 with depthwise convs and ReLU6, a DenseNet with concatenation) run on
our layers and give the unconverted model's outputs, input and parameter gradients and running
statistics in training and evaluation (the unconverted model in float64 as the reference);
what convert keeps (tensors, flags, hooks, layout, keys) and what it leaves (and says so)."""
import copy
import logging

import pytest
import torch
from support import DEVICE, assert_matches
from support import torchvision_structures as tv
from support.torchvision_structures import randomize_batch_norm
from torch import nn

import cnn
from cnn.conversion import CONVERSIONS


def compare_with_torch(model: nn.Module, x: torch.Tensor, train: bool, fuse: bool = False):
    """Converted model (float32) against the unconverted one in float64: output, input and
    parameter gradients, and buffers after one forward/backward."""
    model = model.to(DEVICE).train(train)
    reference = copy.deepcopy(model).double()
    ours = cnn.convert(model, fuse=fuse)
    x = x.to(DEVICE)
    x_ours, x_ref = x.clone().requires_grad_(), x.double().requires_grad_()
    torch.manual_seed(1)  # the same dropout masks in both
    y_ours = ours(x_ours)
    torch.manual_seed(1)
    y_ref = reference(x_ref)
    assert_matches(y_ours, y_ref, what="output")
    grad = torch.randn_like(y_ref)
    y_ours.backward(grad.float())
    y_ref.backward(grad)
    assert_matches(x_ours.grad, x_ref.grad, what="input gradient")
    for (name, p), (ref_name, ref) in pairs(ours.named_parameters(),
                                            reference.named_parameters(), fuse):
        assert_matches(p.grad, ref.grad, what=f"{name} ({ref_name}) gradient")
    for (name, b), (ref_name, ref) in pairs(ours.named_buffers(), reference.named_buffers(),
                                            fuse):
        if b.is_floating_point():
            assert_matches(b, ref, what=f"{name} ({ref_name})")
        else:
            assert torch.equal(b, ref), name
    return ours


def pairs(ours, reference, fused: bool):
    """Matching (name, tensor) pairs: by name; after fusion (conv1 + bn1 -> conv1.0, conv1.1)
    by registration order, which fusion keeps when each bn follows its conv."""
    ours, reference = list(ours), list(reference)
    assert len(ours) == len(reference)
    if not fused:
        reference = dict(reference)
        return [((n, t), (n, reference[n])) for n, t in ours]
    for (n, t), (ref_name, ref) in zip(ours, reference, strict=True):
        assert t.shape == ref.shape, (n, ref_name)
    return list(zip(ours, reference, strict=True))


MODELS = {
    # 64x64 leaves layer4 2x2 maps: batch norm over 8 values, not 2 (ill-conditioned even for
    # torch's own float32). The interpreter's cost is per launch, not per pixel.
    "resnet_basic": (lambda: tv.ResNet(tv.BasicBlock, [1, 1, 1, 1], num_classes=5, width=4),
                     (2, 3, 64, 64)),
    "resnet_bottleneck": (lambda: tv.ResNet(tv.Bottleneck, [1, 1, 1, 1], num_classes=5,
                                            width=2), (2, 3, 64, 64)),
    "vgg_bn": (lambda: tv.vgg_bn([4, "M", 8, 8, "M"]), (2, 3, 12, 12)),
    "mobilenet_v2": (lambda: tv.MobileNetV2(), (2, 3, 16, 16)),
    "densenet": (lambda: tv.DenseNet(), (2, 3, 32, 32)),
}


# ResNet in evaluation mode is covered by test_resnet.py (the same layers); time is per launch.
CASES = [(name, train) for name in MODELS for train in (True, False)
         if train or not name.startswith("resnet")]


@pytest.mark.parametrize("name,train", CASES,
                         ids=[f"{n}-{'train' if t else 'eval'}" for n, t in CASES])
def test_converted_model_matches_torch(name, train):
    build, shape = MODELS[name]
    model = randomize_batch_norm(build())
    ours = compare_with_torch(model, torch.randn(shape), train)
    # Every layer we implement now runs our forward.
    for module_name, m in ours.named_modules():
        assert type(m) not in CONVERSIONS, f"{module_name} is still {type(m).__name__}"


def test_convert_then_fuse_matches_torch():
    """Training mode (the fused evaluation path is tested in test_fusion.py)."""
    build, shape = MODELS["resnet_basic"]
    ours = compare_with_torch(randomize_batch_norm(build()), torch.randn(shape), True,
                              fuse=True)
    assert isinstance(ours.conv1, cnn.ConvBNAct2d)
    assert isinstance(ours.layer1[0].conv1, cnn.ConvBNAct2d)


UPSAMPLING = {
    # a DCGAN generator's 4x4 stride-2 upsampling, a U-Net decoder's 2x2 stride 2
    "generator_2d": (lambda: nn.Sequential(
        nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(6),
        nn.ReLU(), nn.ConvTranspose2d(6, 3, 2, stride=2), nn.Conv2d(3, 2, 3, padding=1)),
        (2, 4, 3, 3)),
    "autoencoder_1d": (lambda: nn.Sequential(
        nn.Conv1d(2, 4, 3, stride=2, padding=1, padding_mode="reflect"), nn.ReLU(),
        nn.ConvTranspose1d(4, 2, 3, stride=2, padding=1, output_padding=1)), (2, 2, 8)),
}


@pytest.mark.parametrize("name", UPSAMPLING)
def test_transposed_and_1d_convs_are_converted(name):
    build, shape = UPSAMPLING[name]
    model = randomize_batch_norm(build())
    ours, report = cnn.convert(model, report=True)
    assert not report.left
    assert [type(m) for m in ours] == [CONVERSIONS[type(m)] for m in model]
    compare_with_torch(model, torch.randn(shape), train=True)


def test_mobilenet_relu6_converted_linear_left_and_reported():
    model = tv.MobileNetV2()
    ours, report = cnn.convert(model, report=True)
    left = {name: cls for name, cls, _ in report.left}
    assert "features.0.2" not in left and ("features.0.2", "nn.ReLU6") in report.converted
    assert left["classifier.1"] == "Linear"
    assert type(ours.features[0][2]) is cnn.ReLU6
    depthwise = ours.features[1].conv[0][0]
    assert type(depthwise) is cnn.Conv2d and depthwise.groups == depthwise.in_channels
    assert ("features.1.conv.0.0", "nn.Conv2d") in report.converted
    assert "Linear" in str(report)


def test_original_untouched_and_state_dict_keys_kept():
    model = tv.ResNet(tv.BasicBlock, [1, 1, 1, 1], num_classes=3, width=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ours = cnn.convert(model)
    assert type(model.conv1) is nn.Conv2d and type(ours.conv1) is cnn.Conv2d
    assert ours.conv1.weight is not model.conv1.weight
    assert list(ours.state_dict()) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # Checkpoints move both ways, strictly.
    model.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(model.state_dict(), strict=True)


def test_inplace_keeps_tensors_flags_hooks_and_layout():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.AvgPool2d(1), nn.AdaptiveMaxPool2d(2),
                          nn.AdaptiveAvgPool2d(1))
    model = model.to(memory_format=torch.channels_last)
    model[1].eval()
    weight = model[0].weight
    calls = []
    model[0].register_forward_hook(lambda m, i, o: calls.append(o.shape))
    model[0].weight.register_hook(lambda g: calls.append("grad"))
    ours = cnn.convert(model, inplace=True)
    assert ours is model
    assert [type(m) for m in ours] == [cnn.Conv2d, cnn.BatchNorm2d, cnn.ReLU, cnn.MaxPool2d,
                                       cnn.AvgPool2d, cnn.AdaptiveMaxPool2d,
                                       cnn.AdaptiveAvgPool2d]
    assert ours[0].weight is weight and ours[0].weight.is_contiguous(
        memory_format=torch.channels_last)
    assert ours.training and not ours[1].training
    ours(torch.randn(2, 3, 8, 8)).sum().backward()
    assert calls == [torch.Size([2, 4, 8, 8]), "grad"]


def test_float64_model_keeps_its_dtype():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU()).double()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    ours = cnn.convert(model)
    assert ours[0].weight.dtype == torch.float64
    assert_matches(ours(x), model(x), what="float64 output")


class WeightStandardizedConv(nn.Conv2d):
    def _conv_forward(self, input, weight, bias):
        weight = (weight - weight.mean((1, 2, 3), keepdim=True))
        return super()._conv_forward(input, weight, bias)


class CustomReLU(nn.ReLU):
    def forward(self, input):
        return super().forward(input) * 2


def test_subclasses_lazy_and_unknown_layers_are_left(caplog):
    model = nn.Sequential(WeightStandardizedConv(3, 4, 3), CustomReLU(), nn.LazyConv2d(4, 1),
                          nn.Flatten(), nn.LazyLinear(2), nn.Conv2d(3, 3, 1))
    with caplog.at_level(logging.INFO, logger="cnn.convert"):
        ours, report = cnn.convert(model, report=True)
    assert type(ours[0]) is WeightStandardizedConv and type(ours[1]) is CustomReLU
    assert isinstance(ours[2], nn.LazyConv2d) and type(ours[5]) is cnn.Conv2d
    reasons = {name: reason for name, _, reason in report.left}
    assert set(reasons) == {"0", "1", "2", "3", "4"}
    assert "overrides forward" in reasons["1"] and "subclass of nn.Conv2d" in reasons["0"]
    assert "lazy" in reasons["2"] and "not implemented" in reasons["3"]
    assert report.converted == [("5", "nn.Conv2d")]
    assert "WeightStandardizedConv" in caplog.text


def test_initialised_lazy_conv_is_converted():
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU())
    model(torch.randn(1, 2, 5, 5))  # initialises: becomes a plain nn.Conv2d
    ours = cnn.convert(model)
    assert type(ours[0]) is cnn.Conv2d


def test_not_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        cnn.convert(torch.randn(3))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_real_torchvision_models(arch):
    models = pytest.importorskip("torchvision.models")
    model = randomize_batch_norm(getattr(models, arch)(num_classes=4))
    compare_with_torch(model, torch.randn(2, 3, 32, 32), train=False)
