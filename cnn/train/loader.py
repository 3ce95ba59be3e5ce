"""The input pipeline: the whole data set lives on the training device; batches are gathered by
index, normalised and (optionally) augmented there, with no per-sample Python.

Images are kept as uint8 (N, 28, 28) (60,000 images = 47 MB) and turned into normalised float32
(B, 1, 28, 28) batch by batch. Randomness (batch order, augmentation) comes from CPU
``torch.Generator``s, so a run is reproducible on any device and its state can be checkpointed.
"""
import math

import torch
import torch.nn.functional as F

MEAN, STD = 0.1307, 0.3081  # MNIST's pixel mean and standard deviation (the seed's Normalize)
SPLIT_SEED = 42             # the 80/20 train/validation split is fixed, whatever --seed says
VAL_FRACTION = 0.2


def split_indices(n: int, val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED):
    """The seed's ``random_split(dataset, [0.8 n, n - 0.8 n])`` with a seeded generator:
    returns train indices (int(0.8 n),) and validation indices (the rest,), int64."""
    train_size = int((1 - val_fraction) * n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:train_size], order[train_size:]


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """(B, H, W) uint8 -> (B, 1, H, W) float32, (x / 255 - MEAN) / STD."""
    return (images_uint8.unsqueeze(1).float().div_(255) - MEAN) / STD


def random_rotation(x: torch.Tensor, max_degrees: float, generator: torch.Generator):
    """Rotate each image of x (B, C, H, W) by its own angle in [-max_degrees, max_degrees]
    about the centre (bilinear, black outside), one batched affine_grid/grid_sample."""
    angle = (torch.rand(x.shape[0], generator=generator) * 2 - 1) * math.radians(max_degrees)
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1),
                         torch.stack([sin, cos, zero], -1)], -2).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5):
    """Mirror each image of x (B, C, H, W) left-right with probability p."""
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class DeviceData:
    """One split on the device: images (N, 28, 28) uint8, labels (N,) int64.

    ``batch(idx)`` -> (B, 1, 28, 28) float32 normalised, (B,) int64. With ``augment`` the
    training batches are rotated by up to ``rotation`` degrees (and flipped if ``hflip``) before
    normalisation, so the fill outside the rotated image is black as in torchvision.
    """

    def __init__(self, images, labels, device, *, rotation: float = 10.0, hflip: bool = False):
        self.images = images.to(device=device, dtype=torch.uint8)
        self.labels = labels.to(device=device, dtype=torch.int64)
        self.device = torch.device(device)
        self.rotation = rotation
        self.hflip = hflip

    def __len__(self) -> int:
        return self.labels.shape[0]

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """A fresh random order of all indices (N,) int64, on the CPU."""
        return torch.randperm(len(self), generator=generator)

    def batch(self, idx: torch.Tensor, augment_generator: torch.Generator = None):
        idx = idx.to(self.device)
        images = self.images[idx]
        if augment_generator is None:
            return normalize(images), self.labels[idx]
        x = images.unsqueeze(1).float().div_(255)
        if self.rotation:
            x = random_rotation(x, self.rotation, augment_generator)
        if self.hflip:
            x = random_hflip(x, augment_generator)
        return (x - MEAN) / STD, self.labels[idx]

    def batches(self, batch_size: int):
        """Sequential (x, y) batches for evaluation, no augmentation."""
        for start in range(0, len(self), batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, len(self))))

    def subset(self, idx: torch.Tensor) -> "DeviceData":
        """The samples at idx (M,), as a new DeviceData on the same device."""
        idx = idx.to(self.device)
        return DeviceData(self.images[idx], self.labels[idx], self.device,
                          rotation=self.rotation, hflip=self.hflip)


def make_splits(data, device, *, limit_train: int = None, rotation: float = 10.0,
                hflip: bool = False):
    """MNIST -> (train, validation, test) DeviceData. The seed's 80/20 split of the training
    set; limit_train N keeps the first N training and N // 4 validation samples of that split."""
    train_idx, val_idx = split_indices(len(data.train_labels))
    if limit_train:
        train_idx, val_idx = train_idx[:limit_train], val_idx[:max(1, limit_train // 4)]
    kw = dict(rotation=rotation, hflip=hflip)
    full = DeviceData(data.train_images, data.train_labels, device, **kw)
    test = DeviceData(data.test_images, data.test_labels, device, **kw)
    return full.subset(train_idx), full.subset(val_idx), test
