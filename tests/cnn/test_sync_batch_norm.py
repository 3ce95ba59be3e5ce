"""cnn.SyncBatchNorm: on 2 processes (gloo, CPU) it equals one BatchNorm2d over the
concatenated batch (torch in float64 as the reference): outputs, input gradients, parameter
gradients summed over the ranks, running statistics and num_batches_tracked; also with uneven
and empty per-rank batches, channels_last, momentum=None, and inside the fused ConvBNReLU2d.
One process: it is cnn.BatchNorm2d. The ranks are subprocesses with a hard timeout."""
import zlib

import pytest
import torch
from support import GPU, assert_matches
from support.multiprocess import run_ranks
from torch import nn

import cnn
from cnn.layers.sync_batch_norm import sync_group

# name -> (per-rank batch sizes, C, H, W, channels_last, momentum, affine, forward steps)
CASES = {
    "nchw_uneven": ((3, 2), 3, 5, 4, False, 0.1, True, 1),
    "channels_last_cumulative_2_steps": ((2, 2), 5, 3, 3, True, None, True, 2),
    "empty_rank_no_affine": ((4, 0), 2, 3, 2, False, 0.3, False, 1),
    "batch_of_one_per_rank": ((1, 1), 4, 1, 1, False, 0.1, True, 1),
}


def case_data(name, step):
    """The whole batch (sum(sizes), C, H, W) float64 and its upstream gradient."""
    sizes, c, h, w = CASES[name][:4]
    g = torch.Generator().manual_seed(zlib.crc32(f"{name}/{step}".encode()))
    x = torch.randn(sum(sizes), c, h, w, generator=g, dtype=torch.float64) * 2 + 0.5
    return x, torch.randn(x.shape, generator=g, dtype=torch.float64)


def local_slice(name, rank, t):
    sizes = CASES[name][0]
    start = sum(sizes[:rank])
    return t[start:start + sizes[rank]]


def make_bn(name, module=nn.BatchNorm2d, dtype=torch.float32):
    c, momentum, affine = CASES[name][1], CASES[name][5], CASES[name][6]
    bn = module(c, momentum=momentum, affine=affine, dtype=dtype)
    if affine:
        with torch.no_grad():
            bn.weight.copy_(torch.linspace(0.5, 1.5, c))
            bn.bias.copy_(torch.linspace(-0.2, 0.3, c))
    return bn


def sync_bn_worker(rank, world_size, out_dir):
    """Each case on this rank's slice of the batch, through a SyncBatchNorm converted from a
    torch BatchNorm2d; saves what the test compares."""
    from cnn.train import distributed as D

    results = {}
    with D.process_group(timeout_s=60) as ctx:
        assert ctx.world_size == world_size and ctx.backend == "gloo"
        for name, (_, _, _, _, channels_last, *_, steps) in CASES.items():
            bn = cnn.SyncBatchNorm.convert_sync_batchnorm(make_bn(name))
            assert sync_group(bn) is not None
            outs, grads = [], []
            for step in range(steps):
                x, dy = (local_slice(name, rank, t).float() for t in case_data(name, step))
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                x.requires_grad_(True)
                out = bn(x)
                out.backward(dy)
                outs.append(out.detach())
                grads.append(x.grad)
                assert out.is_contiguous(memory_format=torch.channels_last if channels_last
                                         else torch.contiguous_format)
            results[name] = {
                "out": outs, "grad": grads, "state": bn.state_dict(),
                "weight_grad": bn.weight.grad if bn.affine else None,
                "bias_grad": bn.bias.grad if bn.affine else None}
        results["fused"] = fused_case(rank)
    torch.save(results, f"{out_dir}/rank{rank}.pt")


FUSED_SIZES = (3, 2)


def fused_data():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(sum(FUSED_SIZES), 2, 6, 5, generator=g, dtype=torch.float64)
    return x, torch.randn(sum(FUSED_SIZES), 3, 6, 5, generator=g, dtype=torch.float64)


def make_fused_reference():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())


def fused_case(rank):
    """A ConvBNReLU2d whose batch norm is converted to SyncBatchNorm, on this rank's slice."""
    ref = make_fused_reference()
    block = cnn.SyncBatchNorm.convert_sync_batchnorm(cnn.ConvBNReLU2d(ref[0], ref[1]))
    assert isinstance(block, cnn.ConvBNReLU2d) and isinstance(block[1], cnn.SyncBatchNorm)
    x, dz = fused_data()
    start = sum(FUSED_SIZES[:rank])
    x = x[start:start + FUSED_SIZES[rank]].float().requires_grad_(True)
    z = block(x)
    z.backward(dz[start:start + FUSED_SIZES[rank]].float())
    return {"out": z.detach(), "grad": x.grad, "state": block.state_dict(),
            "param_grads": {k: p.grad for k, p in block.named_parameters()}}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync_bn")
    run_ranks(__file__, "sync_bn_worker", 2, out, 150)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def reference(name):
    """torch's BatchNorm2d in float64 over the whole batch, step by step."""
    bn = make_bn(name, dtype=torch.float64)
    outs, grads = [], []
    for step in range(CASES[name][7]):
        x, dy = case_data(name, step)
        x.requires_grad_(True)
        out = bn(x)
        out.backward(dy)
        outs.append(out.detach())
        grads.append(x.grad)
    return bn, outs, grads


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_equal_one_batch_norm_over_the_whole_batch(ranks, name):
    bn, outs, grads = reference(name)
    for step, (out, grad) in enumerate(zip(outs, grads, strict=True)):
        mine = torch.cat([r[name]["out"][step] for r in ranks])
        assert_matches(mine, out, torch.float32, f"{name} output, step {step}")
        mine = torch.cat([r[name]["grad"][step] for r in ranks])
        assert_matches(mine, grad, torch.float32, f"{name} input gradient, step {step}")
    if bn.affine:
        for key in ("weight", "bias"):
            summed = sum(r[name][f"{key}_grad"] for r in ranks)
            assert_matches(summed, getattr(bn, key).grad, torch.float32, f"{name} d{key}")
    for r in ranks:
        state = r[name]["state"]
        assert list(state) == list(bn.state_dict())
        for key in ("running_mean", "running_var"):
            assert_matches(state[key], bn.state_dict()[key], torch.float32, f"{name} {key}")
        assert state["num_batches_tracked"].item() == bn.num_batches_tracked.item()
    # Every rank holds the same running statistics.
    for key, value in ranks[0][name]["state"].items():
        assert torch.equal(value, ranks[1][name]["state"][key]), key


