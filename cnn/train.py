"""Train the seed's MNIST CNN on the Triton kernels: ``python -m cnn.train``.

The seed's recipe: CrossEntropyLoss; Adam(lr 1e-3, weight_decay 1e-5, amsgrad); ReduceLROnPlateau
(factor 0.5, patience 3, min_lr 1e-6) on the validation loss; early stopping (patience 7) that
restores the best weights; batch size 64; an 80/20 train/validation split. It records the training
loss and gradient norm of every step and the validation loss/accuracy of every epoch, evaluates on
the 10,000 test images (accuracy, confusion matrix), and writes into --out: metrics.json,
best.pt / last.pt (see ``cnn.checkpoint``) and PNG plots (with matplotlib).

    python -m cnn.train --limit-train 6000 --epochs 1     # a quick real-MNIST run
    python -m cnn.train --synthetic --epochs 2            # no data needed
    python -m cnn.train --resume                          # continue an interrupted run
"""
import argparse
import json
import math
import platform
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn, optim

import kernels

from . import checkpoint as ckpt
from .data import MNISTUnavailableError, load_mnist
from .fileio import atomic_write
from .loader import make_splits
from .models import BACKENDS, MyCNN
from .plots import save_plots
from .synthetic import synthetic_mnist

# Arguments that must match when a run is resumed (they define the model, data or batches).
RESUME_FIXED = ("batch_size", "dropout", "batchnorm", "augment", "hflip", "rotation",
                "limit_train", "synthetic", "seed", "lr", "weight_decay")


