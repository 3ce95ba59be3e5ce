"""The contract behind the NCHW store's vector hints (cnn.kernels.conv2d.tile_store): for the
ROW_VEC the launchers pass, every aligned group of ROW_VEC output rows sits at consecutive
offsets that start at a multiple of ROW_VEC, in every channel. A wrong hint would not fail under the
interpreter (hints are ignored there) but would store garbage on a GPU, so it is checked here
against the offsets the kernels compute, brute force."""
import pytest
import torch
from cnn.kernels.conv2d.tile_store import nchw_row_vector, row_vector


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("plane", [(7, 7), (14, 14), (28, 28), (5, 6), (4, 8), (1, 1), (3, 16)])
def test_row_vectors_stay_in_a_plane_and_aligned(plane, dtype):
    h, w = plane
    y = torch.empty(3, 5, h, w, dtype=dtype)  # as the launchers allocate an NCHW result
    vec = nchw_row_vector(y)
    assert vec * y.element_size() <= 16 and (h * w) % vec == 0
    sn, sc, sh, sw = y.stride()
    rows = torch.arange(3 * h * w)  # the GEMM rows: (n, oh, ow) flattened
    n, oh, ow = rows // (h * w), (rows // w) % h, rows % w
    for c in range(5):
        offsets = n * sn + oh * sh + ow * sw + c * sc
        groups = offsets.view(-1, vec)
        assert (groups[:, 0] % vec == 0).all()
        assert (groups - groups[:, :1] == torch.arange(vec)).all()


def test_row_vector_sizes():
    assert row_vector(56 * 56, 2) == 8  # 16 bytes of fp16
    assert row_vector(14 * 14, 2) == 4
    assert row_vector(7 * 7, 2) == 1
    assert row_vector(28 * 28, 4) == 4
    assert row_vector(28 * 28, 2, contiguous_rows=False) == 1  # a stride-2 phase of dx


def test_channels_last_output_takes_no_row_vector():
    y = torch.empty(2, 8, 4, 4, memory_format=torch.channels_last)
    assert nchw_row_vector(y) == 1
