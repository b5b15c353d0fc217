"""Output-size arithmetic and the (h, w) argument rule."""
import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import nn
from tinyfcn.ops.sizes import pair


@pytest.mark.parametrize("value, expected", [(2, (2, 2)), (np.int64(2), (2, 2)), ((np.int32(1), 3), (1, 3)),
                                             ([np.uint8(4), np.int16(5)], (4, 5))])
def test_pair_accepts_numpy_integers(value, expected):
    assert pair(value) == expected
    assert all(type(v) is int for v in pair(value))


@pytest.mark.parametrize("value", [True, np.bool_(True), 2.0, "2", (1, 2, 3), (True, 1), None])
def test_pair_rejects_what_is_not_an_integer(value):
    with pytest.raises(TypeError, match="must be an int or a pair of ints"):
        pair(value, "stride")


def test_numpy_integer_stride_reaches_every_op():
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 8))
    w = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
    out, _ = F.conv2d_forward(x, w, None, stride=np.int64(2), padding=np.int64(1))
    assert out.shape == (1, 3, 4, 4)
    assert nn.MaxPool2d(np.int64(2)).forward(x).shape == (1, 2, 4, 4)
    assert nn.Conv2d(2, 3, np.int64(3), stride=np.int64(2)).stride == (2, 2)
