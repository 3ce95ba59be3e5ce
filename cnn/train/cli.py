"""The command line of ``python -m cnn.train``: every option, and every rule about options, in one
place, all checked before any work starts.

An invalid value or combination exits with status 2 and one line, argparse style::

    python -m cnn.train: error: argument --limit-train: must be a positive integer, got 0

How to add an option:

1. add it to one of the ``*_options`` group functions below (or a new group function listed in
   ``OPTION_GROUPS``) with ``add(group, "--flag", type=<a checker below>, default=..., help=...)``;
   every option needs a ``help`` (so ``--help`` shows its default); pass ``fixed_on_resume=True``
   when ``--resume`` must refuse a different value (it changes the model, data or batches);
2. a rule that involves more than one option, the machine or the file system goes in a function
   decorated with ``@check``: it receives the parsed arguments, may fill in resolved values
   (such as ``args.device``), and raises ``UsageError("...")`` to refuse them.
"""
import argparse
import math
import os
import sys
from pathlib import Path

import torch

from .factory import ARCHS, BACKENDS
from .loader import VAL_FRACTION
from .recipes import RECIPES, describe
from .trainer import AMP_DTYPES, SCHEDULES

PROG = "python -m cnn.train"
MNIST_TRAIN_IMAGES = 60000      # before the 80/20 train/validation split
METRICS = "metrics.json"


class UsageError(Exception):
    """An option value or combination that is refused; the message is the error line."""


# ---------------------------------------------------------------------------------------------
# Value checkers (argparse ``type=``): argparse prints "argument --x: <message>".