class EarlyStopping:
    """Stop after ``patience`` epochs without a validation loss below the best one, keeping a
    CPU copy of the best weights to restore."""

    def __init__(self, patience: int = 7, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best_loss, self.best_epoch, self.counter = math.inf, -1, 0
        self.best_state = None
        self.early_stop = False

    def __call__(self, val_loss: float, model: nn.Module, epoch: int) -> bool:
        """Record an epoch's validation loss; True when it is a new best."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.counter = val_loss, epoch, 0
            self.best_state = ckpt.state_dict_to_cpu(model.state_dict())
            return True
        self.counter += 1
        self.early_stop = self.counter >= self.patience
        return False

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "counter": self.counter, "early_stop": self.early_stop,
                "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class Progress:
    """A plain-text progress bar on stderr: a redrawn line on a terminal, else (a log file) one
    line every ``log_every_s`` seconds."""

    def __init__(self, total: int, label: str, stream=sys.stderr, log_every_s: float = 30.0,
                 done: int = 0):
        self.total, self.label, self.stream, self.first = total, label, stream, done
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.every = 0.2 if self.tty else log_every_s
        self.start = self.last = time.perf_counter()

    def update(self, done: int, images: int, loss: float, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = images / elapsed
        eta = (self.total - done) * elapsed / max(done - self.first, 1)  # this session's pace
        filled = int(24 * done / max(self.total, 1))
        line = (f"{self.label} [{'#' * filled}{'.' * (24 - filled)}] {done}/{self.total} "
                f"loss {loss:.4f} {rate:,.0f} img/s eta {_duration(eta)}")
        self.stream.write(f"\r{line}\033[K" if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def grad_norm(parameters) -> torch.Tensor:
    """L2 norm of all gradients together (what clip_grad_norm_ measures), a 0-dim tensor."""
    norms = [torch.linalg.vector_norm(p.grad) for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


class Trainer:
    """The seed's Trainer, on device-resident data (see ``cnn.loader.DeviceData``).

    One ``fit`` call runs epochs until ``epochs`` are done or early stopping fires; the state
    (``state_dict``) can be saved at any step and restored to continue exactly where it stopped.
    """

    def __init__(self, model, train_data, val_data, *, lr=1e-3, weight_decay=1e-5,
                 batch_size=64, patience=7, augment=False, seed=0, eval_batch_size=1000,
                 progress=True, log=print):
        self.model, self.train_data, self.val_data = model, train_data, val_data
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.augment, self.progress, self.log = augment, progress, log
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay,
                                    amsgrad=True, eps=1e-8, betas=(0.9, 0.999))
        self.scheduler = optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, "min", patience=3, factor=0.5, min_lr=1e-6)
        self.early_stopping = EarlyStopping(patience)
        self.order_generator = torch.Generator().manual_seed(seed)
        self.augment_generator = torch.Generator().manual_seed(seed + 1)
        self.history = {"train_loss": [], "grad_norm": [], "val_loss": [], "val_accuracy": [],
                        "lr": [], "epoch_end_step": [], "epoch_images": [],
                        "epoch_train_time_s": []}
        self.epoch = 0            # epochs completed
        self.order = None         # this epoch's batch order (N,), None between epochs
        self.step = 0             # steps done in this epoch
        self.epoch_time = 0.0     # training seconds spent in this epoch so far
        self.on_step = None       # called after every step (checkpointing, estimates)
        self.on_epoch = None      # called after every epoch with the epoch's summary dict

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_data) / self.batch_size)

    def train_step(self, x: torch.Tensor, y: torch.Tensor):
        """One optimizer step on x (B, 1, 28, 28), y (B,): returns (loss, grad norm) floats."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.criterion(self.model(x), y)
        loss.backward()
        norm = grad_norm(self.model.parameters())
        self.optimizer.step()
        return loss.item(), norm.item()

    def train_epoch(self) -> None:
        """Run the remaining steps of the current epoch (all of them unless resumed)."""
        if self.order is None:
            self.order, self.step, self.epoch_time = \
                self.train_data.order(self.order_generator), 0, 0.0
        bar = Progress(self.steps_per_epoch, f"epoch {self.epoch + 1}", done=self.step) \
            if self.progress else None
        images = 0
        start = time.perf_counter() - self.epoch_time
        while self.step < self.steps_per_epoch:
            idx = self.order[self.step * self.batch_size:(self.step + 1) * self.batch_size]
            x, y = self.train_data.batch(idx, self.augment_generator if self.augment else None)
            loss, norm = self.train_step(x, y)
            self.history["train_loss"].append(loss)
            self.history["grad_norm"].append(norm)
            self.step += 1
            images += len(idx)
            self.epoch_time = time.perf_counter() - start
            if bar:
                bar.update(self.step, images, loss, force=self.step == self.steps_per_epoch)
            if self.on_step:
                self.on_step(self)
        if bar:
            bar.close()

    @torch.no_grad()
    def evaluate(self, data, keep_predictions: bool = False):
        """Mean loss per sample and accuracy on a DeviceData (batches of eval_batch_size);
        with keep_predictions, also the predicted classes (N,) int64 on the CPU."""
        self.model.eval()
        total_loss, correct, predictions = 0.0, 0, []
        for x, y in data.batches(self.eval_batch_size):
            logits = self.model(x)
            total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            pred = logits.argmax(1)
            correct += (pred == y).sum().item()
            if keep_predictions:
                predictions.append(pred.cpu())
        n = max(len(data), 1)
        result = (total_loss / n, correct / n)
        return result + (torch.cat(predictions),) if keep_predictions else result

    def fit(self, epochs: int, restore_best: bool = True) -> None:
        """Train until ``epochs`` epochs are done or early stopping fires; then (by default)
        restore the weights of the best validation loss."""
        while self.epoch < epochs and not self.early_stopping.early_stop:
            self.train_epoch()
            val_loss, val_acc = self.evaluate(self.val_data)
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step(val_loss)
            improved = self.early_stopping(val_loss, self.model, self.epoch)
            h = self.history
            h["val_loss"].append(val_loss)
            h["val_accuracy"].append(val_acc)
            h["lr"].append(lr)
            h["epoch_end_step"].append(len(h["train_loss"]))
            h["epoch_images"].append(len(self.train_data))
            h["epoch_train_time_s"].append(self.epoch_time)
            self.epoch, self.order, self.step = self.epoch + 1, None, 0
            summary = {"epoch": self.epoch, "val_loss": val_loss, "val_accuracy": val_acc,
                       "lr": lr, "improved": improved, "time_s": h["epoch_train_time_s"][-1]}
            self.log(f"epoch {self.epoch}: train loss {_mean_tail(h)} val loss {val_loss:.4f} "
                     f"val acc {100 * val_acc:.2f}% lr {lr:.1e} "
                     f"({len(self.train_data) / max(self.epoch_time, 1e-9):,.0f} img/s)"
                     + (" *" if improved else ""))
            if self.on_epoch:
                self.on_epoch(self, summary)
            if self.early_stopping.early_stop:
                self.log(f"early stopping: no better validation loss for "
                         f"{self.early_stopping.patience} epochs")
        if restore_best:
            self.restore_best()

    def restore_best(self) -> None:
        if self.early_stopping.best_state is not None:
            self.model.load_state_dict(self.early_stopping.best_state)

    def images_per_second(self) -> float:
        h = self.history
        return sum(h["epoch_images"]) / max(sum(h["epoch_train_time_s"]), 1e-9)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "early_stopping": self.early_stopping.state_dict(),
                "epoch": self.epoch, "step": self.step, "order": self.order,
                "epoch_time": self.epoch_time, "history": self.history,
                "rng": ckpt.rng_state(self.order_generator, self.augment_generator)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.epoch, self.step, self.order = state["epoch"], state["step"], state["order"]
        self.epoch_time, self.history = state["epoch_time"], state["history"]
        ckpt.set_rng_state(state["rng"], self.order_generator, self.augment_generator)


def _mean_tail(history) -> str:
    start = history["epoch_end_step"][-2] if len(history["epoch_end_step"]) > 1 else 0
    losses = history["train_loss"][start:]
    return f"{sum(losses) / max(len(losses), 1):.4f}"


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, classes: int = 10):
    """(classes, classes) int64 counts: rows true class, columns predicted class."""
    flat = labels.cpu() * classes + predictions.cpu()
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes)


