"""cnn: convolution, pooling, batch norm and activations for PyTorch, on Triton kernels.

    import cnn
    conv = cnn.Conv2d(1, 32, 3, padding=1)        # a torch.nn.Conv2d, Triton forward/backward
    y = cnn.functional.conv2d(x, w, b, stride=2)  # torch.nn.functional.conv2d's signature
    model = cnn.fuse(model)                       # conv -> [bn] -> [+ residual] -> [act] fused
    with cnn.enabled():                           # torch's own conv/pool/BN/act calls on ours
"""
# isort: off
from . import checkout  # noqa: F401  (cnn.kernels: installed, or the checkout's folder kernels/)
from . import kernels  # noqa: F401  (decides compiled vs interpreted before anything else)
# isort: on

from . import distributed, functional
from .conversion import convert
from .fusion import fuse
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layers
from .routing import disable, enable, enabled, routing_report

# isort: off
from . import models  # after the layers: the model zoo is built from them
# isort: on

__all__ = ["convert", "disable", "distributed", "enable", "enabled", "functional", "fuse",
           "models", "routing_report", *_layers]