def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63), got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def probability(text: str) -> float:
    """A dropout probability: [0, 1) (1 would drop everything)."""
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def degrees(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value <= 180:
        raise argparse.ArgumentTypeError(f"must be in [0, 180] degrees, got {text}")
    return value


def synthetic_size(text: str) -> int:
    """At least 2 images, so the 80/20 split leaves one for training and one for validation."""
    value = _number(text, int)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2 (images), got {text}")
    return value


# ---------------------------------------------------------------------------------------------
# The parser

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: X)" unless the help says it already or there is nothing to show (an off
    switch, an unset value)."""

    def _get_help_string(self, action):
        if "(default:" in action.help or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, with errors on one line (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def add(group, *flags, fixed_on_resume: bool = False, **kwargs):
    """group.add_argument(*flags, **kwargs), remembering the options --resume must keep."""
    if not kwargs.get("help"):
        raise TypeError(f"{flags[0]} needs a help text (it is where --help shows the default)")
    action = group.add_argument(*flags, **kwargs)
    action.fixed_on_resume = fixed_on_resume
    return action


def training_options(p, g) -> None:
    add(g, "--recipe", choices=tuple(RECIPES), default="seed", fixed_on_resume=True,
        help="seed: the seed article's recipe (the defaults shown here); "
             + describe("fast").replace("%", "%%") + ": >= 99%% MNIST test accuracy in 2 "
             "epochs; options given explicitly override the recipe's")
    add(g, "--epochs", type=positive_int, default=10, help="epochs to train (at most)")
    add(g, "--batch-size", type=positive_int, default=64, fixed_on_resume=True,
        help="training batch size")
    add(g, "--eval-batch-size", type=positive_int, default=1000,
        help="batch size of validation and test")
    add(g, "--lr", type=positive_float, default=1e-3, fixed_on_resume=True,
        help="Adam learning rate")
    add(g, "--weight-decay", type=non_negative_float, default=1e-5, fixed_on_resume=True,
        help="Adam weight decay")
    add(g, "--schedule", choices=SCHEDULES, default="plateau", fixed_on_resume=True,
        help="learning rate: plateau (halved after 3 epochs without a better validation "
             "loss) or onecycle (up to --lr and down again over --epochs, every batch)")
    add(g, "--label-smoothing", type=probability, default=0.0, fixed_on_resume=True,
        help="label smoothing of the training loss (validation and test report plain "
             "cross-entropy)")
    add(g, "--patience", type=positive_int, default=7,
        help="early stopping: epochs without a better validation loss")
    add(g, "--seed", type=non_negative_int, default=0, fixed_on_resume=True,
        help="seed of the initial weights, batch order, dropout and augmentation")


def model_options(p, g) -> None:
    add(g, "--arch", choices=ARCHS, default="mycnn", fixed_on_resume=True,
        help="mycnn: the seed's MNIST CNN; resnet18/34/50: torchvision's ResNets on our "
             "layers (taking MNIST's 1-channel 28x28 images: in_channels=1; a 3-channel "
             "--weights file's first conv is summed over its channels)")
    add(g, "--num-classes", type=positive_int, default=10, fixed_on_resume=True,
        help="outputs of the model's head (at least MNIST's 10 classes)")
    add(g, "--resnet-width", type=positive_int, default=64, fixed_on_resume=True,
        help="channels of a ResNet's first stage (torchvision's and its weights': 64; "
             "smaller for quick tests)")
    add(g, "--backend", choices=BACKENDS, default="triton",
        help="triton: our kernels; torch: the same model on torch's own layers")
    add(g, "--dropout", type=probability, nargs="?", const=0.5, default=0.0,
        fixed_on_resume=True, help="dropout before the last layer (--dropout alone: 0.5)")
    add(g, "--batchnorm", action="store_true", fixed_on_resume=True,
        help="batch norm after each conv (fused conv+BN+ReLU)")
    add(g, "--device", default=None,
        help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    add(g, "--channels-last", action=argparse.BooleanOptionalAction, default=None,
        help="model and input in channels_last (NHWC) memory format "
             "(default: on with CUDA, off on the CPU)")
    add(g, "--amp", choices=tuple(AMP_DTYPES), default=None, fixed_on_resume=True,
        help="mixed precision: autocast forward and loss to bf16 or fp16 "
             "(fp16 with a gradient scaler) (default: off, fp32)")
    add(g, "--compile", nargs="?", const="default", default=None,
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile the model as one graph (fullgraph); reduce-overhead replays it "
             "as a CUDA graph on CUDA (--compile alone: default) (default: eager)")


def data_options(p, g) -> None:
    add(g, "--data-dir", default=None,
        help="MNIST folder (default: $CNN_DATA_DIR or ~/.cache/cnn/mnist)")
    add(g, "--limit-train", type=positive_int, default=None, metavar="N", fixed_on_resume=True,
        help="train on N images and validate on N/4 (the test set stays whole) "
             "(default: all)")
    add(g, "--synthetic", type=synthetic_size, nargs="?", const=6000, default=None,
        metavar="N", fixed_on_resume=True,
        help="use N generated digit images (and N/6 test images) instead of MNIST "
             "(--synthetic alone: 6000) (default: off, MNIST)")
    add(g, "--augment", action="store_true", fixed_on_resume=True,
        help="random rotation (and --hflip) of training batches, on the device")
    add(g, "--rotation", type=degrees, default=10.0, fixed_on_resume=True,
        help="max rotation in degrees (--augment)")
    add(g, "--hflip", action="store_true", fixed_on_resume=True,
        help="random horizontal flips (--augment)")


def transfer_options(p, g) -> None:
    add(g, "--weights", default=None, metavar="FILE", fixed_on_resume=True,
        help="start from this state_dict file (torchvision's ResNet file, or a best.pt or "
             "last.pt of cnn.train); a head of another size starts fresh")
    add(g, "--freeze-backbone", action="store_true", fixed_on_resume=True,
        help="with --weights: train a new head only; the backbone gets no gradient and its "
             "batch-norm statistics stay as loaded")
    add(g, "--finetune", action="store_true", fixed_on_resume=True,
        help="with --weights: a new head, and everything trains, the backbone at "
             "--lr x --backbone-lr-scale")
    add(g, "--backbone-lr-scale", type=positive_float, default=None, fixed_on_resume=True,
        help="the backbone's learning rate relative to --lr (--finetune) (default: 0.1)")


def run_options(p, g) -> None:
    add(g, "--out", default="runs/mnist", help="folder for metrics, checkpoints, plots")
    add(g, "--resume", action="store_true", help="continue the run saved in --out")
    add(g, "--overwrite", action="store_true",
        help="replace the run saved in --out (its checkpoints, metrics and plots)")
    add(g, "--save-every", type=positive_float, default=10.0, metavar="MIN",
        help="also checkpoint inside an epoch every MIN minutes")
    add(g, "--no-plots", action="store_true", help="do not write the PNG plots")
    add(g, "--no-progress", action="store_true", help="no progress bars")


def distributed_options(p, g) -> None:
    from .distributed import DEFAULT_TIMEOUT_S
    add(g, "--sync-bn", action="store_true",
        help="batch-norm statistics over all processes (cnn.SyncBatchNorm; with --batchnorm)")
    add(g, "--dist-backend", choices=("gloo", "nccl"), default=None,
        help="collectives' backend (default: nccl on CUDA, gloo on the CPU)")
    add(g, "--dist-timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, metavar="S",
        help="seconds a collective waits for the other processes before the job fails")


# (title, function(parser, group)): the groups --help shows, in order.
OPTION_GROUPS = [
    ("training", training_options),
    ("model and device", model_options),
    ("data", data_options),
    ("transfer learning", transfer_options),
    ("run folder", run_options),
    ("under torchrun (data parallel; --batch-size is per process)", distributed_options),
]


def build_parser(recipe: str = "seed") -> Parser:
    """The parser, with ``recipe``'s defaults (see ``cnn.train.recipes``)."""
    p = Parser(prog=PROG, description="Train the seed's MNIST CNN on the Triton kernels.",
               formatter_class=HelpFormatter)
    for title, options in OPTION_GROUPS:
        options(p, p.add_argument_group(title))
    p.set_defaults(**RECIPES.get(recipe, {}))
    return p