# ---------------------------------------------------------------------------------------------
# Command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cnn.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--patience", type=int, default=7, help="early-stopping patience (epochs)")
    p.add_argument("--backend", choices=BACKENDS, default="triton",
                   help="triton: our kernels; torch: the same model on torch's own layers")
    p.add_argument("--dropout", type=float, nargs="?", const=0.5, default=0.0,
                   help="dropout before the last layer (--dropout alone: 0.5)")
    p.add_argument("--batchnorm", action="store_true", help="batch norm after each conv")
    p.add_argument("--augment", action="store_true",
                   help="random rotation (and --hflip) of training batches, on the device")
    p.add_argument("--rotation", type=float, default=10.0, help="max rotation in degrees")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips (--augment)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--data-dir", default=None,
                   help="MNIST folder (default: $CNN_DATA_DIR or ~/.cache/cnn/mnist)")
    p.add_argument("--limit-train", type=int, default=None, metavar="N",
                   help="train on N images and validate on N/4 (the test set stays whole)")
    p.add_argument("--synthetic", type=int, nargs="?", const=6000, default=None, metavar="N",
                   help="use N generated digit images (and N/6 test images) instead of MNIST")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batch-size", type=int, default=1000)
    p.add_argument("--out", default="runs/mnist", help="folder for metrics, checkpoints, plots")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--save-every", type=float, default=10.0, metavar="MIN",
                   help="also checkpoint inside an epoch every MIN minutes")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _interpreter_estimate(trainer: Trainer, test_size: int):
    """Under the interpreter, print how long an epoch will take, timed on this session's 2nd
    and 3rd steps (the 1st is warm-up)."""
    state = {"steps": 0, "t0": None}

    def on_step(t: Trainer) -> None:
        state["steps"] += 1
        if state["steps"] == 1:
            state["t0"] = time.perf_counter()
        elif state["steps"] == 3:
            per_step = (time.perf_counter() - state["t0"]) / 2
            per_image = per_step / t.batch_size
            train_s = per_step * t.steps_per_epoch
            eval_s = per_image / 3 * len(t.val_data)  # a forward pass is ~1/3 of a step
            _say(f"interpreter estimate: {per_step:.1f} s/step -> about {_duration(train_s)} "
                 f"of training + {_duration(eval_s)} of validation per epoch; the final test "
                 f"on {test_size} images about {_duration(per_image / 3 * test_size)}")
    return on_step


class _Stopped(Exception):
    """Raised between two steps after a stop request, once last.pt is saved."""


