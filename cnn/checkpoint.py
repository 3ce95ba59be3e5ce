"""Checkpoints: written atomically, read back with ``torch.load(..., weights_only=True)``.

Two files in the run folder:

- ``best.pt``: the best model so far: {"model": state_dict, "config": {...}, "epoch": int,
  "val_loss": float, "val_accuracy": float}. Load it into ``MyCNN(**config)`` of either backend.
- ``last.pt``: everything ``--resume`` needs: model, optimizer, scheduler, early stopping (with
  the best weights), epochs done, the position inside the current epoch (its batch order and
  step), the RNG states, the history and the run's arguments.

Only tensors, numbers, strings, lists and dicts go in, so the restricted ``weights_only`` loader
reads them and a checkpoint cannot run code when loaded.
"""
from pathlib import Path

import torch

from .fileio import atomic_write

BEST = "best.pt"
LAST = "last.pt"


def save_checkpoint(path, state: dict) -> Path:
    """torch.save(state) to path atomically: a crash leaves the previous checkpoint intact."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """torch.load with weights_only=True (tensors and plain containers only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


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
