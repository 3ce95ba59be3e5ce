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
"""
from torch import nn

HEAD = "fc"  # torchvision's ResNet head; MyCNN's last layer is "fc2"


def _split(model: nn.Module, head: str):
    """(head parameters, backbone parameters): those under ``model.<head>`` and the rest."""
    if not hasattr(model, head):
        raise AttributeError(f"the model has no head module {head!r}")
    prefix = head + "."
    head_params, backbone = [], []
    for name, p in model.named_parameters():
        (head_params if name.startswith(prefix) else backbone).append(p)
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
    """Train ``model.<head>`` only: every other parameter gets ``requires_grad=False`` (so no
    gradient), and every batch norm outside the head keeps using and keeping its running
    statistics even while ``model.training`` is True. Returns ``model``."""
    head_params, backbone = _split(model, head)
    for p in backbone:
        p.requires_grad_(False)
    for p in head_params:
        p.requires_grad_(True)
    head_module = getattr(model, head)
    head_bns = set(head_module.modules())
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


__all__ = ["replace_head", "freeze_backbone", "finetune_param_groups"]
