"""Train the seed's MNIST CNN on the Triton kernels: ``python -m cnn.train``.

The recipe is the seed's (see ``cnn.train.trainer``) unless ``--recipe fast``
(``cnn.train.recipes``: batch norm, one-cycle, 2 epochs to 99%). ``--arch`` also trains
torchvision's ResNets on our layers, and ``--weights`` with ``--freeze-backbone`` or
``--finetune`` does transfer learning (see ``cnn.train.transfer``; ``python -m
cnn.train.transfer`` is a worked demonstration). Every option is checked before any work starts
(``cnn.train.cli``); the run writes into --out: metrics.json, best.pt / last.pt (see
``cnn.train.checkpoint``) and PNG plots (with matplotlib). A folder that already holds a run is
refused unless ``--resume`` continues it or ``--overwrite`` replaces it.

Ctrl-C (or SIGTERM) never loses work (see ``cnn.train.interrupt``): during training the first
one stops after the current step and saves last.pt, a second one stops at once and saves the
state after the last finished step; during validation it saves at once (validation reruns on
--resume); during the test the finished training is already in last.pt. Exit status 130 after
an interrupt.

    python -m cnn.train --limit-train 6000 --epochs 1     # a quick real-MNIST run
    python -m cnn.train --synthetic --epochs 2            # no data needed
    python -m cnn.train --resume                          # continue an interrupted run
    python -m cnn.train --recipe fast --backend torch     # >= 99% test accuracy in 2 epochs
    python -m cnn.train --arch resnet18 --weights resnet18-f37072fd.pth --freeze-backbone
    torchrun --nproc_per_node=2 -m cnn.train --batchnorm --sync-bn   # data parallel

Under torchrun (``cnn.train.distributed``) every process trains on its shard with
DistributedDataParallel; --batch-size is per process; rank 0 alone prints and writes files.
"""
import json
import platform
import sys
import time
from pathlib import Path

import torch

from .. import kernels
from ..distributed import DistributedDataParallel
from ..layers import SyncBatchNorm
from ..models.resnet import load_pretrained
from . import checkpoint as ckpt
from . import distributed
from .cli import METRICS, build_parser, parse_args, resume_fixed_options, run_files, usage_error
from .data import MNISTUnavailableError, load_mnist
from .factory import build_model, freeze_biases_before_batch_norm, head_name
from .fileio import atomic_write
from .interrupt import Interrupts
from .loader import make_splits
from .plots import save_plots
from .recipes import describe
from .synthetic import synthetic_mnist
from .trainer import (
    EarlyStopping,
    Progress,
    Stopped,
    Trainer,
    confusion_matrix,
    duration,
    grad_norm,
    triton_version,
)
from .transfer import finetune_param_groups, freeze_backbone, replace_head

__all__ = ["main", "build_parser", "Trainer", "EarlyStopping", "Progress", "confusion_matrix",
           "grad_norm"]