def recipe_in(argv) -> str:
    """The --recipe value in argv (the last one given), or 'seed'; an unknown name is left
    for the parser to refuse."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default="seed")
    known, _ = pre.parse_known_args(argv)
    return known.recipe


# ---------------------------------------------------------------------------------------------
# Rules across options, the machine and the file system (in order; each may resolve values).

CHECKS = []


def check(function):
    """Register ``function(args)`` as a rule: it raises UsageError to refuse the arguments."""
    CHECKS.append(function)
    return function


@check
def device_is_available(args) -> None:
    """--device names a device this machine has; resolved to its string (cuda if available)."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        raise UsageError(f"argument --device: not a device: {args.device!r} "
                         "(use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"argument --device: {args.device} requested but CUDA is not "
                             "available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"argument --device: {args.device} requested but this machine "
                             f"has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UsageError(f"argument --device: {args.device}: only cpu and cuda are supported")
    args.device = str(device)


@check
def backend_runs_on_device(args) -> None:
    from .. import kernels
    if args.backend == "triton" and not kernels.runtime.INTERPRET \
            and torch.device(args.device).type != "cuda":
        raise UsageError("argument --device: the triton backend's compiled kernels need "
                         "--device cuda (without CUDA they run through Triton's interpreter)")


@check
def memory_format_default(args) -> None:
    """channels_last by default on CUDA (the kernels' fast layout), NCHW on the CPU."""
    if args.channels_last is None:
        args.channels_last = torch.device(args.device).type == "cuda"


@check
def amp_is_supported(args) -> None:
    if args.amp == "bf16" and torch.device(args.device).type == "cuda" \
            and not torch.cuda.is_bf16_supported():
        raise UsageError("argument --amp: this GPU does not support bf16 (use --amp fp16)")


@check
def limit_fits_the_data(args) -> None:
    total = args.synthetic or MNIST_TRAIN_IMAGES
    train = int((1 - VAL_FRACTION) * total)
    if args.limit_train is not None and args.limit_train > train:
        where = f"--synthetic {args.synthetic}" if args.synthetic else "MNIST"
        raise UsageError(f"argument --limit-train: {args.limit_train} is more than the {train} "
                         f"training images of {where} (after the 80/20 validation split)")
    if args.hflip and not args.augment:
        raise UsageError("--hflip takes effect with --augment only")


