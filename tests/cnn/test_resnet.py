"""cnn.models.resnet18/34/50: torchvision's module names and state_dict keys exactly, so a
torchvision-structured model's state_dict (the format of torchvision's checkpoint files) loads
with strict=True, and the outputs, gradients and running statistics then match it (torch in
float64 as the reference) in evaluation and training."""
import copy
import re

import pytest
import torch
from support import DEVICE, assert_matches
from support import torchvision_structures as tv
from support.torchvision_structures import randomize_batch_norm

import cnn
from cnn.fusion import FusedGraphModule
from cnn.models import ResNet, resnet18, resnet34, resnet50
from cnn.models.resnet import BasicBlock, Bottleneck, load_pretrained

ARCHS = {"resnet18": (resnet18, tv.BasicBlock, [2, 2, 2, 2]),
         "resnet34": (resnet34, tv.BasicBlock, [3, 4, 6, 3]),
         "resnet50": (resnet50, tv.Bottleneck, [3, 4, 6, 3])}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_state_dict_keys_and_shapes_are_torchvisions(arch):
    ours, block, layers = ARCHS[arch]
    reference = tv.ResNet(block, layers).state_dict()
    state = ours().state_dict()
    assert list(state) == list(reference)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.items()}


def test_real_torchvision_checkpoint_format():
    models = pytest.importorskip("torchvision.models")
    for arch, (ours, _, _) in ARCHS.items():
        ours().load_state_dict(getattr(models, arch)().state_dict(), strict=True)


def check_outputs(ours, reference, x, train):
    """ours (float32, our layers) against reference (torch layers, float64)."""
    ours.to(DEVICE).train(train)
    reference = reference.to(DEVICE).double().train(train)
    x_ref = x.to(DEVICE).double().requires_grad_()
    x_ours = x.to(DEVICE).clone().requires_grad_()
    y_ours, y_ref = ours(x_ours), reference(x_ref)
    assert_matches(y_ours, y_ref, what="logits")
    grad = torch.randn_like(y_ref)
    y_ours.backward(grad.float())
    y_ref.backward(grad)
    assert_matches(x_ours.grad, x_ref.grad, what="input gradient")
    ref_params = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        assert_matches(p.grad, ref_params[name].grad, what=f"{name} gradient")
    ref_buffers = dict(reference.named_buffers())
    for name, b in ours.named_buffers():
        if b.is_floating_point():
            assert_matches(b, ref_buffers[name], what=name)
        else:
            assert torch.equal(b, ref_buffers[name]), name


def test_resnet18_loads_a_torchvision_file_strictly_and_matches_in_eval(tmp_path):
    reference = randomize_batch_norm(tv.ResNet(tv.BasicBlock, [2, 2, 2, 2], num_classes=5,
                                               width=2))
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    ours = resnet18(num_classes=5, width=2, weights=path)
    assert all(type(m) is not torch.nn.Conv2d for m in ours.modules())
    ours.load_state_dict(torch.load(path, weights_only=True), strict=True)
    # 64x64: layer4's maps are 2x2 (batch norm over 8 values in training, not 2)
    check_outputs(ours, reference, torch.randn(2, 3, 64, 64), train=False)


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_resnet_matches_torchvision_structure_in_training(block):
    ours_block, tv_block = {"basic": (BasicBlock, tv.BasicBlock),
                            "bottleneck": (Bottleneck, tv.Bottleneck)}[block]
    # Input gradients jump where a pre-ReLU value crosses zero; in a 2-channel stem, float32
    # rounding alone (torch's own) can cross one and move them by 10%. Width 4 is robust here.
    reference = randomize_batch_norm(tv.ResNet(tv_block, [1, 1, 1, 1], num_classes=5, width=4))
    x = torch.randn(2, 3, 64, 64)
    ours = ResNet(ours_block, [1, 1, 1, 1], num_classes=5, width=4)
    ours.load_state_dict(reference.state_dict(), strict=True)
    check_outputs(ours, copy.deepcopy(reference), x, train=True)


