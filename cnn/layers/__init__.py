"""nn.Modules that subclass torch's and override forward only."""
from .conv import Conv2d

__all__ = ["Conv2d"]
