"""nn.Modules that subclass torch's and override forward only."""
from .activation import ReLU
from .conv import Conv2d
from .fused import ConvBNReLU2d
from .norm import BatchNorm2d
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d
from .sync_batch_norm import SyncBatchNorm

__all__ = ["Conv2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "MaxPool2d",
           "ReLU", "BatchNorm2d", "ConvBNReLU2d", "SyncBatchNorm"]
