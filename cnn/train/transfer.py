"""Transfer learning, done right: a new head, a frozen backbone, or fine-tuning with a lower
backbone learning rate.

    replace_head(model, num_classes)          # model.fc = a fresh nn.Linear(in_features, N)
    freeze_backbone(model)                    # only model.fc trains; backbone BN stats frozen
    optimizer = torch.optim.Adam(finetune_param_groups(model, lr=1e-3, backbone_lr_scale=0.1))

The seed's snippet (replace ``model.fc``, set ``requires_grad = False`` on every parameter,
then ``model.fc.requires_grad = True``) trains nothing: the loop also freezes the new head,
and ``requires_grad`` on a module is a plain attribute, not its parameters' flag. Here the
head's parameters keep ``requires_grad=True``, the backbone's get False, and the backbone's
batch norms stay in evaluation mode through ``model.train()`` (a forward pre-hook puts them
back), so their running statistics are not moved by the new data either.

``python -m cnn.train.transfer`` demonstrates it on real MNIST (see ``main``): the seed's MyCNN
pretrained on digits 0-4, then digits 5-9 learnt from a small labelled subset twice with the
same budget, frozen pretrained features + a new head against the same network from scratch.
Measured on a 2-core CPU (torch backend, seed 0, 500 images, 20 epochs of batches of 50):
pretrained on 0-4 99.75% test accuracy; on the 4,861 test images of 5-9, frozen conv features
+ new fc1, fc2 96.89% against 95.52% from scratch (a linear probe on the frozen fc1 features,
``--head fc2``: 83.8%: the last hidden layer of a 0-4 classifier has specialised).
"""
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .trainer import Trainer, duration, triton_version

HEAD = "fc"  # torchvision's ResNet head; MyCNN's last layer is "fc2"


def _heads(head) -> tuple:
    return (head,) if isinstance(head, str) else tuple(head)


def _split(model: nn.Module, head):
    """(head parameters, backbone parameters): those under ``model.<head>`` (or any of the
    names when ``head`` is a tuple) and the rest."""
    heads = _heads(head)
    for name in heads:
        if not hasattr(model, name):
            raise AttributeError(f"the model has no head module {name!r}")
    prefixes = tuple(name + "." for name in heads)
    head_params, backbone = [], []
    for name, p in model.named_parameters():
        (head_params if name.startswith(prefixes) else backbone).append(p)
    return head_params, backbone


def replace_head(model: nn.Module, num_classes: int, head: str = HEAD) -> nn.Linear:
    """Replace the nn.Linear ``model.<head>`` by a fresh one with ``num_classes`` outputs, on
    the same device and dtype; returns it."""
    old = getattr(model, head)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"model.{head} is a {type(old).__name__}, expected an nn.Linear")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    setattr(model, head, new)
    return new


def _keep_frozen_batch_norms_in_eval(model: nn.Module, args) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and \
                getattr(m, "_cnn_frozen", False):
            m.eval()


def freeze_backbone(model: nn.Module, head: str = HEAD) -> nn.Module:
    """Train ``model.<head>`` only (``head`` may be a tuple of names: e.g. MyCNN's classifier
    ("fc1", "fc2")): every other parameter gets ``requires_grad=False`` (so no gradient), and
    every batch norm outside the head keeps using and keeping its running statistics even while
    ``model.training`` is True. Returns ``model``."""
    head_params, backbone = _split(model, head)
    for p in backbone:
        p.requires_grad_(False)
    for p in head_params:
        p.requires_grad_(True)
    head_bns = {m for name in _heads(head) for m in getattr(model, name).modules()}
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in head_bns:
            m._cnn_frozen = True
            m.eval()
    if not getattr(model, "_cnn_freeze_hook", False):
        model.register_forward_pre_hook(_keep_frozen_batch_norms_in_eval)
        model._cnn_freeze_hook = True
    return model