class _StopRequest:
    """While active, the first Ctrl-C (or SIGTERM) asks training to stop after the current step
    (so the checkpoint is consistent); a second Ctrl-C aborts at once."""

    requested = False

    def __enter__(self):
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        _say("\nstopping after this step (Ctrl-C again to abort)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    interpret = kernels.runtime.INTERPRET
    if args.backend == "triton" and not interpret and device.type != "cuda":
        _say("error: the triton backend's compiled kernels need --device cuda")
        return 2

    resume_state = None
    if args.resume:
        last = out / ckpt.LAST
        if not last.is_file():
            _say(f"error: --resume: no {last} to continue from")
            return 2
        resume_state = ckpt.load_checkpoint(last)
        saved = resume_state["args"]
        changed = [k for k in RESUME_FIXED if saved.get(k) != getattr(args, k)]
        if changed:
            _say("error: --resume needs the interrupted run's "
                 + ", ".join(f"--{k.replace('_', '-')} {saved.get(k)}" for k in changed))
            return 2

    torch.manual_seed(args.seed)
    if args.synthetic:
        data = synthetic_mnist(args.synthetic, max(1, args.synthetic // 6))
    else:
        try:
            data = load_mnist(args.data_dir)
        except MNISTUnavailableError as e:
            _say(f"error: {e}")
            return 1
    train_data, val_data, test_data = make_splits(
        data, device, limit_train=args.limit_train, rotation=args.rotation, hflip=args.hflip)

    model = MyCNN(dropout=args.dropout, batchnorm=args.batchnorm, backend=args.backend,
                  seed=args.seed).to(device)
    config = {"dropout": args.dropout, "batchnorm": args.batchnorm}
    trainer = Trainer(model, train_data, val_data, lr=args.lr, weight_decay=args.weight_decay,
                      batch_size=args.batch_size, patience=args.patience, augment=args.augment,
                      seed=args.seed, eval_batch_size=args.eval_batch_size,
                      progress=not args.no_progress, log=_say)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
        _say(f"resuming {out / ckpt.LAST}: {trainer.epoch} epochs done, step {trainer.step}")

    _say(f"data: {data.source}; train {len(train_data)}, validation {len(val_data)}, "
         f"test {len(test_data)}")
    _say(f"model: MyCNN(dropout={args.dropout}, batchnorm={args.batchnorm}) on the "
         f"{args.backend} backend, device {device}")
    if args.backend == "triton" and interpret:
        _say("no CUDA: the Triton kernels run through Triton's interpreter on the CPU "
             "(exact results, far from GPU speed); an estimate follows the first steps")

    def save_last(t: Trainer) -> None:
        ckpt.save_checkpoint(out / ckpt.LAST, {**t.state_dict(), "args": vars(args)})

    def on_epoch(t: Trainer, summary: dict) -> None:
        if summary["improved"]:
            ckpt.save_checkpoint(out / ckpt.BEST, {
                "model": t.early_stopping.best_state, "config": config,
                "epoch": summary["epoch"], "val_loss": summary["val_loss"],
                "val_accuracy": summary["val_accuracy"]})
        save_last(t)

    estimate = _interpreter_estimate(trainer, len(test_data)) if interpret and \
        args.backend == "triton" else None
    last_save = [time.perf_counter()]
    stop = _StopRequest()

    def on_step(t: Trainer) -> None:
        if estimate:
            estimate(t)
        if stop.requested:  # between steps the state is consistent: save it and leave
            save_last(t)
            raise _Stopped
        if time.perf_counter() - last_save[0] > 60 * args.save_every:
            save_last(t)
            last_save[0] = time.perf_counter()

    trainer.on_step, trainer.on_epoch = on_step, on_epoch
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    try:
        with stop:
            trainer.fit(args.epochs)
    except (_Stopped, KeyboardInterrupt) as e:
        if isinstance(e, KeyboardInterrupt):
            _say(f"\naborted: {out / ckpt.LAST} holds the last checkpoint")
        else:
            _say(f"\nstopped: saved {out / ckpt.LAST} at epoch {trainer.epoch + 1} step "
                 f"{trainer.step}; continue with the same arguments and --resume")
        return 130
    train_wall = time.perf_counter() - wall

    _say(f"testing on {len(test_data)} images")
    test_loss, test_acc, predictions = trainer.evaluate(test_data, keep_predictions=True)
    confusion = confusion_matrix(test_data.labels, predictions)
    metrics = {
        "test_accuracy": test_acc, "test_loss": test_loss,
        "epochs_run": trainer.epoch, "best_epoch": trainer.early_stopping.best_epoch + 1,
        "early_stopped": trainer.early_stopping.early_stop,
        "train_images_per_second": trainer.images_per_second(),
        "backend": args.backend, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        platform.processor() or platform.machine(),
        "triton_interpreter": bool(interpret and args.backend == "triton"),
        "data": data.source, "train_size": len(train_data), "val_size": len(val_data),
        "test_size": len(test_data), "train_wall_s": train_wall,
        "wall_s": time.perf_counter() - wall,
        "confusion_matrix": confusion.tolist(), "history": trainer.history,
        "args": vars(args),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "triton": _triton_version()},
    }
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=1).encode())
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


def _triton_version() -> str:
    import triton
    return triton.__version__


if __name__ == "__main__":
    sys.exit(main())
