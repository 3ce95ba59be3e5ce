"""The sizes of one 2D convolution, shared by its forward and backward launchers."""
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Conv2dGeometry:
    """Sizes of ``y = conv2d(x, w)`` with x: (N, C_in, H, W), w: (C_out, C_in / groups, KH, KW).

    Padding may be asymmetric (``padding='same'`` with an even effective kernel): the kernels
    only need the top/left padding, the bottom/right padding only changes the output size.
    """

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride: tuple  # (sh, sw)
    padding: tuple  # (top, bottom, left, right)
    dilation: tuple  # (dh, dw)
    groups: int

    @classmethod
    def from_shapes(cls, input_shape, weight_shape, stride, padding, dilation, groups):
        n, c_in, h, w = input_shape
        c_out, _, kh, kw = weight_shape
        return cls(n, c_in, h, w, c_out, kh, kw, tuple(stride), tuple(padding), tuple(dilation),
                   groups)

    def with_batch(self, batch: int) -> "Conv2dGeometry":
        """The same convolution on another batch size (e.g. a cache key that ignores it)."""
        return replace(self, batch=batch)

    @property
    def out_h(self) -> int:
        top, bottom, _, _ = self.padding
        return (self.height + top + bottom - self.dilation[0] * (self.kernel_h - 1) - 1) \
            // self.stride[0] + 1

    @property
    def out_w(self) -> int:
        _, _, left, right = self.padding
        return (self.width + left + right - self.dilation[1] * (self.kernel_w - 1) - 1) \
            // self.stride[1] + 1

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def output_shape(self) -> tuple:
        return (self.batch, self.out_channels, self.out_h, self.out_w)

    @property
    def flops(self) -> int:
        """Multiply-adds x 2 of the forward pass (each gradient costs the same)."""
        return 2 * self.batch * self.out_channels * self.out_h * self.out_w \
            * self.in_per_group * self.kernel_h * self.kernel_w

