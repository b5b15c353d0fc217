"""Dataset statistics on small hand-made datasets, with the expected values worked out by hand; the weights file."""
import re

import numpy as np
import pytest

from tinyfcn.datasets import Dataset, DatasetError
from tinyfcn.datasets.statistics import (
    channel_mean_std,
    class_pixel_counts,
    median_frequency_weights,
    read_class_weights,
)


def labelled(*labels, classes=4):
    """A dataset with these label maps (uint8) and grey uint8 images of their sizes."""
    labels = [np.array(label, np.uint8) for label in labels]
    images = [np.full((*label.shape, 3), 128, np.uint8) for label in labels]
    return Dataset(images, labels, [f"im{i}" for i in range(len(labels))], [f"c{k}" for k in range(classes)])


# image a: 5 labelled pixels (class 0: 2, class 1: 3) and one ignored; image b: 4 pixels (class 0: 1, class 2: 3);
# class 3 never appears
FOUR_CLASSES = labelled([[0, 0, 1], [1, 1, 255]], [[0, 2], [2, 2]])


def test_class_pixel_counts():
    counts = class_pixel_counts(FOUR_CLASSES)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [3, 3, 3, 0])


def test_median_frequency_weights():
    # class 0 appears in both images (5 + 4 = 9 labelled pixels): freq 3/9; class 1 only in a: 3/5;
    # class 2 only in b: 3/4. The median of (1/3, 3/5, 3/4) is 3/5, so w = (3/5) / freq;
    # class 3 never appears: weight 0, and not in the median
    weights = median_frequency_weights(FOUR_CLASSES)
    np.testing.assert_allclose(weights, [(3 / 5) / (3 / 9), 1.0, (3 / 5) / (3 / 4), 0.0], rtol=1e-15)
    np.testing.assert_allclose(weights, [1.8, 1.0, 0.8, 0.0], rtol=1e-15)


def test_median_frequency_weights_with_an_even_number_of_classes():
    # freq = (1/4, 3/4): the median is their mean, 1/2
    weights = median_frequency_weights(labelled([[0, 1, 1, 1]], classes=2))
    np.testing.assert_allclose(weights, [2.0, 2 / 3], rtol=1e-15)


def test_median_frequency_weights_need_a_labelled_pixel():
    with pytest.raises(ValueError, match=r"median_frequency_weights: no pixel of the 1 label maps has a class"):
        median_frequency_weights(labelled([[255, 255]]))


def test_stray_labels_are_refused():
    with pytest.raises(DatasetError, match=r"label 'im1': values \[4, 7\] are >= K = 4 classes and not 255"):
        class_pixel_counts(labelled([[0, 1]], [[4, 7, 255]]))


def test_channel_mean_std():
    # three pixels with two channels: (0, 255), (255, 0), (51, 102); in [0, 1] units
    # channel 0: 0, 1, 0.2 and channel 1: 1, 0, 0.4
    images = [np.array([[[0, 255], [255, 0]]], np.uint8), np.array([[[51, 102]]], np.uint8)]
    dataset = Dataset(images, [np.zeros((1, 2), np.uint8), np.zeros((1, 1), np.uint8)], ["a", "b"], ["bg"])
    mean, std = channel_mean_std(dataset)
    np.testing.assert_allclose(mean, [1.2 / 3, 1.4 / 3], rtol=1e-15)
    np.testing.assert_allclose(std, np.sqrt([(0 + 1 + 0.04) / 3 - (1.2 / 3) ** 2,
                                             (1 + 0 + 0.16) / 3 - (1.4 / 3) ** 2]), rtol=1e-14)


def test_channel_mean_std_of_a_constant_image_is_exactly_zero():
    # the integer sums are exact: the std of a constant is 0, not the rounding of a difference of squares
    image = np.full((37, 53, 1), 201, np.uint8)
    mean, std = channel_mean_std(Dataset([image], [np.zeros((37, 53), np.uint8)], ["a"], ["bg"]))
    assert mean.shape == std.shape == (1,)
    assert mean[0] == 201 / 255 and std[0] == 0.0


def test_channel_mean_std_refuses_float_images():
    dataset = Dataset.from_arrays(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4), np.int64))
    with pytest.raises(ValueError, match=r"channel_mean_std: the images are float32 network input, already "
                                         r"normalized; the statistics are of raw 0..255 \(uint8\) images"):
        channel_mean_std(dataset)


# ---------------------------------------------------------------- the weights file


def test_read_class_weights(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("\ufeff# median frequency, three classes\n0.5\n\n  2   # cats are rare\n1e-1\n# the end\n")
    weights = read_class_weights(path, 3)
    assert weights.dtype == np.float64
    np.testing.assert_array_equal(weights, [0.5, 2.0, 0.1])


@pytest.mark.parametrize("text,message", [
    ("1\n2\nabc\n", r"line 3: 'abc' is not a number"),
    ("1\n2 3\n4\n", r"line 2: '2 3' is not a number"),
    ("1\n-0.5\n1\n", r"line 2: -0.5 is not a finite weight >= 0"),
    ("1\nnan\n1\n", r"line 2: nan is not a finite weight >= 0"),
    ("# c\n1\ninf\n1\n", r"line 3: inf is not a finite weight >= 0"),
    ("1\n1\n\n1\n# x\n1\n", r"line 6: weight 4 of 4, more than the classes"),
    ("1\n1\n# only two\n", r"line 3: the file ends after 2 weights"),
    ("\n# nothing\n", r"no weights, only blank lines and comments"),
])
def test_read_class_weights_errors(tmp_path, text, message):
    path = tmp_path / "weights.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: {message}; the file needs one weight per class, K = 3 lines$") as info:
        read_class_weights(path, 3)
    assert "\n" not in str(info.value)
