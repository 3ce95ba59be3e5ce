"""nn.Modules that subclass torch's and override forward only."""
from .activation import ReLU
from .conv import Conv2d
from .fused import ConvBNReLU2d
from .norm import BatchNorm2d
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d
from .sync_batch_norm import SyncBatchNorm

__all__ = ["Conv2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "MaxPool2d",
           "ReLU", "BatchNorm2d", "ConvBNReLU2d", "SyncBatchNorm"]

# Every module class, for torch's allow-list: a whole model saved with torch.save loads with
# weights_only=True (torch's default) only inside
#     torch.serialization.safe_globals([*cnn.layers.MODULES, <the other classes it holds>])
# as for torch's own modules (torch allow-lists none of its nn.Modules either).
MODULES = (Conv2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d, ReLU,
           BatchNorm2d, ConvBNReLU2d, SyncBatchNorm)