def finetune_param_groups(model: nn.Module, lr: float, backbone_lr_scale: float = 0.1,
                          head: str = HEAD) -> list:
    """Optimizer parameter groups for fine-tuning everything: the head at ``lr``, the
    backbone at ``lr * backbone_lr_scale``."""
    head_params, backbone = _split(model, head)
    return [{"params": backbone, "lr": lr * backbone_lr_scale, "name": "backbone"},
            {"params": head_params, "lr": lr, "name": "head"}]


__all__ = ["replace_head", "freeze_backbone", "finetune_param_groups", "main"]


# ---------------------------------------------------------------------------------------------
# python -m cnn.train.transfer: the demonstration

PROG = "python -m cnn.train.transfer"
PRETRAINED = "pretrained_0-4.pt"
METRICS = "metrics.json"
CURVES = "learning_curves.png"
SPLIT_DIGIT = 5  # pretrain on 0..4, transfer to 5..9
HEADS = {"fc1,fc2": ("fc1", "fc2"), "fc2": ("fc2",)}


def build_parser():
    from . import cli
    p = cli.Parser(prog=PROG, formatter_class=cli.HelpFormatter, description=(
        "Transfer learning on MNIST: pretrain the seed's MyCNN on digits 0-4 (reused from "
        "--out when it exists), then learn digits 5-9 from --subset labelled images twice with "
        "the same budget: frozen pretrained features + a new head, and the same network from "
        "scratch. Writes metrics.json and learning_curves.png into --out."))
    add = cli.add
    add(p, "--out", default="runs/transfer", help="folder for the checkpoint, metrics, plot")
    add(p, "--backend", choices=("triton", "torch"), default="torch",
        help="torch: torch's own layers; triton: our kernels (without CUDA through Triton's "
             "interpreter: 12.5 s per training step of 64 images and 70 ms per evaluated "
             "image measured on a 2-core CPU, about 8 hours for the default sizes, against "
             "7 minutes on the torch backend, hence the default)")
    add(p, "--device", default=None,
        help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    add(p, "--seed", type=cli.non_negative_int, default=0,
        help="seed of the subset, the initial weights and the batch order")
    add(p, "--subset", type=cli.positive_int, default=500,
        help="labelled images of digits 5-9 to learn from")
    add(p, "--epochs", type=cli.positive_int, default=20,
        help="epochs over the subset, for each of the two runs")
    add(p, "--batch-size", type=cli.positive_int, default=50, help="batch size on the subset")
    add(p, "--lr", type=cli.positive_float, default=3e-3,
        help="peak learning rate of the one-cycle schedule on the subset (Adam)")
    add(p, "--head", choices=tuple(HEADS), default="fc1,fc2", metavar="{fc1,fc2 | fc2}",
        help="what the frozen run trains anew: fc1,fc2 (MyCNN's classifier, on the frozen "
             "conv features) or fc2 (its last layer, on the frozen 128 fc1 features)")
    add(p, "--pretrain-epochs", type=cli.positive_int, default=2,
        help="epochs of the seed's recipe on digits 0-4")
    add(p, "--data-dir", default=None,
        help="MNIST folder (default: $CNN_DATA_DIR or ~/.cache/cnn/mnist)")
    add(p, "--synthetic", type=cli.synthetic_size, default=None, metavar="N",
        help="N generated digit images (and N/6 test images) instead of MNIST, for a quick "
             "check (default: off, MNIST)")
    add(p, "--no-plots", action="store_true", help="do not write the PNG plot")
    return p


def parse_args(argv=None):
    from . import cli
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cli.device_is_available(args)
        cli.backend_runs_on_device(args)
        cli.data_dir_is_a_folder(args)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise cli.UsageError(f"argument --out: {out} is a file, not a folder")
    except cli.UsageError as e:
        parser.error(str(e))
    return args


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def digit_split(data, lo: int, hi: int, device, relabel: int = 0):
    """The samples of DeviceData ``data`` whose label is in [lo, hi), labels minus relabel."""
    from .loader import DeviceData
    keep = ((data.labels >= lo) & (data.labels < hi)).nonzero().flatten()
    return DeviceData(data.images[keep], data.labels[keep] - relabel, device)


def _trainer(model, train, val, *, args, epochs, **kw):
    return Trainer(model, train, val, seed=args.seed, progress=False, log=_say,
                   epochs=epochs, **kw)


def pretrain(args, train, val, test, out: Path, source: str):
    """The seed's MyCNN on digits 0-4 with the seed's recipe (Adam lr 1e-3, batch 64,
    plateau schedule), best validation weights kept; written atomically to out/PRETRAINED
    and reused when that file was made with the same settings. Returns (state_dict, info)."""
    from ..models import MyCNN
    from . import checkpoint as ckpt
    path = out / PRETRAINED
    settings = {"digits": [0, SPLIT_DIGIT - 1], "epochs": args.pretrain_epochs,
                "seed": args.seed, "data": source, "model": "MyCNN(num_classes=5)"}
    if path.exists():
        try:
            saved = ckpt.load_checkpoint(path)
        except ckpt.CheckpointError as e:
            _say(f"pretrained checkpoint unreadable, training it again: {e}")
        else:
            if saved.get("settings") == settings:
                _say(f"pretrained: reusing {path} ({saved['info']})")
                return saved["model"], dict(saved["info"], reused=True)
            _say(f"pretrained: {path} was made with other settings ({saved.get('settings')}); "
                 "training it again")
    torch.manual_seed(args.seed)
    model = MyCNN(backend=args.backend, seed=args.seed, num_classes=SPLIT_DIGIT).to(args.device)
    t = _trainer(model, train, val, args=args, epochs=args.pretrain_epochs, batch_size=64)
    start = time.perf_counter()
    t.fit(args.pretrain_epochs)  # the seed's recipe; restores the best validation weights
    wall = time.perf_counter() - start
    test_loss, test_acc = t.evaluate(test)
    info = {"train_images": len(train), "epochs": t.epoch, "test_accuracy_0_4": test_acc,
            "val_accuracy": t.history["val_accuracy"], "wall_s": round(wall, 1)}
    state = ckpt.state_dict_to_cpu(model.state_dict())
    ckpt.save_checkpoint(path, {"model": state, "settings": settings, "info": info})
    _say(f"pretrained on digits 0-4: test accuracy {100 * test_acc:.2f}% on {len(test)} "
         f"images, {duration(wall)}; saved {path}")
    return state, dict(info, reused=False)


def learn_5_to_9(args, pretrained, train, test, frozen: bool) -> dict:
    """One run on the subset: MyCNN with the pretrained weights, a new head (--head: fresh
    layers, the seed's initialisation) and the rest frozen (frozen=True), or the same network
    from its seed's initialisation. The same batches, optimiser, schedule and number of steps
    either way; the test split of 5-9
    is scored after each epoch for the curve (no decision is taken from it: the last epoch's
    model is the result)."""
    from ..models.mycnn import MyCNN, initialize_weights
    torch.manual_seed(args.seed)
    model = MyCNN(backend=args.backend, seed=args.seed, num_classes=SPLIT_DIGIT)
    if frozen:
        model.load_state_dict(pretrained)
        head = HEADS[args.head]
        generator = torch.Generator().manual_seed(args.seed + 1)
        for name in head:
            initialize_weights(getattr(model, name), generator)  # a fresh layer
        freeze_backbone(model, head=head)
    model = model.to(args.device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    t = _trainer(model, train, test, args=args, epochs=args.epochs, batch_size=args.batch_size,
                 lr=args.lr, schedule="onecycle", patience=args.epochs + 1)
    start = time.perf_counter()
    t.fit(args.epochs, restore_best=False)
    wall = time.perf_counter() - start
    h = t.history
    return {"test_accuracy": h["val_accuracy"][-1], "test_loss": h["val_loss"][-1],
            "trainable_parameters": trainable, "steps": len(h["train_loss"]),
            "wall_s": round(wall, 1), "accuracy": h["val_accuracy"],
            "train_loss": h["train_loss"], "epoch_end_step": h["epoch_end_step"]}


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    from .data import MNISTUnavailableError, load_mnist
    from .fileio import atomic_write
    from .loader import make_splits
    from .plots import save_learning_curves
    from .synthetic import synthetic_mnist
    start = time.perf_counter()
    out = Path(args.out)
    try:
        data = synthetic_mnist(args.synthetic, max(1, args.synthetic // 6)) if args.synthetic \
            else load_mnist(args.data_dir)
    except MNISTUnavailableError as e:
        _say(f"error: {e}")
        return 1
    device = torch.device(args.device)
    train, val, test = make_splits(data, device)
    low = [digit_split(d, 0, SPLIT_DIGIT, device) for d in (train, val, test)]
    high_train = digit_split(train, SPLIT_DIGIT, 10, device, relabel=SPLIT_DIGIT)
    high_test = digit_split(test, SPLIT_DIGIT, 10, device, relabel=SPLIT_DIGIT)
    if args.subset > len(high_train):
        print(f"{PROG}: error: argument --subset: {args.subset} is more than the "
              f"{len(high_train)} training images of digits 5-9 in {data.source}",
              file=sys.stderr)
        return 2
    pick = torch.randperm(len(high_train), generator=torch.Generator().manual_seed(args.seed))
    subset = high_train.subset(pick[:args.subset])
    out.mkdir(parents=True, exist_ok=True)
    _say(f"data: {data.source}; digits 0-4: train {len(low[0])}, validation {len(low[1])}; "
         f"digits 5-9: {len(subset)} labelled training images, test {len(high_test)}; "
         f"backend {args.backend} on {device}")
    pretrained, pre_info = pretrain(args, *low, out, data.source)
    runs = {}
    for name, frozen in (("frozen", True), ("scratch", False)):
        _say(f"digits 5-9, {'frozen pretrained features + new head' if frozen else 'from scratch'}"
             f": {args.epochs} epochs of {len(subset)} images")
        runs[name] = learn_5_to_9(args, pretrained, subset, high_test, frozen)
        _say(f"  test accuracy {100 * runs[name]['test_accuracy']:.2f}% on {len(high_test)} "
             f"images ({duration(runs[name]['wall_s'])})")
    metrics = {
        "command": " ".join([PROG, *(sys.argv[1:] if argv is None else argv)]),
        "frozen_test_accuracy": runs["frozen"]["test_accuracy"],
        "scratch_test_accuracy": runs["scratch"]["test_accuracy"],
        "test_images_5_9": len(high_test), "subset": len(subset), "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "schedule": "onecycle",
        "frozen_run_trains": args.head,
        "seed": args.seed, "backend": args.backend, "device": str(device),
        "data": data.source, "pretrain": pre_info, "runs": runs,
        "wall_s": round(time.perf_counter() - start, 1),
        "versions": {"torch": torch.__version__, "triton": triton_version()},
    }
    atomic_write(out / METRICS, json.dumps(metrics, indent=1).encode())
    if not args.no_plots:
        save_learning_curves(out / CURVES, {
            f"pretrained, frozen + new {args.head} ({runs['frozen']['trainable_parameters']:,}"
            " trainable)": runs["frozen"],
            f"from scratch ({runs['scratch']['trainable_parameters']:,} trainable)":
                runs["scratch"]},
            title=f"MNIST digits 5-9 from {len(subset)} labelled images "
                  f"(MyCNN pretrained on 0-4)")
    print(f"digits 5-9 from {len(subset)} images, test accuracy on {len(high_test)}: frozen "
          f"pretrained features {100 * runs['frozen']['test_accuracy']:.2f}%, from scratch "
          f"{100 * runs['scratch']['test_accuracy']:.2f}%; {duration(metrics['wall_s'])}; "
          f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
