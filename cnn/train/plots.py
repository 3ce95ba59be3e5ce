"""PNG plots of a training run, with matplotlib (the optional extra 'plots').

Without matplotlib ``save_plots`` says so once and returns no paths: plots are never required.
"""
import sys
from pathlib import Path

from .fileio import atomic_write

PLOT_FILES = ("loss.png", "grad_norm.png", "predictions.png", "confusion.png")
_warned = False


def _pyplot():
    global _warned
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        if not _warned:
            print("cnn.plots: matplotlib is not installed (pip install 'triton-cnn[plots]'); "
                  "skipping plots", file=sys.stderr)
            _warned = True
        return None
    return plt


def save_plots(out_dir, history: dict, confusion, images, labels, predictions) -> list:
    """Write PLOT_FILES (loss.png, grad_norm.png, predictions.png, confusion.png) into out_dir.

    history: lists 'train_loss' and 'grad_norm' (one per step), 'val_loss', 'val_accuracy',
    'epoch_end_step' (one per epoch); confusion: (10, 10) counts, rows true, columns predicted;
    images (K, 28, 28) uint8, labels (K,), predictions (K,): the test digits to show.
    Returns the paths written ([] without matplotlib).
    """
    plt = _pyplot()
    if plt is None:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def plain_log_ticks(ax):  # 2.3 rather than 2.3x10^0
        from matplotlib.ticker import FormatStrFormatter
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))

    def save(fig, name):
        fig.tight_layout()
        atomic_write(out / name, lambda f: fig.savefig(f, format="png", dpi=100))
        plt.close(fig)
        paths.append(out / name)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(range(1, len(history["train_loss"]) + 1), history["train_loss"], lw=0.6, alpha=0.6,
            label="training loss (per step)")
    if history["val_loss"]:
        ax.plot(history["epoch_end_step"], history["val_loss"], "o-", label="validation loss")
    ax.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="Loss")
    plain_log_ticks(ax)
    ax.legend()
    save(fig, "loss.png")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(range(1, len(history["grad_norm"]) + 1), history["grad_norm"], lw=0.6)
    ax.set(xlabel="step", ylabel="L2 norm of all gradients", yscale="log",
           title="Gradient norm")
    plain_log_ticks(ax)
    save(fig, "grad_norm.png")

    k = min(len(images), 36)
    cols = 6
    rows = max(1, -(-k // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.4, rows * 1.6))
    for i, ax in enumerate(getattr(axes, "flat", [axes])):
        ax.axis("off")
        if i < k:
            right = int(predictions[i]) == int(labels[i])
            ax.imshow(images[i], cmap="gray")
            ax.set_title(f"{int(predictions[i])} ({int(labels[i])})", fontsize=9,
                         color="black" if right else "red")
    fig.suptitle("Test digits: prediction (label)")
    save(fig, "predictions.png")

    fig, ax = plt.subplots(figsize=(6, 5.5))
    im = ax.imshow(confusion, cmap="Blues")
    for t in range(len(confusion)):
        for p in range(len(confusion)):
            value = int(confusion[t][p])
            ax.text(p, t, value, ha="center", va="center", fontsize=7,
                    color="white" if value > 0.5 * max(map(max, confusion)) else "black")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10),
           title="Confusion matrix (test)")
    fig.colorbar(im, ax=ax)
    save(fig, "confusion.png")
    return paths


def save_learning_curves(path, runs: dict, title: str = "Learning curves") -> list:
    """One PNG comparing training runs: per-step training loss (left) and the accuracy of each
    epoch (right). runs: {label: {"train_loss": [per step], "epoch_end_step": [per epoch],
    "accuracy": [per epoch, in [0, 1]]}}. Returns [path] ([] without matplotlib)."""
    plt = _pyplot()
    if plt is None:
        return []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, run in runs.items():
        steps = range(1, len(run["train_loss"]) + 1)
        line, = loss_ax.plot(steps, run["train_loss"], lw=0.8, alpha=0.8, label=label)
        epochs = range(1, len(run["accuracy"]) + 1)
        acc_ax.plot(epochs, [100 * a for a in run["accuracy"]], "o-", ms=3,
                    color=line.get_color(), label=label)
    loss_ax.set(xlabel="step", ylabel="training cross-entropy", yscale="log",
                title="Training loss")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    from matplotlib.ticker import MaxNLocator
    acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return [path]