def test_pretrained_head_of_another_size_stays_fresh_and_grey_input_sums_rgb():
    reference = tv.ResNet(tv.BasicBlock, [2, 2, 2, 2], num_classes=1000, width=2)
    state = reference.state_dict()
    ours = resnet18(num_classes=7, in_channels=1, width=2)
    fresh_fc = ours.fc.weight.clone()
    skipped = load_pretrained(ours, state)
    assert skipped == ["fc.weight", "fc.bias"]
    assert torch.equal(ours.fc.weight, fresh_fc)
    assert torch.equal(ours.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(ours.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_pretrained_with_wrong_keys_raises():
    state = tv.ResNet(tv.BasicBlock, [2, 2, 2, 2], width=2).state_dict()
    state["layer5.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="layer5.weight"):
        resnet18(width=2, weights=state)
    del state["layer5.weight"], state["layer1.0.conv1.weight"]
    with pytest.raises(RuntimeError, match="layer1.0.conv1.weight"):
        resnet18(width=2, weights=state)


def test_models_are_exported():
    assert cnn.models.resnet50 is resnet50


@pytest.mark.parametrize("arch,convs", [("resnet18", 20), ("resnet50", 53)])
def test_fused_resnet_runs_each_conv_with_its_add_and_relu_in_one_call(arch, convs):
    fused = cnn.fuse(ARCHS[arch][0](width=4))
    assert sum(isinstance(m, cnn.ConvBNAct2d) for m in fused.modules()) == convs
    inside = {id(p) for m in fused.modules() if isinstance(m, cnn.ConvBNAct2d)
              for p in m.modules()}
    assert all(id(m) in inside for m in fused.modules() if isinstance(m, torch.nn.Conv2d))
    for layer in (fused.layer1, fused.layer2, fused.layer3, fused.layer4):
        for block in layer:
            assert isinstance(block, FusedGraphModule), type(block)
            calls = [n for n in block.graph.nodes if n.op not in ("placeholder", "output")]
            # only fused convs are called: the add and every ReLU are inside them
            assert all(n.op == "call_module" and
                       isinstance(block.get_submodule(n.target), cnn.ConvBNAct2d)
                       for n in calls), block.code
            last = block.get_submodule(calls[-1].target)
            assert calls[-1].kwargs.get("residual") is not None and \
                isinstance(last[2], torch.nn.ReLU)
    downsample = fused.layer2[0].downsample[0]
    assert isinstance(downsample[1], torch.nn.BatchNorm2d)
    assert isinstance(downsample[2], torch.nn.Identity)  # conv + bn, no activation


def test_fused_resnet18_keeps_torchvisions_keys_and_results_in_eval():
    reference = randomize_batch_norm(tv.ResNet(tv.BasicBlock, [2, 2, 2, 2], num_classes=5,
                                               width=4)).eval()
    ours = resnet18(num_classes=5, width=4, weights=reference.state_dict()).to(DEVICE)
    keys = list(ours.state_dict())
    fused = cnn.fuse(ours).eval()
    # the fused module in each conv's slot: conv1.weight -> conv1.0.weight, bn1.bias ->
    # conv1.1.bias, downsample.1.running_mean -> downsample.0.1.running_mean; order kept
    renamed = [re.sub(r"(^|\.)bn(\d)\.", r"\1conv\2.1.",
                      re.sub(r"(^|\.)conv(\d)\.", r"\1conv\2.0.", key))
               .replace("downsample.0.", "downsample.0.0.").replace("downsample.1.",
                                                                    "downsample.0.1.")
               for key in keys]
    assert list(fused.state_dict()) == renamed
    x = torch.randn(2, 3, 64, 64, device=DEVICE)
    with torch.no_grad():
        assert_matches(fused(x), reference.to(DEVICE).double()(x.double()), what="logits")