def compile_model(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """--compile: model's forward compiled in place as one graph (our ops are torch.ops.cnn
    ops, so fullgraph holds); state_dict keys stay the model's. mode 'reduce-overhead'
    replays the graph as a CUDA graph on CUDA."""
    model.compile(fullgraph=True, mode=None if mode == "default" else mode)
    return model


def _say(message: str) -> None:
    """Progress and results on stderr: rank 0 speaks for all under torchrun."""
    if distributed.is_main():
        print(message, file=sys.stderr, flush=True)


def interpreter_estimate(trainer: Trainer, test_size: int, say=_say):
    """An on_step hook: under the interpreter, print how long each phase will take, measured on
    this session's 2nd and 3rd steps (the 1st is warm-up): the training step for training, the
    forward + loss inside it (per image) for validation and test, which run forward only."""
    seen = []

    def on_step(t: Trainer) -> None:
        seen.append((t.last_step_s, t.last_forward_s / max(t.last_batch_images, 1)))
        if len(seen) != 3:
            return
        per_step = (seen[1][0] + seen[2][0]) / 2
        per_image = (seen[1][1] + seen[2][1]) / 2
        val_s, test_s = per_image * len(t.val_data), per_image * test_size
        say(f"interpreter estimate (measured): training {per_step:.1f} s/step x "
            f"{t.steps_per_epoch} steps = {duration(per_step * t.steps_per_epoch)} per epoch; "
            f"forward {1e3 * per_image:.0f} ms/image: validation on {len(t.val_data)} images "
            f"{duration(val_s)} per epoch, test on {test_size} images {duration(test_s)}")
    return on_step


def describe_model(args) -> str:
    if args.arch == "mycnn":
        return f"MyCNN(dropout={args.dropout}, batchnorm={args.batchnorm}" + (
            f", num_classes={args.num_classes})" if args.num_classes != 10 else ")")
    return f"{args.arch}(num_classes={args.num_classes}, in_channels=1" + (
        f", width={args.resnet_width})" if args.resnet_width != 64 else ")")


def make_model(args):
    """(model on the CPU, its config for best.pt, a line saying what --weights did or None).

    --weights loads a state_dict (see ``cnn.models.resnet.load_pretrained``: a head of another
    size stays fresh, a 3-channel first conv is summed for MNIST's 1 channel); --freeze-backbone
    and --finetune put a new head on it, and --freeze-backbone freezes the rest (no gradient,
    batch-norm statistics as loaded). Raises ValueError (the error line) for weights that do
    not fit the model."""
    model = build_model(args.arch, num_classes=args.num_classes, backend=args.backend,
                        dropout=args.dropout, batchnorm=args.batchnorm, seed=args.seed,
                        in_channels=1, width=args.resnet_width)
    if args.arch == "mycnn":
        config = {"dropout": args.dropout, "batchnorm": args.batchnorm}
        if args.num_classes != 10:
            config["num_classes"] = args.num_classes
    else:
        config = {"arch": args.arch, "num_classes": args.num_classes, "in_channels": 1,
                  "width": args.resnet_width}
    cancelled = freeze_biases_before_batch_norm(model)
    said = f"not trained (batch norm cancels them): {', '.join(cancelled)}" if cancelled \
        else None
    if not args.weights:
        return model, config, said
    head = head_name(model)
    try:
        kept_fresh = load_pretrained(model, args.weights, head=head)
    except (OSError, EOFError, RuntimeError, ValueError, TypeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        first = first if len(first) <= 240 else first[:240] + "..."
        raise ValueError(f"argument --weights: {args.weights} does not fit --arch {args.arch}"
                         f" ({describe_model(args)}): {first}") from None
    said = (said + "\n" if said else "") + f"weights: {args.weights} loaded" + (
        f" (its head has another size: {head} starts fresh)" if kept_fresh else "")
    if args.freeze_backbone or args.finetune:
        replace_head(model, args.num_classes, head=head)
        if args.freeze_backbone:
            freeze_backbone(model, head=head)
            said += f"; new head {head}, the backbone frozen (no gradient, batch-norm " \
                    "statistics as loaded)"
        else:
            said += f"; new head {head}, the backbone fine-tuned at lr {args.lr} x " \
                    f"{args.backbone_lr_scale}"
    return model, config, said


class Run:
    """One invocation: sets up data, model and Trainer, trains, tests; knows at every moment
    what last.pt holds, so an interrupt can say it truthfully."""

    def __init__(self, args, interrupts: Interrupts, ctx: distributed.Context = None):
        self.args, self.interrupts = args, interrupts
        self.ctx = ctx or distributed.Context(device=torch.device(args.device))
        self.out = Path(args.out)
        self.last = self.out / ckpt.LAST
        self.trainer = None
        self.phase = "setup"      # setup -> train -> test
        self.saved = None         # (epochs done, step) that last.pt holds, or None

    # -- checkpoints ---------------------------------------------------------------------------

    def save_last(self) -> None:
        """On every rank under DDP (the state gathers every rank's RNG); rank 0 writes."""
        t = self.trainer
        with self.interrupts.critical():
            state = t.state_dict()
            if self.ctx.main:
                ckpt.save_checkpoint(self.last, {**state, "args": vars(self.args),
                                                 "world_size": self.ctx.world_size})
            self.saved = (t.epoch, t.step)

    def _where(self) -> str:
        epochs, step = self.saved
        if step:
            return f"epoch {epochs + 1} step {step}/{self.trainer.steps_per_epoch}"
        return f"the end of epoch {epochs}" if epochs else "the start"

    def interrupted(self, agreed: bool = False) -> int:
        """After Stopped or KeyboardInterrupt: save what can be saved, say what last.pt holds.
        agreed: a stop every rank decided on (Stopped), the only one saved under DDP."""
        if self.phase == "setup":
            if self.saved:
                _say(f"\ninterrupted before training resumed: {self.last} is unchanged "
                     f"({self.saved[0]} epochs and {self.saved[1]} steps done)")
            else:
                _say("\ninterrupted before training started: no checkpoint was written, "
                     "there is nothing to resume")
            return 130
        if self.phase == "test":
            _say(f"\ninterrupted during the test: the finished training is in {self.last}; "
                 "the same arguments with --resume run the test")
            return 130
        t = self.trainer
        if self.ctx.distributed and not agreed:
            # Not a stop all ranks agreed on: the others may be anywhere, so no collective
            # (the checkpoint needs one); last.pt keeps the last save.
            where = f"{self.last} holds {self._where()}" if self.saved else \
                "there is nothing to resume"
            _say(f"\ninterrupted: {where}")
            return 130
        undone = t.rollback_partial_step()
        validating = t.order is not None and t.step == t.steps_per_epoch
        try:
            try:
                self.save_last()
            except KeyboardInterrupt:  # held back during the save, which completed
                pass
        except OSError as e:
            where = f"; {self.last} holds {self._where()}" if self.saved else \
                "; there is nothing to resume"
            _say(f"\nstopped, but saving {self.last} failed ({e}){where}")
            return 130
        why = " (the unfinished step is not in it)" if undone else \
            " (its validation reruns on --resume)" if validating else ""
        _say(f"\nstopped: saved {self.last} at {self._where()}{why}; continue with the same "
             "arguments and --resume")
        return 130

    # -- the run -------------------------------------------------------------------------------

    def load_resume_state(self):
        """last.pt, checked to be a checkpoint of this run's options; None if not resuming.
        Raises ValueError with the error line."""
        if not self.args.resume:
            return None
        try:
            state = ckpt.load_resume_checkpoint(self.last)
        except ckpt.CheckpointError as e:
            raise ValueError(f"--resume: {e}") from None
        saved = state["args"]
        fixed = resume_fixed_options()
        if self.args.schedule == "onecycle":
            fixed.append("epochs")  # the cycle's length
        changed = [k for k in fixed if saved.get(k) != getattr(self.args, k)]
        if changed:
            raise ValueError("--resume needs the interrupted run's " + ", ".join(
                f"--{k.replace('_', '-')} {saved.get(k)}" for k in changed))
        self.saved = (state["epoch"], state["step"])
        return state

    def read_resume_state(self):
        """(load_resume_state(), None), or (None, the error line); also refuses a checkpoint
        of another number of processes."""
        try:
            state = self.load_resume_state()
        except ValueError as e:
            return None, str(e)
        saved = state.get("world_size", 1) if state is not None else self.ctx.world_size
        if saved != self.ctx.world_size:
            return None, (f"--resume: the run was saved by {saved} process(es); continue it "
                          f"with the same number (this is {self.ctx.world_size})")
        return state, None

    def data_parallel(self, model):
        """The DistributedDataParallel that trains model on this rank (model's batch norms
        synced first with --sync-bn: ours on the triton backend, torch's on the torch one)."""
        args, ctx = self.args, self.ctx
        if args.sync_bn:
            sync = SyncBatchNorm if args.backend == "triton" else torch.nn.SyncBatchNorm
            sync.convert_sync_batchnorm(model)  # in place: the model's children are replaced
        # Same initial weights everywhere (DDP also broadcasts rank 0's); dropout masks differ
        # by rank (rank 0 keeps the one-process stream).
        if ctx.rank:
            torch.manual_seed(args.seed + 7919 * ctx.rank)
        _say(f"distributed: {ctx.world_size} processes ({ctx.backend}), batch "
             f"{args.batch_size} per process = global batch {args.batch_size * ctx.world_size}"
             " (the gradient is its mean; --lr applies to it)"
             + (", batch-norm statistics synced" if args.sync_bn else ""))
        device_ids = [ctx.device] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def load_data(self):
        args = self.args
        if args.synthetic:
            return synthetic_mnist(args.synthetic, max(1, args.synthetic // 6))
        return load_mnist(args.data_dir)

    def execute(self) -> int:
        args, out, ctx = self.args, self.out, self.ctx
        # Rank 0 reads last.pt and hands it to the others (no shared disk needed).
        resume_state, error = distributed.broadcast_object(
            self.read_resume_state() if ctx.main else None)
        if error:
            return usage_error(error) if ctx.main else 2
        if resume_state is not None:
            self.saved = (resume_state["epoch"], resume_state["step"])
        if args.overwrite and ctx.main:
            for name in run_files():
                (out / name).unlink(missing_ok=True)

        torch.manual_seed(args.seed)
        device = ctx.device
        try:
            data = self.load_data()
        except MNISTUnavailableError as e:
            _say(f"error: {e}")
            return 1
        train_data, val_data, test_data = make_splits(
            data, device, limit_train=args.limit_train, rotation=args.rotation, hflip=args.hflip)

        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        try:
            model, config, transfer = make_model(args)
        except ValueError as e:
            return usage_error(str(e)) if ctx.main else 2
        model = model.to(device, memory_format=memory_format)
        if args.compile:
            compile_model(model, args.compile)
        parallel = self.data_parallel(model) if ctx.distributed else None
        param_groups = finetune_param_groups(model, args.lr, args.backbone_lr_scale,
                                             head=head_name(model)) if args.finetune else None
        self.trainer = trainer = Trainer(
            model, train_data, val_data, lr=args.lr, weight_decay=args.weight_decay,
            batch_size=args.batch_size, patience=args.patience, augment=args.augment,
            seed=args.seed, eval_batch_size=args.eval_batch_size,
            channels_last=args.channels_last, amp=args.amp,
            progress=not args.no_progress and ctx.main, log=_say, interrupts=self.interrupts,
            parallel=parallel, schedule=args.schedule, epochs=args.epochs,
            label_smoothing=args.label_smoothing, param_groups=param_groups)
        if resume_state is not None:
            trainer.load_state_dict(resume_state)
            _say(f"resuming {self.last}: {trainer.epoch} epochs done, step {trainer.step}")

        interpret = bool(kernels.runtime.INTERPRET and args.backend == "triton")
        _say(f"data: {data.source}; train {len(train_data)}, validation {len(val_data)}, "
             f"test {len(test_data)}")
        _say(f"model: {describe_model(args)} on the "
             f"{args.backend} backend, device {device}, "
             f"{'channels_last' if args.channels_last else 'NCHW'}, "
             f"{args.amp or 'fp32'}; recipe {describe(args.recipe)}")
        if transfer:
            _say(transfer)
        if interpret:
            _say("no CUDA: the Triton kernels run through Triton's interpreter on the CPU "
                 "(exact results, far from GPU speed); an estimate follows the first steps")

        def on_epoch(t: Trainer, summary: dict) -> None:
            if summary["improved"] and ctx.main:
                ckpt.save_checkpoint(out / ckpt.BEST, {
                    "model": t.early_stopping.best_state, "config": config,
                    "epoch": summary["epoch"], "val_loss": summary["val_loss"],
                    "val_accuracy": summary["val_accuracy"]})
            self.save_last()

        estimate = interpreter_estimate(trainer, len(test_data)) if interpret else None
        last_save = [time.perf_counter()]

        def on_step(t: Trainer) -> None:
            if estimate:
                estimate(t)
            due = time.perf_counter() - last_save[0] > 60 * args.save_every
            if ctx.distributed:  # every rank saves at the same step (the save is collective)
                due = distributed.any_rank(due)
            if due:
                self.save_last()
                last_save[0] = time.perf_counter()

        trainer.on_step, trainer.on_epoch = on_step, on_epoch
        if ctx.main:
            out.mkdir(parents=True, exist_ok=True)
        wall = time.perf_counter()
        self.phase = "train"
        try:
            trainer.fit(args.epochs, restore_best=False)
        except Stopped:
            return self.interrupted(agreed=True)
        self.phase = "test"  # last.pt holds the finished training from here on
        trainer.restore_best()
        train_wall = time.perf_counter() - wall

        pace = trainer.last_eval_s_per_image
        _say(f"testing on {len(test_data)} images"
             + (f" (about {duration(pace * len(test_data))} at validation's pace)"
                if pace and pace * len(test_data) >= 10 else ""))
        test_start = time.perf_counter()
        test_loss, test_acc, predictions = trainer.evaluate(test_data, keep_predictions=True,
                                                            label="test")
        test_s = time.perf_counter() - test_start
        confusion = confusion_matrix(test_data.labels, predictions, args.num_classes)
        metrics = {
            "test_accuracy": test_acc, "test_loss": test_loss,
            "epochs_run": trainer.epoch, "best_epoch": trainer.early_stopping.best_epoch + 1,
            "early_stopped": trainer.early_stopping.early_stop,
            "train_images_per_second": trainer.images_per_second(),
            "backend": args.backend, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
            platform.processor() or platform.machine(),
            "channels_last": args.channels_last, "amp": args.amp,
            "triton_interpreter": interpret,
            "data": data.source, "train_size": len(train_data), "val_size": len(val_data),
            "test_size": len(test_data), "train_wall_s": train_wall, "test_s": test_s,
            "wall_s": time.perf_counter() - wall,
            "confusion_matrix": confusion.tolist(), "history": trainer.history,
            "args": vars(args), "world_size": ctx.world_size,
            "global_batch_size": args.batch_size * ctx.world_size,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "triton": triton_version()},
        }
        if not ctx.main:
            return 0  # rank 0 alone writes the results
        atomic_write(out / METRICS, json.dumps(metrics, indent=1).encode())
        if not args.no_plots:
            shown = test_data.images[:36].cpu().numpy()
            save_plots(out, trainer.history, confusion.tolist(), shown,
                       test_data.labels[:36].cpu().tolist(), predictions[:36].tolist())
        print(f"test accuracy: {100 * test_acc:.2f}% ({round(test_acc * len(test_data))}/"
              f"{len(test_data)}), test loss {test_loss:.4f}; {trainer.epoch} "
              f"epoch{'' if trainer.epoch == 1 else 's'}, "
              f"{metrics['train_images_per_second']:,.0f} train img/s on {device} "
              f"({args.backend}); results in {out}")
        return 0


def main(argv=None) -> int:
    """The command line; returns the exit status (0, 1 no data, 2 bad arguments, 130 stopped)."""
    try:
        args = parse_args(argv)
    except SystemExit as e:  # --help (0) or a refused argument (2), already printed
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    if not distributed.launched():
        return _run(args, None)
    ctx = distributed.setup(args.device, args.dist_backend, args.dist_timeout)
    try:
        return _run(args, ctx)
    except BaseException as e:
        # Said by every rank: the one that failed names the cause, the others what they saw
        # (a collective whose peer is gone fails within --dist-timeout instead of hanging).
        print(f"rank {ctx.rank}/{ctx.world_size}: error: {type(e).__name__}: {e}",
              file=sys.stderr, flush=True)
        raise
    finally:
        distributed.teardown()


def _run(args, ctx) -> int:
    with Interrupts(_say) as interrupts:
        run = Run(args, interrupts, ctx)
        try:
            return run.execute()
        except KeyboardInterrupt:
            return run.interrupted()


if __name__ == "__main__":
    sys.exit(main())
