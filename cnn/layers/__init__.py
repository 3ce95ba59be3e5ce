"""nn.Modules that subclass torch's and override forward only."""
from .activation import GELU, Hardswish, LeakyReLU, ReLU6, SiLU
from .batch_norm import BatchNorm2d
from .conv1d import Conv1d, ConvTranspose1d
from .conv2d import Conv2d
from .conv_bn_act import ConvBNAct2d, ConvBNReLU2d
from .conv_transpose2d import ConvTranspose2d
from .pool2d import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d
from .relu import ReLU
from .sync_batch_norm import SyncBatchNorm

__all__ = ["Conv2d", "Conv1d", "ConvTranspose2d", "ConvTranspose1d", "AdaptiveAvgPool2d",
           "AdaptiveMaxPool2d", "AvgPool2d", "MaxPool2d", "ReLU", "BatchNorm2d", "ConvBNAct2d",
           "ConvBNReLU2d", "SyncBatchNorm", "ReLU6", "LeakyReLU", "SiLU", "Hardswish", "GELU"]

# Every module class, for torch's allow-list: a whole model saved with torch.save loads with
# weights_only=True (torch's default) only inside
#     torch.serialization.safe_globals([*cnn.layers.MODULES, <the other classes it holds>])
# as for torch's own modules (torch allow-lists none of its nn.Modules either).
MODULES = (Conv2d, Conv1d, ConvTranspose2d, ConvTranspose1d, AdaptiveAvgPool2d,
           AdaptiveMaxPool2d, AvgPool2d, MaxPool2d, ReLU, BatchNorm2d, ConvBNAct2d, ConvBNReLU2d,
           SyncBatchNorm, ReLU6, LeakyReLU, SiLU, Hardswish, GELU)
