"""Checkpoints: written atomically, read back with ``torch.load(..., weights_only=True)``.

Two files in the run folder:

- ``best.pt``: the best model so far: {"model": state_dict, "config": {...}, "epoch": int,
  "val_loss": float, "val_accuracy": float}. Load it into ``MyCNN(**config)`` of either backend.
- ``last.pt``: everything ``--resume`` needs: model, optimizer, scheduler, early stopping (with
  the best weights), epochs done, the position inside the current epoch (its batch order and
  step), the RNG states, the history, the run's arguments and, with ``--amp fp16``, the
  gradient scaler. A truncated or foreign file is refused with ``CheckpointError``.

Only tensors, numbers, strings, lists and dicts go in, so the restricted ``weights_only`` loader
reads them and a checkpoint cannot run code when loaded.
"""
import pickle
import zipfile
from pathlib import Path

import torch

from .fileio import atomic_write

BEST = "best.pt"
LAST = "last.pt"
# What last.pt must hold for --resume.
RESUME_KEYS = ("model", "optimizer", "scheduler", "early_stopping", "epoch", "step", "order",
               "epoch_time", "history", "rng", "args")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupt) or lacks what is needed."""


def save_checkpoint(path, state: dict) -> Path:
    """torch.save(state) to path atomically: a crash leaves the previous checkpoint intact."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """torch.load with weights_only=True (tensors and plain containers only). Raises
    CheckpointError, naming the file, when it cannot be read."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                              f"{first_line}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def load_resume_checkpoint(path, map_location="cpu") -> dict:
    """A last.pt for --resume: load_checkpoint, and every RESUME_KEYS entry present."""
    state = load_checkpoint(path, map_location)
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing or not isinstance(state.get("args"), dict):
        raise CheckpointError(f"{path} is not a last.pt of this trainer (it lacks "
                              f"{', '.join(missing) or 'args'})")
    return state


def rng_state(*generators: torch.Generator) -> dict:
    """The global CPU (and CUDA) RNG states and those of ``generators``, as tensors."""
    state = {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in generators]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, *generators: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    for g, s in zip(generators, state["generators"], strict=True):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_dict_to_cpu(state_dict: dict) -> dict:
    """A detached CPU copy (best weights must not alias the live parameters)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}
