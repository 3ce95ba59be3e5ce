"""Our modules behave as torch's wherever only torch's code runs: repr, state_dict (loading
torch's, strict errors), reset_parameters and seeded construction, .to()/.half()/.double(),
deepcopy, pickling, torch.save/torch.load of whole models (weights_only as torch) and what
cnn.fuse does to state_dict keys; forward equals torch's module on the same state."""
import copy
import io
import pickle

import pytest
import torch
from support import DEVICE, assert_matches
from torch import nn

import cnn

# id: (ours, torch's, constructor args, kwargs, input shape)
MODULES = {
    "conv": (cnn.Conv2d, nn.Conv2d, (2, 4, 3), dict(stride=2, padding=1, bias=False),
             (2, 2, 6, 6)),
    "conv_reflect_groups": (cnn.Conv2d, nn.Conv2d, (4, 4, 3),
                            dict(groups=2, padding="same", padding_mode="reflect"),
                            (1, 4, 5, 5)),
    "maxpool": (cnn.MaxPool2d, nn.MaxPool2d, (3,),
                dict(stride=1, padding=1, ceil_mode=True, return_indices=True), (1, 2, 5, 5)),
    "avgpool": (cnn.AvgPool2d, nn.AvgPool2d, (2,),
                dict(ceil_mode=True, count_include_pad=False, divisor_override=3),
                (1, 2, 5, 5)),
    "adaptive_avg": (cnn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool2d, ((2, None),), {},
                     (1, 2, 5, 4)),
    "adaptive_max": (cnn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool2d, (1,),
                     dict(return_indices=True), (2, 3, 4, 4)),
    "batchnorm": (cnn.BatchNorm2d, nn.BatchNorm2d, (3,), {}, (2, 3, 3, 3)),
    "batchnorm_cumulative": (cnn.BatchNorm2d, nn.BatchNorm2d, (3,),
                             dict(affine=False, momentum=None), (2, 3, 3, 3)),
    "batchnorm_untracked": (cnn.BatchNorm2d, nn.BatchNorm2d, (3,),
                            dict(track_running_stats=False), (2, 3, 3, 3)),
    "relu": (cnn.ReLU, nn.ReLU, (), {}, (2, 3)),
    "relu_inplace": (cnn.ReLU, nn.ReLU, (), dict(inplace=True), (2, 3)),
}


def pair(case, dtype=torch.float64):
    ours_cls, torch_cls, args, kwargs, shape = MODULES[case]
    torch.manual_seed(0)
    ours = ours_cls(*args, **kwargs).to(DEVICE, dtype)
    torch.manual_seed(0)
    theirs = torch_cls(*args, **kwargs).to(DEVICE, dtype)
    return ours, theirs, shape


def fused_pair():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
    theirs = nn.Sequential(conv, bn, nn.ReLU()).to(DEVICE, torch.float64)
    ours = cnn.ConvBNReLU2d(copy.deepcopy(conv), copy.deepcopy(bn)).to(DEVICE, torch.float64)
    return ours, theirs, (2, 2, 5, 5)


def same_outputs(ours, theirs, shape, dtype=torch.float64):
    """One forward of each (training and eval) on the same input; outputs and buffers equal."""
    for training in (True, False):
        ours.train(training), theirs.train(training)
        x = torch.randn(shape, device=DEVICE, dtype=dtype)
        got, want = ours(x.clone()), theirs(x.clone())
        for g, w in zip(*(o if isinstance(o, tuple) else (o,) for o in (got, want)),
                        strict=True):
            if w.is_floating_point():
                assert_matches(g, w, dtype, "forward")
            else:
                assert torch.equal(g, w)
        for (name, b), (_, b_ref) in zip(ours.named_buffers(), theirs.named_buffers(),
                                         strict=True):
            assert torch.equal(b, b_ref) if not b.is_floating_point() else \
                assert_matches(b, b_ref, dtype, name) is None


@pytest.mark.parametrize("case", MODULES)
def test_repr_state_dict_and_forward_are_torchs(case):
    ours, theirs, shape = pair(case)
    assert repr(ours) == repr(theirs)
    assert isinstance(ours, type(theirs))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (k, v), (_, v_ref) in zip(ours.state_dict().items(), theirs.state_dict().items(),
                                  strict=True):
        assert torch.equal(v, v_ref), k  # seeded construction draws torch's values
    same_outputs(ours, theirs, shape)


@pytest.mark.parametrize("case", [c for c in MODULES if MODULES[c][1] in
                                  (nn.Conv2d, nn.BatchNorm2d)])
def test_load_torchs_state_dict_and_strict_errors(case):
    ours, theirs, shape = pair(case)
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(-1, 1)
    ours.load_state_dict(theirs.state_dict())
    same_outputs(ours, theirs, shape)
    state = theirs.state_dict()
    bad = {**state, "extra": torch.zeros(1)}
    bad.pop(next(iter(state)))
    for strict in (True, False):
        errors = []
        for module in (ours, theirs):
            try:
                errors.append(("ok", tuple(module.load_state_dict(bad, strict=strict))))
            except RuntimeError as error:
                errors.append(("error", str(error)))
        assert errors[0] == errors[1]


