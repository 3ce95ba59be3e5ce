"""The seed's Trainer: Adam + ReduceLROnPlateau + early stopping on device-resident data.

The recipe: CrossEntropyLoss; Adam(lr 1e-3, weight_decay 1e-5, amsgrad); ReduceLROnPlateau
(factor 0.5, patience 3, min_lr 1e-6) on the validation loss; early stopping (patience 7) that
restores the best weights. Or ``schedule="onecycle"``: torch's OneCycleLR over ``epochs``
epochs, stepped after every optimizer step, peaking at ``lr`` (see ``cnn.train.recipes`` for
the fast MNIST recipe). ``label_smoothing`` goes to the training loss (validation and test
report plain cross-entropy); ``param_groups`` (e.g.
``cnn.train.transfer.finetune_param_groups``) replace the model's trainable parameters as the
optimizer's groups. Options: channels_last model and input, mixed precision (autocast of
forward and loss to bf16, or fp16 with a gradient scaler), progress bars for every phase.

The state (``state_dict``) can be taken between any two steps and restored to continue exactly
where it stopped; after a ``KeyboardInterrupt`` inside a step, ``rollback_partial_step`` first
undoes what the unfinished step changed (see ``cnn.train.interrupt`` for when that can happen).
"""
import contextlib
import math
import sys
import time

import torch
from torch import nn, optim

from . import checkpoint as ckpt
from . import distributed

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
SCHEDULES = ("plateau", "onecycle")


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


def duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def triton_version() -> str:
    """The installed Triton's version, for the "versions" that metrics.json records."""
    import triton
    return triton.__version__


