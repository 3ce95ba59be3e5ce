"""Data-parallel training (torchrun, DDP, gloo on CPU, 2 processes): 2 ranks with batch B end
where one rank with batch 2B and the plain one-process run end; a dead rank ends the job with
an error instead of a hang; a run interrupted under DDP and resumed equals an uninterrupted
one. Tiny synthetic sets, hard timeouts, free ports, no process left behind."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from support.multiprocess import run_ranks, torchrun

from cnn.train import checkpoint as ckpt
from cnn.train import distributed
from cnn.train.run import main
from cnn.train.trainer import Trainer

# Parameters after K steps: fp32 on every side, gradients summed in another order (DDP
# averages two halves), so they agree to fp32 rounding.
RTOL, ATOL = 1e-4, 1e-6


def read_metrics(out):
    return json.loads((out / "metrics.json").read_text())


def assert_same_parameters(a: dict, b: dict, exact: bool = False):
    assert list(a) == list(b)
    for key, value in a.items():
        if exact:
            assert torch.equal(value, b[key]), key
        else:
            torch.testing.assert_close(value, b[key], rtol=RTOL, atol=ATOL, msg=key)


# ---------------------------------------------------------------------------- no torchrun

def test_helpers_without_a_process_group():
    assert not distributed.launched() and not distributed.initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    ctx = distributed.setup("cpu")
    assert not ctx.distributed and ctx.main and ctx.device == torch.device("cpu")
    assert distributed.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    assert not distributed.any_rank(False) and distributed.any_rank(True)
    assert distributed.all_gather_object("x") == ["x"]
    assert distributed.broadcast_object(3) == 3
    assert distributed.default_backend(torch.device("cpu")) == "gloo"
    assert distributed.default_backend(torch.device("cuda", 0)) == "nccl"
    distributed.teardown()  # nothing to destroy


@pytest.mark.parametrize("n, world", [(16, 2), (15, 2), (12, 3), (5, 4)])
def test_shards_are_disjoint_and_interleave_into_the_one_process_batches(n, world):
    """Step k's batches of all ranks together are step k's batch of one process with world
    times the batch, for every epoch (the permutation is seeded by seed + epoch)."""
    batch = 2
    for epoch in (0, 1):
        whole = distributed.shard_order(n, epoch, 7, 0, 1)
        assert sorted(whole.tolist()) == list(range(n))
        shards = [distributed.shard_order(n, epoch, 7, r, world) for r in range(world)]
        assert all(len(s) == -(-n // world) for s in shards)
        if n % world == 0:
            assert sorted(torch.cat(shards).tolist()) == list(range(n))  # disjoint, complete
        for k in range(n // (batch * world)):
            together = torch.stack([s[k * batch:(k + 1) * batch] for s in shards], 1)
            assert torch.equal(together.flatten(),
                               whole[k * batch * world:(k + 1) * batch * world])
    # Epoch 0 is the one-process Trainer's first order (torch.randperm from the seed).
    assert torch.equal(distributed.shard_order(n, 0, 7, 0, 1),
                       torch.randperm(n, generator=torch.Generator().manual_seed(7)))
    ranges = [distributed.shard_range(n, r, world) for r in range(world)]
    assert torch.equal(torch.cat(ranges), torch.arange(n))


# ---------------------------------------------------------------------------- under torchrun

COMMON = ["--synthetic", "40", "--epochs", "1", "--no-plots", "--no-progress", "--device", "cpu"]


def three_runs(tmp_path, extra, two_extra=(), one=True):
    """(last.pt state, metrics) of torchrun with 2 ranks of batch 2, torchrun with 1 rank of
    batch 4 (when ``one``) and the plain process with batch 4: the same global batches."""
    runs = {"two": ["--batch-size", "2", *two_extra], "plain": ["--batch-size", "4"]}
    if one:
        runs["one"] = ["--batch-size", "4"]
    for name, args in runs.items():
        argv = [*COMMON, *extra, *args, "--out", str(tmp_path / name)]
        if name == "plain":
            assert main(argv) == 0
        else:
            torchrun(2 if name == "two" else 1, argv, tmp_path, 240, name=name)
    return {name: (ckpt.load_checkpoint(tmp_path / name / ckpt.LAST),
                   read_metrics(tmp_path / name)) for name in runs}


def assert_same_history(metrics, reference, keys=("train_loss", "grad_norm", "val_loss")):
    for key in keys:
        torch.testing.assert_close(torch.tensor(metrics["history"][key]),
                                   torch.tensor(reference["history"][key]), rtol=RTOL, atol=0,
                                   msg=key)


def test_two_ranks_equal_one_rank_with_twice_the_batch_and_the_plain_run(tmp_path):
    """Triton backend: after the epoch's K = 2 steps (8 images), 2 ranks of batch 2, 1 rank
    of batch 4 and the plain process of batch 4 hold the same parameters; the same losses
    and gradient norms step by step."""
    runs = three_runs(tmp_path, ["--limit-train", "8"])
    err = (tmp_path / "two.err").read_text()
    assert "2 processes (gloo), batch 2 per process = global batch 4" in err
    assert err.count("epoch 1:") == 1  # rank 0 alone prints
    (two, two_m), (one, one_m), (plain, plain_m) = runs["two"], runs["one"], runs["plain"]
    assert len(plain_m["history"]["train_loss"]) == 2
    assert_same_parameters(two["model"], one["model"])
    assert_same_parameters(one["model"], plain["model"])
    for metrics in (two_m, one_m):
        assert_same_history(metrics, plain_m)
        assert metrics["test_size"] == plain_m["test_size"]
        assert abs(metrics["test_loss"] - plain_m["test_loss"]) <= RTOL * plain_m["test_loss"]
        assert metrics["confusion_matrix"] == plain_m["confusion_matrix"]
    assert (two_m["world_size"], two_m["global_batch_size"]) == (2, 4)


def test_synced_batch_norm_in_the_trainer_equals_one_process(tmp_path):
    """--batchnorm --sync-bn (the fused ConvBNReLU2d with cnn.SyncBatchNorm) on 2 ranks of
    batch 2 against the plain process of batch 4, one step: the same training loss and
    gradient norm, running statistics, batch counts and batch-norm parameters.

    The other weights, and the evaluation losses that use them, are not compared: the conv
    biases feed a batch norm, which subtracts them again, so their gradient is zero but for
    rounding, and Adam normalises that noise into steps of +-lr (which evaluation, with
    running statistics, no longer cancels); activations that batch norm centres on 0 flip
    ReLU on rounding, with the same effect on a few fc1 weights. Two plain runs that differ
    only in their thread count differ in the same way; the test above, without batch norm,
    compares them."""
    runs = three_runs(tmp_path, ["--limit-train", "4", "--batchnorm"], ["--sync-bn"], one=False)
    (two, two_m), (plain, plain_m) = runs["two"], runs["plain"]
    assert "batch-norm statistics synced" in (tmp_path / "two.err").read_text()
    assert_same_history(two_m, plain_m, ("train_loss", "grad_norm"))
    keys = [k for k in plain["model"] if k.startswith(("conv1.1.", "conv2.1."))]
    assert len(keys) == 10
    assert_same_parameters({k: two["model"][k] for k in keys},
                           {k: plain["model"][k] for k in keys})


# ---------------------------------------------------------------------------- failures, resume

SMALL = ["--synthetic", "60", "--limit-train", "16", "--batch-size", "2", "--backend", "torch",
         "--device", "cpu", "--augment", "--dropout", "--no-progress", "--no-plots"]


def train_worker(rank, world_size, out_dir, argv, stop_at_step=None, die_at_step=None):
    """cnn.train.run.main(argv) on this rank. stop_at_step: a Ctrl-C on every rank after that
    many steps of this session; die_at_step: rank 1 is killed (SIGKILL) at that step."""
    real_step, calls = Trainer.train_step, []

    def step(self, x, y):
        calls.append(1)
        if die_at_step is not None and rank == 1 and len(calls) == die_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        result = real_step(self, x, y)
        if stop_at_step is not None and len(calls) == stop_at_step:
            signal.raise_signal(signal.SIGINT)
        return result

    Trainer.train_step = step
    start = time.monotonic()
    code = main(list(argv))
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"code": code, "seconds": time.monotonic() - start}, f)
    distributed.exit_process(code)  # as python -m cnn.train ends


def test_a_dead_rank_ends_the_job_with_an_error(tmp_path):
    timeout_s = 20
    started = time.monotonic()
    codes, logs = run_ranks(__file__, "train_worker", 2, tmp_path, 150,
                            [*SMALL, "--epochs", "1", "--out", str(tmp_path / "run"),
                             "--dist-timeout", str(timeout_s)], None, 3, check=False)
    assert codes[1] == -signal.SIGKILL
    assert codes[0] not in (0, None)
    err = logs[0][1].read_text()
    assert "rank 0/2: error:" in err, err[-3000:]
    assert time.monotonic() - started < 120


def stuck_rank_worker(rank, world_size, out_dir, timeout_s):
    """Rank 1 joins the group and then stops taking part (alive, busy elsewhere); rank 0's
    next collective must fail after timeout_s."""
    with distributed.process_group("cpu", timeout_s=timeout_s):
        distributed.all_reduce_sum([rank])
        if rank == 1:
            time.sleep(timeout_s + 3)
            return
        start = time.monotonic()
        try:
            distributed.all_reduce_sum([rank])
        except RuntimeError as e:
            with open(f"{out_dir}/waited.json", "w") as f:
                json.dump({"seconds": time.monotonic() - start, "error": str(e)}, f)
            raise SystemExit(1) from e


def test_a_stuck_rank_fails_the_others_collective_after_the_timeout(tmp_path):
    codes, _ = run_ranks(__file__, "stuck_rank_worker", 2, tmp_path, 90, 3.0,
                         check=False)
    assert codes[0] == 1
    waited = json.loads((tmp_path / "waited.json").read_text())
    assert 2.5 < waited["seconds"] < 30, waited


@pytest.mark.parametrize("launched", [True, False], ids=["torchrun", "single"])
def test_exit_process_flushes_and_keeps_the_status(tmp_path, launched):
    """Under torchrun the process ends without finalization (see exit_process), yet with its
    exit status and with what it printed, unbuffered or not."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env.pop("PYTHONUNBUFFERED", None)
    if launched:
        env.update(RANK="0", WORLD_SIZE="1")
    code = ("import sys; from cnn.train.distributed import exit_process; "
            "print('out', end=''); print('err', end='', file=sys.stderr); exit_process(130)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr[-3:]) == (130, "out", "err"), done.stderr


def test_resume_under_ddp_continues_identically(tmp_path):
    """Stopped (Ctrl-C on both ranks) at epoch 2 step 1, resumed: the same losses and
    weights as an uninterrupted run; dropout and augmentation on, so every rank's RNG
    state matters."""
    args = [*SMALL, "--epochs", "2"]
    run_ranks(__file__, "train_worker", 2, tmp_path, 150,
              [*args, "--out", str(tmp_path / "straight")])
    out = tmp_path / "resumed"
    codes, _ = run_ranks(__file__, "train_worker", 2, tmp_path, 150,
                         [*args, "--out", str(out)], 5, check=False)
    assert codes == [130, 130]
    state = ckpt.load_checkpoint(out / ckpt.LAST)
    assert (state["epoch"], state["step"], state["world_size"]) == (1, 1, 2)
    assert len(state["rank_rng"]) == 2
    run_ranks(__file__, "train_worker", 2, tmp_path, 150,
              [*args, "--out", str(out), "--resume"])
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(out)
    for key in ("train_loss", "grad_norm", "val_loss", "lr"):
        assert resumed["history"][key] == straight["history"][key], key
    assert resumed["test_loss"] == straight["test_loss"]
    assert_same_parameters(ckpt.load_checkpoint(out / ckpt.LAST)["model"],
                           ckpt.load_checkpoint(tmp_path / "straight" / ckpt.LAST)["model"],
                           exact=True)
    # Another world size cannot continue it.
    assert main([*args, "--out", str(out), "--resume"]) == 2