@check
def model_options_fit_the_arch(args) -> None:
    if args.num_classes < 10:
        raise UsageError(f"argument --num-classes: MNIST's labels are 0-9, so the head needs "
                         f"at least 10 outputs, got {args.num_classes}")
    if args.arch == "mycnn":
        if args.resnet_width != 64:
            raise UsageError("--resnet-width sizes a ResNet: pass --arch resnet18/34/50")
        return
    if args.recipe != "seed":
        raise UsageError(f"--recipe {args.recipe} is tuned for --arch mycnn (MyCNN with batch "
                         f"norm); for {args.arch} set --schedule, --lr, --batch-size yourself")
    if args.batchnorm or args.dropout:
        raise UsageError(f"--batchnorm and --dropout are MyCNN's options; {args.arch} has "
                         "batch norm after every conv and no dropout")


@check
def transfer_options_agree(args) -> None:
    """--freeze-backbone or --finetune need --weights; not both; --weights is a file."""
    if args.freeze_backbone and args.finetune:
        raise UsageError("--freeze-backbone trains the head only, --finetune trains "
                         "everything: choose one")
    for flag, on in (("--freeze-backbone", args.freeze_backbone),
                     ("--finetune", args.finetune)):
        if on and not args.weights:
            raise UsageError(f"{flag} needs pretrained weights to start from: pass "
                             "--weights FILE")
    if args.backbone_lr_scale is not None and not args.finetune:
        raise UsageError("--backbone-lr-scale sets the backbone's rate of --finetune: "
                         "pass --finetune")
    if args.backbone_lr_scale is None:
        args.backbone_lr_scale = 0.1
    if args.weights and not Path(args.weights).expanduser().is_file():
        raise UsageError(f"argument --weights: {args.weights} is not a file")
    if args.sync_bn and args.freeze_backbone:
        raise UsageError("--sync-bn with --freeze-backbone: the frozen backbone's batch-norm "
                         "statistics do not change, there is nothing to sync")


@check
def data_dir_is_a_folder(args) -> None:
    if args.data_dir and Path(args.data_dir).expanduser().exists() \
            and not Path(args.data_dir).expanduser().is_dir():
        raise UsageError(f"argument --data-dir: {args.data_dir} is a file, not a folder")


@check
def sync_bn_has_a_batch_norm(args) -> None:
    if args.sync_bn and not args.batchnorm and args.arch == "mycnn":
        raise UsageError("--sync-bn syncs the batch norm of --batchnorm: pass both")
    if args.sync_bn and args.backend == "torch" and torch.device(args.device).type != "cuda":
        raise UsageError("--sync-bn on the torch backend needs CUDA (torch's SyncBatchNorm); "
                         "the triton backend's runs on the CPU too")


def run_files() -> tuple:
    """The files a run writes into --out (what --overwrite removes)."""
    from .checkpoint import BEST, LAST
    from .plots import PLOT_FILES
    return (LAST, BEST, METRICS, *PLOT_FILES)


@check
def run_folder_is_free(args) -> None:
    """--out is a folder that can be written; one that holds a run's files is refused unless
    --resume continues it or --overwrite replaces it; --resume needs its last.pt. (Other files
    in --out, such as a log the caller writes there, are left alone.)"""
    from .checkpoint import LAST
    out = Path(args.out)
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --out, --overwrite replaces it: "
                         "choose one")
    if out.exists() and not out.is_dir():
        raise UsageError(f"argument --out: {out} is a file, not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"argument --out: cannot write into {existing}")
    if args.resume:
        if not (out / LAST).is_file():
            raise UsageError(f"--resume: no {out / LAST} to continue from")
    elif not args.overwrite:
        found = [name for name in run_files() if (out / name).exists()]
        if found:
            raise UsageError(f"argument --out: {out} already holds a run ({', '.join(found)}): "
                             "pass --resume to continue it or --overwrite to replace it")


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check ``argv`` (default sys.argv[1:]); on any error print one line and raise
    SystemExit(2). Returns the arguments with resolved values (device, channels_last)."""
    parser = build_parser(recipe_in(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    try:
        for rule in CHECKS:
            rule(args)
    except UsageError as e:
        parser.error(str(e))
    return args


def resume_fixed_options() -> list:
    """The options (dests) whose value --resume refuses to change."""
    return [a.dest for a in build_parser()._actions if getattr(a, "fixed_on_resume", False)]


def usage_error(message: str) -> int:
    """Print a refused-arguments line (for checks that need the run folder's contents) and
    return the exit status 2."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return 2
