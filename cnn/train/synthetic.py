"""A small synthetic stand-in for MNIST: seven-segment digits drawn with random pose and stroke.

Each class is a fixed set of strokes (the seven segments of a digital display, '1' and '7' with
their own strokes); every sample gets its own rotation, scale, shear, shift, stroke width and
pixel noise, so the classes are learnable but not trivially separable. Deterministic from the seed.
"""
import math

import torch

from .data import IMAGE_SIZE, MNIST

# Segment endpoints on a 1 x 2 box, (x right, y down): a top, b upper right, c lower right,
# d bottom, e lower left, f upper left, g middle; plus h, a centred vertical for '1'.
_POINTS = {"a": ((0, 0), (1, 0)), "b": ((1, 0), (1, 1)), "c": ((1, 1), (1, 2)),
           "d": ((0, 2), (1, 2)), "e": ((0, 1), (0, 2)), "f": ((0, 0), (0, 1)),
           "g": ((0, 1), (1, 1)), "h": ((0.5, 0), (0.5, 2)), "s": ((1, 0), (0.3, 2))}
_DIGITS = ["abcdef", "h", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "as", "abcdefg", "abfgcd"]
_MAX_STROKES = max(len(d) for d in _DIGITS)


def _stroke_table() -> tuple:
    """(10, S, 2, 2) endpoints centred on the origin, (10, S) mask of real strokes."""
    ends = torch.zeros(10, _MAX_STROKES, 2, 2)
    mask = torch.zeros(10, _MAX_STROKES, dtype=torch.bool)
    for digit, strokes in enumerate(_DIGITS):
        for s, name in enumerate(strokes):
            ends[digit, s] = torch.tensor(_POINTS[name], dtype=torch.float32)
            mask[digit, s] = True
    ends -= torch.tensor([0.5, 1.0])  # centre of the 1 x 2 box at the origin
    return ends, mask


def synthetic_digits(n: int, seed: int = 0, size: int = IMAGE_SIZE, chunk: int = 1024):
    """n images (n, size, size) uint8 and labels (n,) int64, balanced over 0..9."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
    ends, mask = _stroke_table()
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    pixels = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), -1).reshape(-1, 2)
    images = torch.empty(n, size, size, dtype=torch.uint8)
    for start in range(0, n, chunk):
        y = labels[start:start + chunk]
        m = y.numel()
        u = torch.rand(m, 7, generator=g)
        angle = (u[:, 0] - 0.5) * math.radians(30)
        scale = size * (0.26 + 0.08 * u[:, 1])           # glyph width ~ 7-10 px, height twice
        shear = (u[:, 2] - 0.5) * 0.4
        shift = (u[:, 3:5] - 0.5) * 6 + size / 2
        width = 0.8 + 1.2 * u[:, 5]                       # half-width of a stroke in pixels
        cos, sin = torch.cos(angle), torch.sin(angle)
        # (m, 2, 2) per-sample linear map: rotate @ shear @ scale; x' = A x + shift.
        a = torch.stack([torch.stack([cos, cos * shear - sin], -1),
                         torch.stack([sin, sin * shear + cos], -1)], -2) * scale[:, None, None]
        p = torch.einsum("mij,mskj->mski", a, ends[y]) + shift[:, None, None, :]
        start_pt, end_pt = p[:, :, 0], p[:, :, 1]                    # (m, S, 2)
        seg = end_pt - start_pt
        rel = pixels[None, None] - start_pt[:, :, None]              # (m, S, P, 2)
        t = (rel * seg[:, :, None]).sum(-1) / seg.pow(2).sum(-1).clamp_min(1e-6)[:, :, None]
        closest = rel - t.clamp(0, 1)[..., None] * seg[:, :, None]
        dist = closest.norm(dim=-1).masked_fill(~mask[y][:, :, None], float("inf"))
        ink = (width[:, None] + 0.5 - dist.min(1).values).clamp(0, 1)    # anti-aliased edge
        ink = ink * (0.75 + 0.25 * u[:, 6:7])
        noise = torch.rand(m, size * size, generator=g) * 0.15
        images[start:start + m] = ((ink + noise).clamp(0, 1) * 255).round().to(torch.uint8) \
            .reshape(m, size, size)
    return images, labels


def synthetic_mnist(n_train: int = 6000, n_test: int = 1000, seed: int = 0) -> MNIST:
    """An MNIST-shaped data set: train (n_train, 28, 28) uint8, test (n_test, 28, 28) uint8."""
    train_x, train_y = synthetic_digits(n_train, seed)
    test_x, test_y = synthetic_digits(n_test, seed + 1)
    return MNIST(train_x, train_y, test_x, test_y, source=f"synthetic (seed {seed})")
