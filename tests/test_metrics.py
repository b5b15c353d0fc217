"""Metrics: the confusion matrix and the paper's four scores by hand, accumulation, and the boundary band."""
import doctest
import warnings

import numpy as np
import pytest

from tinyfcn import metrics
from tinyfcn.training.metrics import (
    BoundaryAccuracy,
    ConfusionMatrix,
    boundary_band,
    confusion_matrix,
    scores,
)

# 4 classes. Class 2 is predicted once but never in the target; class 3 is in neither.
# The 255 pixel is ignored (its prediction 9 is out of range but not looked at),
# the 7 is an out-of-range target and drops out too.
TARGET = np.array([[0, 0, 1, 1],
                   [0, 0, 1, 1],
                   [0, 0, 255, 7]])
PRED = np.array([[0, 0, 1, 2],
                 [0, 1, 1, 1],
                 [0, 0, 9, 0]])
# counted: six 0s -> five 0, one 1;  four 1s -> three 1, one 2
MATRIX = np.array([[5, 1, 0, 0],
                   [0, 3, 1, 0],
                   [0, 0, 0, 0],
                   [0, 0, 0, 0]])


def test_confusion_matrix_by_hand():
    m = confusion_matrix(TARGET, PRED, 4)
    assert m.dtype == np.int64 and m.shape == (4, 4)
    np.testing.assert_array_equal(m, MATRIX)


def test_scores_by_hand():
    s = scores(MATRIX)
    # t = (6, 4, 0, 0), predicted = (5, 4, 1, 0), hits = (5, 3, 0, 0)
    assert s["pixel_accuracy"] == pytest.approx(8 / 10)
    assert s["mean_accuracy"] == pytest.approx((5 / 6 + 3 / 4) / 2)           # classes 2, 3 have no target pixels
    iou = s["per_class_iou"]
    assert len(iou) == 4
    assert iou[0] == pytest.approx(5 / (6 + 5 - 5))
    assert iou[1] == pytest.approx(3 / (4 + 4 - 3))
    assert iou[2] == 0.0                                                     # predicted but absent: counts as 0
    assert np.isnan(iou[3])                                                  # absent from both: skipped
    assert s["mean_iou"] == pytest.approx((5 / 6 + 3 / 5 + 0) / 3)
    assert s["fw_iou"] == pytest.approx((6 * 5 / 6 + 4 * 3 / 5) / 10)
    assert all(type(s[k]) is float for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"))


def test_scores_match_the_fcn_authors_score_py():
    rng = np.random.default_rng(0)
    for _ in range(5):
        hist = rng.integers(0, 50, (6, 6)) * (rng.random((6, 6)) < 0.6)
        hist[2] = 0                          # a class never in the target
        hist[:, 4] = hist[4] = 0             # a class in neither
        with np.errstate(divide="ignore", invalid="ignore"):   # the authors' formulas, verbatim
            acc = np.diag(hist).sum() / hist.sum()
            acc_cls = np.nanmean(np.diag(hist) / hist.sum(1))
            iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
            freq = hist.sum(1) / hist.sum()
        s = scores(hist)
        assert s["pixel_accuracy"] == pytest.approx(acc)
        assert s["mean_accuracy"] == pytest.approx(acc_cls)
        assert s["mean_iou"] == pytest.approx(np.nanmean(iu))
        assert s["fw_iou"] == pytest.approx((freq[freq > 0] * iu[freq > 0]).sum())
        np.testing.assert_allclose(s["per_class_iou"], iu)


def test_perfect_prediction_scores_one():
    target = np.array([[0, 0, 2], [2, 255, 0]])
    cm = ConfusionMatrix(4)
    cm.update(target, np.where(target == 255, 0, target))
    result = cm.scores()
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        assert result[key] == 1.0
    np.testing.assert_array_equal(result["per_class_iou"], [1.0, np.nan, 1.0, np.nan])


def test_empty_matrix_is_all_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = ConfusionMatrix(3).scores()
        t = scores(confusion_matrix(np.full((2, 2), 255), np.zeros((2, 2), int), 3))
    for result in (s, t):
        assert all(np.isnan(result[k]) for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"))
        assert np.isnan(result["per_class_iou"]).all()


def test_accumulating_updates_equals_one_update_on_everything():
    rng = np.random.default_rng(1)
    targets = [rng.integers(0, 5, (2, h, w)) for h, w in [(4, 6), (7, 3), (5, 5)]]
    for t in targets:
        t[rng.random(t.shape) < 0.2] = 255
    preds = [rng.integers(0, 5, t.shape) for t in targets]
    cm = ConfusionMatrix(5)
    for t, p in zip(targets, preds):
        cm.update(t, p)
    together = confusion_matrix(np.concatenate([t.ravel() for t in targets]),
                                np.concatenate([p.ravel() for p in preds]), 5)
    np.testing.assert_array_equal(cm.matrix, together)
    assert cm.matrix.sum() == sum((t != 255).sum() for t in targets)


def test_dataset_score_is_not_the_mean_of_image_scores():
    # a big image predicted perfectly and a tiny one all wrong: pixels, not images, are weighted
    big_t = np.zeros((10, 10), int)
    big_t[:, 5:] = 1
    small_t = np.array([[0, 1]])
    cm = ConfusionMatrix(2)
    cm.update(big_t, big_t)
    cm.update(small_t, 1 - small_t)
    assert cm.scores()["pixel_accuracy"] == pytest.approx(100 / 102)
    assert cm.scores()["mean_iou"] == pytest.approx(50 / 52)            # each class: 50 hits, 51 true, 51 predicted


def test_bad_input_raises():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), int), 2)
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 2\); found \[-1, 2\]"):
        confusion_matrix(np.array([0, 1, 0]), np.array([2, -1, 0]), 2)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(np.zeros(3), np.zeros(3, int), 2)
    with pytest.raises(ValueError, match="square"):
        scores(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="negative"):
        scores(np.array([[1, -1], [0, 1]]))


