"""Bad conv2d input raises torch's exception with a message naming the problem, before any
kernel launch (the ``launched`` fixture lists them), and matches what torch raises."""
import pytest
import torch
import torch.nn.functional as F

import cnn

x = torch.randn(2, 4, 8, 8)
w = torch.randn(6, 4, 3, 3)

# id: (input, weight, bias, options, message pattern)
BAD = {
    "input_2d": (torch.randn(8, 8), w, None, {}, "3D \\(unbatched\\) or 4D"),
    "input_5d": (torch.randn(1, 2, 4, 8, 8), w, None, {}, "3D \\(unbatched\\) or 4D"),
    "weight_3d": (x, torch.randn(6, 4, 3), None, {}, "4D weight"),
    "channels_mismatch": (x, torch.randn(6, 3, 3, 3), None, {}, "to have 3 channels"),
    "groups_not_dividing_in": (x, torch.randn(6, 2, 3, 3), None, {"groups": 3},
                               "to have 6 channels"),
    "groups_not_dividing_out": (x, torch.randn(5, 2, 3, 3), None, {"groups": 2},
                                "divisible by 2"),
    "groups_zero": (x, w, None, {"groups": 0}, "non-positive groups"),
    "kernel_larger_than_padded_input": (x, torch.randn(6, 4, 11, 11), None, {},
                                        "Kernel size can't be greater"),
    "dilated_kernel_too_large": (x, w, None, {"dilation": 5}, "Kernel size can't be greater"),
    "stride_zero": (x, w, None, {"stride": 0}, "non-positive stride"),
    "stride_negative": (x, w, None, {"stride": (1, -1)}, "non-positive stride"),
    "dilation_zero": (x, w, None, {"dilation": 0}, "non-positive dilation"),
    "padding_negative": (x, w, None, {"padding": -1}, "negative padding"),
    "padding_same_strided": (x, w, None, {"padding": "same", "stride": 2},
                             "'same' is not supported for strided"),
    "padding_unknown_string": (x, w, None, {"padding": "full"}, "Invalid padding string"),
    "stride_three_values": (x, w, None, {"stride": (1, 2, 3)}, "list of 2 values"),
    "weight_dtype_mismatch": (x, w.double(), None, {}, "should be the same"),
    "bias_dtype_mismatch": (x, w, torch.randn(6).double(), {}, "bias type"),
    "bias_wrong_size": (x, w, torch.randn(5), {}, "expected bias to be 1-dimensional with 6"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_input_raises_like_torch(case, launched):
    inp, weight, bias, options, pattern = case
    with pytest.raises(RuntimeError):
        F.conv2d(inp, weight, bias, **options)
    with pytest.raises(RuntimeError, match=pattern):
        cnn.functional.conv2d(inp, weight, bias, **options)
    assert not launched, "a kernel was launched for invalid input"


def test_integer_input_is_refused(launched):
    with pytest.raises(RuntimeError, match="supports float16, bfloat16, float32 and float64"):
        cnn.functional.conv2d(x.long(), w.long())
    assert not launched, "a kernel was launched for invalid input"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CUDA device to mismatch")
def test_device_mismatch_is_refused_on_meta(launched):
    with pytest.raises(RuntimeError, match="should be the same"):
        cnn.functional.conv2d(x, w.to("meta"))
    assert not launched, "a kernel was launched for invalid input"