def test_fused_conv_bn_relu_with_a_synced_batch_norm(ranks):
    ref = make_fused_reference().double()
    x, dz = fused_data()
    x.requires_grad_(True)
    z = ref(x)
    z.backward(dz)
    assert_matches(torch.cat([r["fused"]["out"] for r in ranks]), z, torch.float32, "output")
    assert_matches(torch.cat([r["fused"]["grad"] for r in ranks]), x.grad, torch.float32,
                   "input gradient")
    for key, p in ref.named_parameters():
        assert_matches(sum(r["fused"]["param_grads"][key] for r in ranks), p.grad,
                       torch.float32, f"d{key}")
    for r in ranks:
        for key, value in ref.state_dict().items():
            if key.endswith("num_batches_tracked"):
                assert r["fused"]["state"][key].item() == value.item()
            else:
                assert_matches(r["fused"]["state"][key], value, torch.float32, key)


def test_one_process_is_batch_norm2d():
    """No process group: the plain batch norm path (training and evaluation)."""
    bn = make_bn("nchw_uneven", cnn.SyncBatchNorm)
    ref = make_bn("nchw_uneven", dtype=torch.float64)
    assert sync_group(bn) is None
    x, dy = case_data("nchw_uneven", 0)
    for training in (True, False):
        bn.train(training)
        ref.train(training)
        xf = x.float().requires_grad_(True)
        xd = x.clone().requires_grad_(True)
        out, expected = bn(xf), ref(xd)
        out.backward(dy.float())
        expected.backward(dy)
        assert_matches(out, expected, torch.float32, f"output, training={training}")
        assert_matches(xf.grad, xd.grad, torch.float32, f"input gradient, training={training}")
    assert bn.num_batches_tracked.item() == 1


def test_convert_keeps_parameters_buffers_and_keys():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), cnn.BatchNorm2d(4), nn.ReLU(),
                          nn.Sequential(nn.BatchNorm2d(4, momentum=None, affine=False)))
    model[1].running_mean.fill_(0.25)
    model.eval()
    keys, weight = list(model.state_dict()), model[1].weight
    converted = cnn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(converted[1]) is cnn.SyncBatchNorm and type(converted[3][0]) is cnn.SyncBatchNorm
    assert converted[1].weight is weight and converted[1].running_mean[0].item() == 0.25
    assert converted[3][0].momentum is None and not converted[3][0].affine
    assert not converted[1].training
    assert list(converted.state_dict()) == keys
    assert isinstance(converted[1], nn.SyncBatchNorm)
    repr(converted)


def test_bad_input_raises_torchs_errors():
    bn = cnn.SyncBatchNorm(3)
    with pytest.raises(ValueError, match="expected at least 2D input"):
        bn(torch.randn(3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(torch.randn(1, 3, 1, 1))


@pytest.mark.skipif(not GPU, reason="needs CUDA (torch's SyncBatchNorm refuses CPU tensors)")
def test_equals_torchs_sync_batch_norm_on_cuda(tmp_path):
    run_ranks(__file__, "torch_sync_bn_worker", 1, tmp_path, 150)
    mine, theirs = torch.load(tmp_path / "rank0.pt", weights_only=True)
    for a, b, what in zip(mine, theirs, ("output", "input gradient", "dweight", "dbias",
                                         "running_mean", "running_var"), strict=True):
        assert_matches(a, b, torch.float32, what)


def torch_sync_bn_worker(rank, world_size, out_dir):
    """Ours and torch's synced batch-norm Functions on the same CUDA batch, in a one-process
    nccl group (torch's module would take its one-process shortcut; its Function does not)."""
    from torch.nn.modules._functions import SyncBatchNorm as TorchSyncFunction

    from cnn.functional.sync_batch_norm import sync_batch_norm
    from cnn.train import distributed as D

    with D.process_group(device="cuda", timeout_s=60) as ctx:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(6, 4, 5, 3, generator=g).to(ctx.device)
        dy = torch.randn(x.shape, generator=g).to(ctx.device)
        results = []
        for fn in ("ours", "torch"):
            w = torch.linspace(0.5, 1.5, 4, device=ctx.device).requires_grad_(True)
            b = torch.linspace(-0.2, 0.3, 4, device=ctx.device).requires_grad_(True)
            rm, rv = torch.zeros(4, device=ctx.device), torch.ones(4, device=ctx.device)
            xi = x.clone().requires_grad_(True)
            group = torch.distributed.group.WORLD
            if fn == "ours":
                out = sync_batch_norm(xi, rm, rv, w, b, 0.1, 1e-5, group, 1)
            else:
                out = TorchSyncFunction.apply(xi, w, b, rm, rv, 1e-5, 0.1, group, 1)
            out.backward(dy)
            results.append([t.detach().cpu() for t in (out, xi.grad, w.grad, b.grad, rm, rv)])
    torch.save(results, f"{out_dir}/rank{rank}.pt")