def test_docstring_example_runs():
    result = doctest.testmod(metrics, extraglobs={"np": np})
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------- boundary band

SQUARE = np.zeros((8, 8), np.uint8)
SQUARE[2:5, 2:5] = 1     # a 3x3 square of class 1


def test_boundary_band_width_1_on_a_square():
    # the square and the ring around it, except the square's centre (all 8 neighbours are 1s)
    expected = np.array([[0, 0, 0, 0, 0, 0, 0, 0],
                         [0, 1, 1, 1, 1, 1, 0, 0],
                         [0, 1, 1, 1, 1, 1, 0, 0],
                         [0, 1, 1, 0, 1, 1, 0, 0],
                         [0, 1, 1, 1, 1, 1, 0, 0],
                         [0, 1, 1, 1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0, 0, 0, 0]], bool)
    band = boundary_band(SQUARE, 1)
    assert band.dtype == bool
    np.testing.assert_array_equal(band, expected)


def test_boundary_band_width_2_is_chebyshev():
    expected = np.zeros((8, 8), bool)
    expected[:7, :7] = True          # every pixel within max(|di|, |dj|) <= 2 of the other label
    np.testing.assert_array_equal(boundary_band(SQUARE, 2), expected)


def test_boundary_band_with_ignore_and_batches():
    # an edge with the ignore label is a boundary, but ignore pixels are never in the band
    row = np.array([[0, 0, 0, 255, 1, 1, 1]])
    np.testing.assert_array_equal(boundary_band(row, 1)[0], [0, 0, 1, 0, 1, 0, 0])
    # each image in a batch gets its own band: nothing leaks into the flat second image
    batch = np.stack([SQUARE, np.ones_like(SQUARE)])
    band = boundary_band(batch, 1)
    np.testing.assert_array_equal(band[0], boundary_band(SQUARE, 1))
    assert not band[1].any()


def test_boundary_band_bad_input():
    with pytest.raises(ValueError, match="width"):
        boundary_band(SQUARE, 0)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(N, H, W\)"):
        boundary_band(np.zeros(5, int), 1)


def test_boundary_accuracy_by_hand():
    acc = BoundaryAccuracy(width=1)
    assert np.isnan(acc.value())
    # all background: right on the 16 background band pixels, wrong on the 8 square ones
    acc.update(SQUARE, np.zeros_like(SQUARE))
    assert (acc.correct, acc.total) == (16, 24)
    assert acc.value() == pytest.approx(16 / 24)
    # errors outside the band (the square's centre, a far corner) do not count
    pred = SQUARE.copy()
    pred[3, 3], pred[7, 7] = 0, 1
    acc.update(SQUARE, pred)
    assert acc.value() == pytest.approx((16 + 24) / (24 + 24))
    # a flat image has no band and changes nothing
    acc.update(np.ones((4, 4), int), np.zeros((4, 4), int))
    assert acc.total == 48
    with pytest.raises(ValueError, match="same shape"):
        acc.update(SQUARE, np.zeros((8, 7), int))