@pytest.mark.parametrize("case", ["conv", "conv_reflect_groups", "batchnorm"])
def test_reset_parameters_draws_torchs_values(case):
    ours, theirs, _ = pair(case)
    for module in (ours, theirs):
        torch.manual_seed(7)
        module.reset_parameters()
    for (k, v), (_, v_ref) in zip(ours.state_dict().items(), theirs.state_dict().items(),
                                  strict=True):
        assert torch.equal(v, v_ref), k


@pytest.mark.parametrize("case", ["conv", "batchnorm", "maxpool"])
def test_dtype_and_device_moves(case):
    ours, theirs, shape = pair(case, torch.float32)
    for move in (lambda m: m.double(), lambda m: m.half(), lambda m: m.float(),
                 lambda m: m.to(DEVICE, torch.float64)):
        ours, theirs = move(ours), move(theirs)
        assert type(ours) is MODULES[case][0]
        assert [t.dtype for t in ours.state_dict().values()] == \
            [t.dtype for t in theirs.state_dict().values()]
    same_outputs(ours, theirs, shape)


@pytest.mark.parametrize("case", ["conv", "batchnorm", "adaptive_max", "fused"])
def test_deepcopy_and_pickle_keep_class_state_and_results(case):
    ours, theirs, shape = fused_pair() if case == "fused" else pair(case)
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert type(clone) is type(ours)
        assert all(type(a) is type(b) for a, b in zip(clone.modules(), ours.modules(),
                                                      strict=True))
        for (k, v), (_, v0) in zip(clone.state_dict().items(), ours.state_dict().items(),
                                   strict=True):
            assert torch.equal(v, v0) and v.data_ptr() != v0.data_ptr(), k
        same_outputs(clone, copy.deepcopy(theirs), shape)


def _model(layers):
    return layers.Sequential(layers.Conv2d(1, 2, 3, padding=1), layers.BatchNorm2d(2),
                             layers.ReLU(), layers.MaxPool2d(2), layers.AdaptiveAvgPool2d(1))


class _Layers:
    """cnn's module classes under torch's names (Sequential is torch's)."""
    Sequential, Conv2d, BatchNorm2d, ReLU = nn.Sequential, cnn.Conv2d, cnn.BatchNorm2d, cnn.ReLU
    MaxPool2d, AdaptiveAvgPool2d = cnn.MaxPool2d, cnn.AdaptiveAvgPool2d


@pytest.mark.parametrize("fused", [False, True])
def test_whole_model_save_load_weights_only_as_torch(fused):
    """torch.load(weights_only=True) refuses a whole pickled model of torch's modules unless
    they are allow-listed; ours behave the same, and load once cnn.layers.MODULES is."""
    ours = _model(_Layers).to(DEVICE)
    if fused:
        ours = cnn.fuse(ours)
    theirs = _model(nn).to(DEVICE)
    for model, allowed in ((theirs, [type(m) for m in theirs.modules()]),
                           (ours, [*cnn.layers.MODULES, nn.Sequential, nn.Identity])):
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            torch.load(buffer, weights_only=True)
        buffer.seek(0)
        with torch.serialization.safe_globals(allowed):
            loaded = torch.load(buffer, weights_only=True)
        assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
        x = torch.randn(2, 1, 6, 6, device=DEVICE)
        model.eval(), loaded.eval()
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_fuse_renames_state_dict_keys():
    """cnn.fuse puts ConvBNReLU2d(conv, bn, relu) in the conv's slot and Identity in the
    others, so keys gain the fused module's index: "0.weight" -> "0.0.weight", "1.weight"
    -> "0.1.weight". An unfused checkpoint therefore loads into the model before fusing (the
    fused model shares those modules), not into the fused model with strict=True."""
    torch.manual_seed(0)
    model = nn.Sequential(cnn.Conv2d(1, 2, 3), cnn.BatchNorm2d(2), cnn.ReLU()).to(DEVICE)
    fused = cnn.fuse(model)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias",
                                        "1.running_mean", "1.running_var",
                                        "1.num_batches_tracked"]
    assert list(fused.state_dict()) == ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias",
                                        "0.1.running_mean", "0.1.running_var",
                                        "0.1.num_batches_tracked"]
    checkpoint = {k: v + 1 if v.is_floating_point() else v
                  for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="Missing key"):
        fused.load_state_dict(checkpoint)
    model.load_state_dict(checkpoint)
    refused = cnn.fuse(model)
    assert all(torch.equal(a, b) for a, b in zip(refused.state_dict().values(),
                                                 checkpoint.values(), strict=True))