class Progress:
    """A plain-text progress bar on stderr: a redrawn line on a terminal, else (a log file) one
    line every ``log_every_s`` seconds. ``total`` units (steps or batches); the time left is
    this session's pace times the units left."""

    def __init__(self, total: int, label: str, stream=None, log_every_s: float = 30.0,
                 done: int = 0):
        self.total, self.label, self.first = total, label, done
        self.stream = sys.stderr if stream is None else stream
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = 0.2 if self.tty else log_every_s
        self.start = self.last = time.perf_counter()

    def update(self, done: int, images: int, loss: float, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = images / elapsed
        eta = (self.total - done) * elapsed / max(done - self.first, 1)
        filled = int(24 * done / max(self.total, 1))
        line = (f"{self.label} [{'#' * filled}{'.' * (24 - filled)}] {done}/{self.total} "
                f"loss {loss:.4f} {rate:,.0f} img/s eta {duration(eta)}")
        self.stream.write(f"\r{line}\033[K" if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def grad_norm(parameters) -> torch.Tensor:
    """L2 norm of all gradients together (what clip_grad_norm_ measures), a 0-dim tensor."""
    norms = [torch.linalg.vector_norm(p.grad.float()) for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, classes: int = 10):
    """(classes, classes) int64 counts: rows true class, columns predicted class."""
    flat = labels.cpu() * classes + predictions.cpu()
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes)


class Stopped(Exception):
    """Raised between two steps when a graceful stop was requested (``interrupts.requested``)."""


class Trainer:
    """The seed's Trainer, on device-resident data (see ``cnn.train.loader.DeviceData``).

    One ``fit`` call runs epochs until ``epochs`` are done or early stopping fires.

    channels_last: convert each input batch (B, 1, 28, 28) to channels_last (the model is
    expected to be converted by the caller: ``model.to(memory_format=torch.channels_last)``).
    amp: None, "bf16" or "fp16": autocast forward and loss on the data's device type; fp16 adds
    a ``torch.amp.GradScaler`` (its state is part of ``state_dict``).
    interrupts: a ``cnn.train.interrupt.Interrupts`` (or None): training steps run in its graceful
    phase, optimizer steps and epoch bookkeeping in its critical sections, and a requested stop
    raises ``Stopped`` after the step.
    parallel: the DistributedDataParallel wrapping model (under torchrun), or None. Training
    steps run through it on this rank's shard of every epoch; evaluation splits the data
    across the ranks and reduces the sums; state_dict and evaluation use model itself.
    """

    def __init__(self, model, train_data, val_data, *, lr=1e-3, weight_decay=1e-5,
                 batch_size=64, patience=7, augment=False, seed=0, eval_batch_size=1000,
                 channels_last=False, amp=None, progress=True, log=print, interrupts=None,
                 parallel=None, schedule="plateau", epochs=None, label_smoothing=0.0,
                 param_groups=None):
        self.model, self.train_data, self.val_data = model, train_data, val_data
        self.parallel, self.seed = parallel, seed
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.augment, self.progress, self.log = augment, progress, log
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.amp_dtype = AMP_DTYPES[amp] if amp else None
        self.device_type = train_data.device.type
        self.scaler = torch.amp.GradScaler(self.device_type) if amp == "fp16" else None
        self.interrupts = interrupts
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        if param_groups is None:  # a frozen parameter (requires_grad False) is not optimised
            param_groups = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = optim.Adam(param_groups, lr=lr, weight_decay=weight_decay,
                                    amsgrad=True, eps=1e-8, betas=(0.9, 0.999))
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.schedule = schedule
        if schedule == "onecycle":
            if not epochs:
                raise ValueError("schedule='onecycle' needs epochs (the cycle's length)")
            # Each group peaks at its own lr (a fine-tuned backbone keeps its lower rate).
            self.scheduler = optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=[g["lr"] for g in self.optimizer.param_groups],
                total_steps=epochs * self.steps_per_epoch)
        else:
            self.scheduler = optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, "min", patience=3, factor=0.5, min_lr=1e-6)
        self.early_stopping = EarlyStopping(patience)
        self.order_generator = torch.Generator().manual_seed(seed)
        # Each rank augments its own images: its own stream (rank 0's is the one-process one).
        self.augment_generator = torch.Generator().manual_seed(seed + 1 + 7919 * self.rank)
        self.history = {"train_loss": [], "grad_norm": [], "val_loss": [], "val_accuracy": [],
                        "lr": [], "epoch_end_step": [], "epoch_images": [],
                        "epoch_train_time_s": []}
        self.epoch = 0            # epochs completed
        self.order = None         # this epoch's batch order (N,), None between epochs
        self.step = 0             # steps done in this epoch
        self.epoch_time = 0.0     # training seconds spent in this epoch so far
        self.last_step_s = None   # seconds of the last step, and of its forward + loss
        self.last_forward_s = None
        self.last_batch_images = 0
        self.last_eval_s_per_image = None  # the pace of the last evaluate()
        self.on_step = None       # called after every step (checkpointing, estimates)
        self.on_epoch = None      # called after every epoch with the epoch's summary dict
        self._snapshot = None     # what an unfinished step may change, as it was before it
        self._step_start = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.shard_size / self.batch_size)

    @property
    def shard_size(self) -> int:
        """Training samples this process sees per epoch (all of them with one process)."""
        return math.ceil(len(self.train_data) / self.world_size)

    def epoch_order(self) -> torch.Tensor:
        """This epoch's sample order (int64, CPU): a permutation from the order generator
        with one process; under DDP this rank's DistributedSampler shard, seeded by (seed,
        epoch), so a resumed run recomputes it."""
        if self.parallel is None:
            return self.train_data.order(self.order_generator)
        return distributed.shard_order(len(self.train_data), self.epoch, self.seed, self.rank,
                                       self.world_size)

    def stop_requested(self) -> bool:
        """A graceful stop was asked for: under DDP, on any rank (all stop after the same
        step, so their checkpoints agree)."""
        requested = bool(self.interrupts and self.interrupts.requested)
        return distributed.any_rank(requested) if self.parallel is not None else requested

    def _critical(self):
        return self.interrupts.critical() if self.interrupts else contextlib.nullcontext()

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.amp_dtype)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """The batch (B, C, H, W) in the model's memory format: the one conversion at its edge."""
        if self.memory_format != torch.channels_last:
            return x.contiguous()
        x = x.contiguous(memory_format=torch.channels_last)
        n, c, h, w = x.shape
        # With C == 1 the NCHW strides pass as channels_last too, and layers that read the
        # layout from the strides (torch's suggest_memory_format) take them for NCHW: restride
        # to the unambiguous (H*W*C, 1, W*C, C), the same bytes.
        return x.as_strided(x.shape, (h * w * c, 1, w * c, c)) if c == 1 else x

    def train_step(self, x: torch.Tensor, y: torch.Tensor):
        """One recorded optimizer step on x (B, 1, 28, 28), y (B,): appends the loss and the
        gradient norm to the history, counts the step, returns (loss, grad norm) floats.

        From the optimizer step to the step count is one critical section: an interrupt lands
        before it (the step is undone by ``rollback_partial_step``) or after it, never inside."""
        start = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        forward = self.parallel if self.parallel is not None else self.model
        with self._autocast():
            loss = self.criterion(forward(self._input(x)), y)
        loss_value = loss.item()
        self.last_forward_s, self.last_batch_images = time.perf_counter() - start, len(y)
        # Under DDP the gradients are averaged over the ranks, the same on each.
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.parallel is not None:  # the global batch's mean loss, the same on every rank
            total, count = distributed.all_reduce_sum([loss_value * len(y), len(y)])
            loss_value = total / count
        with self._critical():
            if self.scaler:
                self.scaler.unscale_(self.optimizer)  # the norm of the true gradients
            norm = grad_norm(self.model.parameters()).item()
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.schedule == "onecycle":
                self.scheduler.step()
            self.history["train_loss"].append(loss_value)
            self.history["grad_norm"].append(norm)
            self.step += 1
            self._snapshot = None
        self.last_step_s = time.perf_counter() - start
        return loss_value, norm

    def _pace(self):
        """How long the current step takes, for the stop message (None when it is quick)."""
        if self.last_step_s is not None:
            return f"a step takes about {self.last_step_s:.0f} s here" \
                if self.last_step_s >= 1 else None
        if self._step_start is not None:
            return f"this first step has run {time.perf_counter() - self._step_start:.0f} s"
        return None

    def _take_snapshot(self) -> None:
        """Before a step: the RNG states and buffers (batch-norm statistics) it will change."""
        self._step_start = time.perf_counter()
        self._snapshot = (ckpt.rng_state(self.order_generator, self.augment_generator),
                          [b.detach().clone() for b in self.model.buffers()])

    def rollback_partial_step(self) -> bool:
        """After a KeyboardInterrupt inside a step (before its optimizer step): put back the RNG
        states and buffers that step changed, so ``state_dict`` is the state after the last
        finished step. Returns whether there was a step to undo."""
        if self._snapshot is None:
            return False
        rng, buffers = self._snapshot
        ckpt.set_rng_state(rng, self.order_generator, self.augment_generator)
        with torch.no_grad():
            for buffer, saved in zip(self.model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
        self._snapshot = None
        return True

    def train_epoch(self) -> None:
        """Run the remaining steps of the current epoch (all of them unless resumed)."""
        if self.order is None:
            self.order, self.step, self.epoch_time = self.epoch_order(), 0, 0.0
        bar = Progress(self.steps_per_epoch, f"epoch {self.epoch + 1}", done=self.step) \
            if self.progress else None
        images = 0
        start = time.perf_counter() - self.epoch_time
        phase = self.interrupts.graceful_phase(self._pace) if self.interrupts \
            else contextlib.nullcontext()
        with phase:
            while self.step < self.steps_per_epoch:
                self._take_snapshot()
                idx = self.order[self.step * self.batch_size:(self.step + 1) * self.batch_size]
                x, y = self.train_data.batch(idx,
                                             self.augment_generator if self.augment else None)
                loss, _ = self.train_step(x, y)
                images += len(idx) * self.world_size
                self.epoch_time = time.perf_counter() - start
                if bar:
                    bar.update(self.step, images, loss, force=self.step == self.steps_per_epoch)
                if self.on_step:
                    self.on_step(self)
                if self.stop_requested():
                    raise Stopped
        if bar:
            bar.close()

    @torch.no_grad()
    def evaluate(self, data, keep_predictions: bool = False, label: str = None):
        """Mean loss per sample and accuracy on a DeviceData (batches of eval_batch_size);
        with keep_predictions, also the predicted classes (N,) int64 on the CPU. label: show a
        progress bar with that name (when progress is on)."""
        self.model.eval()
        full = data
        if self.parallel is not None:
            # Every rank evaluates a disjoint slice with rank 0's buffers; sums are reduced.
            distributed.broadcast_buffers(self.model)
            data = data.subset(distributed.shard_range(len(data), self.rank, self.world_size))
        total_loss, correct, predictions, seen = 0.0, 0, [], 0
        start = time.perf_counter()
        batches = math.ceil(len(data) / self.eval_batch_size)
        bar = Progress(batches, label) if self.progress and label else None
        for i, (x, y) in enumerate(data.batches(self.eval_batch_size)):
            with self._autocast():
                logits = self.model(self._input(x))
                total_loss += nn.functional.cross_entropy(logits.float(), y,
                                                          reduction="sum").item()
            pred = logits.argmax(1)
            correct += (pred == y).sum().item()
            seen += len(y)
            if keep_predictions:
                predictions.append(pred.cpu())
            if bar:
                bar.update(i + 1, seen, total_loss / seen, force=i + 1 == batches)
        if bar:
            bar.close()
        self.last_eval_s_per_image = (time.perf_counter() - start) / max(seen, 1)
        total_loss, correct = distributed.all_reduce_sum([total_loss, correct])
        n = max(len(full), 1)
        result = (total_loss / n, round(correct) / n)
        if not keep_predictions:
            return result
        local = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.int64)
        return result + (torch.cat(distributed.all_gather_object(local)),)

    def fit(self, epochs: int, restore_best: bool = True) -> None:
        """Train until ``epochs`` epochs are done or early stopping fires; then (by default)
        restore the weights of the best validation loss."""
        while self.epoch < epochs and not self.early_stopping.early_stop:
            self.train_epoch()
            val_loss, val_acc = self.evaluate(self.val_data, label=f"validation {self.epoch + 1}")
            with self._critical():
                self._end_epoch(val_loss, val_acc)
        if restore_best:
            self.restore_best()

    def _end_epoch(self, val_loss: float, val_acc: float) -> None:
        lr = self.optimizer.param_groups[-1]["lr"]  # the head's with fine-tuning groups
        if self.schedule == "plateau":
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

    def restore_best(self) -> None:
        if self.early_stopping.best_state is not None:
            self.model.load_state_dict(self.early_stopping.best_state)

    def images_per_second(self) -> float:
        h = self.history
        return sum(h["epoch_images"]) / max(sum(h["epoch_train_time_s"]), 1e-9)

    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(),
                 "early_stopping": self.early_stopping.state_dict(),
                 "epoch": self.epoch, "step": self.step, "order": self.order,
                 "epoch_time": self.epoch_time, "history": self.history,
                 "rng": ckpt.rng_state(self.order_generator, self.augment_generator)}
        if self.parallel is not None:
            # Every rank's RNG state (a collective: call state_dict on every rank).
            state["rank_rng"] = distributed.all_gather_object(state["rng"])
        if self.scaler:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.epoch, self.step, self.order = state["epoch"], state["step"], state["order"]
        self.epoch_time, self.history = state["epoch_time"], state["history"]
        rng = state["rng"]
        if self.parallel is not None:
            rng = state["rank_rng"][self.rank]
            if self.order is not None:
                self.order = self.epoch_order()  # this rank's shard (the file has rank 0's)
        ckpt.set_rng_state(rng, self.order_generator, self.augment_generator)
        if self.scaler and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])


def _mean_tail(history) -> str:
    start = history["epoch_end_step"][-2] if len(history["epoch_end_step"]) > 1 else 0
    losses = history["train_loss"][start:]
    return f"{sum(losses) / max(len(losses), 1):.4f}"
