"""Class-weighted softmax cross-entropy: a known answer, PyTorch's ``cross_entropy(weight=...)`` as the oracle, bad weights."""
import numpy as np
import pytest

from tinyfcn import functional as F
from tinyfcn import nn
from tinyfcn.ops.gradcheck import rel_error


def problem(shape, ignored, seed=0):
    """float64 scores (N, K, H, W) and labels with a fraction ``ignored`` set to 255, and weights with a zero."""
    rng = np.random.default_rng(seed)
    N, K, H, W = shape
    scores = rng.standard_normal(shape) * 3
    target = rng.integers(0, K, (N, H, W))
    target[rng.random((N, H, W)) < ignored] = 255
    weights = rng.uniform(0.2, 3.0, K)
    weights[K // 2] = 0.0
    return scores, target, weights


def test_known_answer():
    # two pixels, K = 2, weights (1, 3): pixel 0 has scores (0, 0) and label 0, so softmax (1/2, 1/2)
    # and loss log 2; pixel 1 has scores (log 3, 0) and label 1, so softmax (3/4, 1/4) and loss log 4
    scores = np.array([[[[0.0, np.log(3)]], [[0.0, 0.0]]]])          # (1, 2, 1, 2)
    target = np.array([[[0, 1]]])
    weights = np.array([1.0, 3.0])
    loss, d = F.softmax_cross_entropy(scores, target, class_weights=weights, reduction="sum")
    assert loss == pytest.approx(np.log(2) + 3 * np.log(4), rel=1e-14)
    np.testing.assert_allclose(d[0, :, 0], [[-1 / 2, 3 * 3 / 4], [1 / 2, -3 * 3 / 4]], rtol=1e-14)
    loss, d = F.softmax_cross_entropy(scores, target, class_weights=weights)   # the mean divides by 1 + 3
    assert loss == pytest.approx(7 / 4 * np.log(2), rel=1e-14)
    np.testing.assert_allclose(d[0, :, 0], [[-1 / 8, 9 / 16], [1 / 8, -9 / 16]], rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ones_are_the_unweighted_loss_bit_for_bit(dtype, reduction):
    scores, target, _ = problem((3, 5, 7, 6), 0.3)
    scores = scores.astype(dtype)
    loss, d = F.softmax_cross_entropy(scores, target, reduction=reduction)
    weighted, dw = F.softmax_cross_entropy(scores, target, reduction=reduction, class_weights=np.ones(5))
    assert weighted == loss and np.array_equal(dw, d) and dw.dtype == dtype


def test_equal_weights_keep_the_mean_and_scale_the_sum():
    scores, target, _ = problem((2, 4, 5, 6), 0.3)
    mean, d_mean = F.softmax_cross_entropy(scores, target)
    total, d_sum = F.softmax_cross_entropy(scores, target, reduction="sum")
    c = np.full(4, 2.5)
    loss, d = F.softmax_cross_entropy(scores, target, class_weights=c)
    assert loss == pytest.approx(mean, rel=1e-13) and rel_error(d, d_mean) < 1e-13
    loss, d = F.softmax_cross_entropy(scores, target, reduction="sum", class_weights=c)
    assert loss == pytest.approx(2.5 * total, rel=1e-13) and rel_error(d, 2.5 * d_sum) < 1e-13


def test_a_zero_weight_is_the_same_as_ignoring_the_class():
    scores, target, weights = problem((2, 5, 6, 4), 0.2)
    zero = 5 // 2
    assert (target == zero).any()
    for reduction in ("mean", "sum"):
        loss, d = F.softmax_cross_entropy(scores, target, reduction=reduction, class_weights=weights)
        ignored = np.where(target == zero, 255, target)
        loss_i, d_i = F.softmax_cross_entropy(scores, ignored, reduction=reduction, class_weights=weights)
        assert loss == pytest.approx(loss_i, rel=1e-13) and rel_error(d, d_i) < 1e-13


def test_float32_scores_take_float64_or_float32_weights():
    scores, target, weights = problem((2, 4, 5, 5), 0.2)
    want, d_want = F.softmax_cross_entropy(scores, target, class_weights=weights)
    for w in (weights, weights.astype(np.float32)):
        loss, d = F.softmax_cross_entropy(scores.astype(np.float32), target, class_weights=w)
        assert d.dtype == np.float32
        assert loss == pytest.approx(want, rel=1e-5) and rel_error(d, d_want) < 1e-5


def test_layer():
    scores, target, weights = problem((2, 4, 5, 5), 0.2)
    loss_fn = nn.SoftmaxCrossEntropy(class_weights=weights)
    want, d = F.softmax_cross_entropy(scores, target, class_weights=weights)
    assert loss_fn.forward(scores, target) == want
    np.testing.assert_array_equal(loss_fn.backward(2.0), 2 * d)
    assert repr(nn.SoftmaxCrossEntropy(class_weights=np.array([0.5, 2.0]))) == \
        "SoftmaxCrossEntropy(ignore_index=255, reduction='mean', class_weights=[0.5, 2.0])"
    assert repr(nn.SoftmaxCrossEntropy()) == "SoftmaxCrossEntropy(ignore_index=255, reduction='mean')"
    with pytest.raises(ValueError, match="one weight per class, K = 4, got 3"):
        nn.SoftmaxCrossEntropy(class_weights=weights[:3]).forward(scores, target)


def test_all_ignored_or_all_weights_zero_gives_zero():
    """tinyfcn's rule where the mean's divisor is 0 (PyTorch gives NaN there, see the oracle test below)."""
    scores, target, weights = problem((2, 3, 4, 4), 0.0)
    for labels, w in [(np.full_like(target, 255), weights), (target, np.zeros(3))]:
        for reduction in ("mean", "sum"):
            loss, d = F.softmax_cross_entropy(scores, labels, reduction=reduction, class_weights=w)
            assert loss == 0.0 and not d.any()


BAD_WEIGHTS = [
    (np.ones(4), ValueError, r"softmax_cross_entropy: class_weights must hold one weight per class, K = 5, got 4"),
    (np.ones(6), ValueError, r"one weight per class, K = 5, got 6"),
    (np.array([1.0, -0.5, 1.0, 2.0, -1.0]), ValueError,
     r"softmax_cross_entropy: class_weights must be >= 0, got \[-0.5, -1.0\] at classes \[1, 4\]"),
    (np.array([1.0, np.nan, 1.0, 1.0, 1.0]), ValueError, r"softmax_cross_entropy: class_weights contains NaN or inf"),
    (np.array([1.0, np.inf, 1.0, 1.0, 1.0]), ValueError, r"class_weights contains NaN or inf"),
    (np.ones((1, 5)), ValueError, r"softmax_cross_entropy: class_weights must be 1-D \(K\), got shape \(1, 5\)"),
    (np.ones(5, np.int64), TypeError, r"softmax_cross_entropy: class_weights must be float32 or float64, got int64"),
    ([1.0] * 5, TypeError, r"softmax_cross_entropy: class_weights must be a numpy array, got list"),
]


@pytest.mark.parametrize("weights,error,message", BAD_WEIGHTS)
def test_bad_weights_are_one_line_errors(weights, error, message):
    scores, target, _ = problem((1, 5, 3, 3), 0.0)
    with pytest.raises(error, match=message) as info:
        F.softmax_cross_entropy(scores, target, class_weights=weights)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- PyTorch as the oracle

SHAPES = [(2, 5, 6, 7), (1, 3, 1, 1), (3, 11, 4, 3), (4, 2, 9, 2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignored", [0.0, 0.4])
def test_matches_torch(shape, reduction, ignored):
    torch = pytest.importorskip("torch")
    scores, target, weights = problem(shape, ignored, seed=sum(shape))
    if shape == (1, 3, 1, 1):
        target[...] = 0                                # one pixel: of a class with a nonzero weight
    loss, d = F.softmax_cross_entropy(scores, target, 255, reduction, weights)
    ts = torch.tensor(scores, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(ts, torch.tensor(target), weight=torch.tensor(weights),
                                              ignore_index=255, reduction=reduction)
    tloss.backward()
    assert tloss.item() != 0
    assert abs(loss - tloss.item()) <= 1e-10 * abs(tloss.item())
    assert rel_error(d, ts.grad.numpy()) <= 1e-10
    np.testing.assert_allclose(d, ts.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", ["all ignored", "all counted weights 0"])
def test_torch_where_nothing_counts(shape, reduction, case):
    """``"sum"`` agrees with PyTorch (0, zero gradient); for ``"mean"`` PyTorch divides 0 by 0 and gives NaN,
    tinyfcn gives 0 and a zero gradient."""
    torch = pytest.importorskip("torch")
    scores, target, weights = problem(shape, 0.0)
    if case == "all ignored":
        target[...] = 255
    else:
        weights[np.unique(target)] = 0.0
    loss, d = F.softmax_cross_entropy(scores, target, 255, reduction, weights)
    ts = torch.tensor(scores, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(ts, torch.tensor(target), weight=torch.tensor(weights),
                                              ignore_index=255, reduction=reduction)
    tloss.backward()
    assert loss == 0.0 and not d.any()
    if reduction == "sum":
        assert tloss.item() == 0.0 and not ts.grad.numpy().any()
    else:
        assert np.isnan(tloss.item())
