"""Dataset folders, their checks, the toy datasets, augmentation and batching."""
import functools
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyfcn import datasets
from tinyfcn.datasets import DatasetError, voc
from tinyfcn.labels import IGNORE, voc_palette

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def write_voc(root, items, split="train", classes=None):
    """A VOC folder with ``items``: stem -> (image uint8 (H, W, C), label uint8 (H, W)), saved as PNGs."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem, (image, label) in items.items():
        datasets.save_image(root / "JPEGImages" / f"{stem}.png", image)
        datasets.save_mask(root / "SegmentationClass" / f"{stem}.png", label)
    (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(s + "\n" for s in items))
    if classes is not None:
        (root / "classes.txt").write_text("".join(c + "\n" for c in classes))
    return root


def pair(h=6, w=8, k=3, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    label = (np.arange(h * w).reshape(h, w) % k).astype(np.uint8)
    return image, label


@pytest.fixture
def good(tmp_path):
    return write_voc(tmp_path / "voc", {"a": pair(seed=0), "b": pair(seed=1), "c": pair(seed=2)},
                     classes=["bg", "cat", "dog"])


# ---------------------------------------------------------------- loading good folders


def test_load_split_reads_images_labels_names_and_classes(good):
    ds = datasets.load_split(good, "train")
    assert len(ds) == 3 and ds.names == ["a", "b", "c"]
    assert ds.classes == ["bg", "cat", "dog"] and ds.num_classes == 3 and ds.in_channels == 3
    image, label = ds[1]
    expected_image, expected_label = pair(seed=1)
    assert image.dtype == np.uint8 and np.array_equal(image, expected_image)
    assert label.dtype == np.uint8 and np.array_equal(label, expected_label)


def test_number_of_classes_from_argument_or_inferred(tmp_path):
    root = write_voc(tmp_path, {"a": pair(k=3)})
    assert datasets.load_split(root, num_classes=5).classes == [f"class {i}" for i in range(5)]
    assert datasets.load_split(root).num_classes == 3                      # largest label 2, plus one
    with pytest.raises(DatasetError, match=r"label values 3, 4 are >= num_classes = 3 \(from the num_classes argument\)"):
        datasets.load_split(write_voc(tmp_path / "b", {"a": pair(k=5)}), num_classes=3)


def test_classes_txt_must_agree_with_num_classes_and_have_no_gaps(good):
    with pytest.raises(DatasetError, match="classes.txt: lists 3 classes but num_classes=4"):
        datasets.load_split(good, num_classes=4)
    (good / "classes.txt").write_text("bg\n\ncat\ndog\n\n")
    with pytest.raises(DatasetError, match="classes.txt: line 2 is blank; line i must name label i"):
        datasets.load_split(good)
    (good / "classes.txt").write_text("\n")
    with pytest.raises(DatasetError, match="classes.txt: it is empty"):
        datasets.load_split(good)


def test_images_of_different_sizes_and_jpeg_images(tmp_path):
    root = write_voc(tmp_path, {"small": pair(5, 7), "big": pair(9, 4)})
    Image.open(root / "JPEGImages/small.png").save(root / "JPEGImages/small.jpg", quality=95)
    (root / "JPEGImages/small.png").unlink()
    ds = datasets.load_split(root)
    assert [im.shape for im in ds.images] == [(5, 7, 3), (9, 4, 3)]


def test_grayscale_images_among_colour_ones_become_rgb(tmp_path):
    gray, label = pair(channels=1)
    ds = datasets.load_split(write_voc(tmp_path, {"rgb": pair(), "gray": (gray, label)}))
    assert ds.in_channels == 3
    assert np.array_equal(ds.images[1], np.repeat(gray, 3, axis=2))
    assert datasets.load_split(write_voc(tmp_path / "g", {"gray": (gray, label)})).in_channels == 1


def test_grayscale_and_one_bit_masks_are_read_as_indices(tmp_path):
    label = pair()[1]
    Image.fromarray(label).save(tmp_path / "l.png")                     # mode "L"
    assert np.array_equal(datasets.read_mask(tmp_path / "l.png"), label)
    Image.fromarray(label == 1).save(tmp_path / "one.png")              # mode "1"
    assert np.array_equal(datasets.read_mask(tmp_path / "one.png"), (label == 1).astype(np.uint8))


# ---------------------------------------------------------------- bad folders: clear errors


def break_folder(root, how):
    """Apply one kind of damage to the ``good`` folder (its image/mask 'b')."""
    if how == "missing mask":
        (root / "SegmentationClass/b.png").unlink()
    elif how == "missing image":
        (root / "JPEGImages/b.png").unlink()
    elif how == "jpeg mask":
        Image.open(root / "SegmentationClass/b.png").convert("L").save(root / "SegmentationClass/b.jpg")
        (root / "SegmentationClass/b.png").unlink()
    elif how == "unreadable image":
        (root / "JPEGImages/b.png").write_bytes(b"this is not a picture")
    elif how == "truncated image":
        path = root / "JPEGImages/b.png"
        datasets.save_image(path, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:3000])
    elif how == "truncated mask":
        path = root / "SegmentationClass/b.png"
        datasets.save_mask(path, np.random.default_rng(0).integers(0, 3, (64, 64)))
        path.write_bytes(path.read_bytes()[:200])
    elif how == "size mismatch":
        datasets.save_mask(root / "SegmentationClass/b.png", np.zeros((6, 9), np.uint8))
    elif how == "rgb mask":
        Image.open(root / "SegmentationClass/b.png").convert("RGB").save(root / "SegmentationClass/b.png")
    elif how == "gray rgb mask":
        Image.fromarray(np.zeros((6, 8, 3), np.uint8) + 1).save(root / "SegmentationClass/b.png")
    elif how == "label too big":
        datasets.save_mask(root / "SegmentationClass/b.png", np.full((6, 8), 7))
    elif how == "16-bit image":
        Image.fromarray(np.zeros((6, 8), np.uint16)).save(root / "JPEGImages/b.png")
    elif how == "alpha mask":
        Image.fromarray(np.zeros((6, 8, 2), np.uint8), "LA").save(root / "SegmentationClass/b.png")
    return root


BAD = [
    ("missing mask", r"SegmentationClass/b\.png: mask not found$"),
    ("missing image", r"JPEGImages/b\.jpg: image not found \(also tried \.jpeg and \.png\)"),
    ("jpeg mask", r"b\.png: mask not found; found b\.jpg, but masks must be PNG"),
    ("unreadable image", r"JPEGImages/b\.png: cannot read this image .*truncated or not an image"),
    ("truncated image", r"JPEGImages/b\.png: cannot read this image \(.*truncated"),
    ("truncated mask", r"SegmentationClass/b\.png: cannot read this mask"),
    ("size mismatch", r"b\.png: mask is 9x6 \(WxH\) but its image b\.png is 8x6"),
    ("rgb mask", r"b\.png: mask is an RGB colour image, .*one class index per pixel.*save_mask"),
    ("gray rgb mask", r"b\.png: mask is a grayscale picture saved as RGB.*convert\('L'\)"),
    ("label too big", r"b\.png: label values 7 are >= num_classes = 3 \(from classes\.txt\) and are not 255"),
    ("16-bit image", r"b\.png: image has I;16 pixels; tinyfcn reads 8-bit images"),
    ("alpha mask", r"b\.png: mask has mode LA; masks must be palette \('P'\) or grayscale \('L'\) PNGs"),
]


@pytest.mark.parametrize("how,message", BAD, ids=[how for how, _ in BAD])
def test_bad_file_raises_naming_it(good, how, message):
    break_folder(good, how)
    with pytest.raises(DatasetError, match=message):
        datasets.load_split(good)


@pytest.mark.parametrize("how", [how for how, _ in BAD])
def test_skip_bad_warns_and_skips_the_file(good, how):
    break_folder(good, how)
    with pytest.warns(UserWarning, match="skipping 'b': .*b\\.(png|jpg)"):
        ds = datasets.load_split(good, skip_bad=True)
    assert ds.names == ["a", "c"]


def test_all_files_bad_is_an_empty_split(good):
    for stem in "abc":
        (good / "SegmentationClass" / f"{stem}.png").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DatasetError, match=r"train\.txt: the split is empty: all 3 listed images were skipped"):
            datasets.load_split(good, skip_bad=True)
    assert len(caught) == 3


def test_binary_0_255_masks_are_caught_with_advice(tmp_path):
    image = pair()[0]
    mask = np.zeros((6, 8), np.uint8)
    mask[2:5, 3:6] = 255
    root = write_voc(tmp_path, {"a": (image, mask), "b": (image, np.zeros_like(mask))})
    for kwargs in ({}, {"num_classes": 2}, {"skip_bad": True}):
        with pytest.raises(DatasetError, match=r"a\.png: every mask of split 'train' holds only 0 and 255.*"
                                               r"map 255 -> 1"):
            datasets.load_split(root, **kwargs)


def test_ignore_pixels_in_real_masks_are_fine(tmp_path):
    image, label = pair()
    label[0] = IGNORE                                                   # e.g. VOC's object borders
    ds = datasets.load_split(write_voc(tmp_path, {"a": (image, label)}))
    assert ds.num_classes == 3 and (ds.labels[0][0] == IGNORE).all()


def test_layout_errors(tmp_path, good):
    with pytest.raises(DatasetError, match="no JPEGImages/ folder; expected the Pascal VOC layout"):
        datasets.load_split(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"ImageSets/Segmentation/val\.txt: split list not found"):
        datasets.load_split(good, "val")
    (good / "ImageSets/Segmentation/val.txt").write_text("\n  \n")
    with pytest.raises(DatasetError, match=r"val\.txt: the split is empty \(it lists no image stems\)"):
        datasets.load_split(good, "val")


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match=r"x\.png: image not found"):
        datasets.read_image(tmp_path / "x.png")


def test_dataset_checks_its_arrays():
    image, label = pair()
    with pytest.raises(ValueError, match="got 1 images, 2 labels and 1 names"):
        datasets.Dataset([image], [label, label], ["a"], ["bg"])
    with pytest.raises(ValueError, match=r"label 'a' must be uint8 \(6, 8\) like its image, got int64"):
        datasets.Dataset([image], [label.astype(np.int64)], ["a"], ["bg"])
    with pytest.raises(ValueError, match="needs at least one image"):
        datasets.Dataset([], [], [], ["bg"])


# ---------------------------------------------------------------- writing files


def test_save_mask_writes_a_voc_palette_png_atomically(tmp_path):
    label = np.array([[0, 1, 2], [3, 255, 21]], np.uint8)
    datasets.save_mask(tmp_path / "m.png", label)
    with Image.open(tmp_path / "m.png") as img:
        assert img.mode == "P"
        palette = np.array(img.getpalette(), np.uint8).reshape(-1, 3)
    assert np.array_equal(palette, voc_palette())
    assert np.array_equal(datasets.read_mask(tmp_path / "m.png"), label)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]           # no temporary file left behind
    with pytest.raises(ValueError, match="must be a .png; JPEG compression would change label values"):
        datasets.save_mask(tmp_path / "m.jpg", label)
    with pytest.raises(ValueError, match=r"values in \[0, 255\]"):
        datasets.save_mask(tmp_path / "m.png", label.astype(np.int64) * 300)


def test_save_image_round_trips_png_and_checks_shape(tmp_path):
    for channels in (1, 3):
        image = pair(channels=channels)[0]
        datasets.save_image(tmp_path / "i.png", image)
        assert np.array_equal(datasets.read_image(tmp_path / "i.png"), image)
    with pytest.raises(ValueError, match=r"image must be uint8 \(H, W\), \(H, W, 1\) or \(H, W, 3\)"):
        datasets.save_image(tmp_path / "i.png", np.zeros((4, 4, 2), np.uint8))


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    datasets.save_mask(tmp_path / "m.png", np.ones((2, 2), np.uint8))

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")
    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        datasets.save_mask(tmp_path / "m.png", np.zeros((2, 2), np.uint8))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]
    assert (datasets.read_mask(tmp_path / "m.png") == 1).all()


# ---------------------------------------------------------------- normalize, augment, batches


def test_normalize_maps_0_255_to_minus2_2_channels_first():
    images = np.array([0, 63.75 * 2, 255], np.float32).round().astype(np.uint8).reshape(1, 1, 3, 1)
    x = datasets.normalize(images)
    assert x.dtype == np.float32 and x.shape == (1, 1, 1, 3)
    assert np.allclose(x.ravel(), [-2, (128 / 255 - 0.5) / 0.25, 2], atol=1e-6)
    assert datasets.normalize(np.zeros((5, 6, 3), np.uint8)).shape == (3, 5, 6)
    with pytest.raises(ValueError, match="images must be uint8"):
        datasets.normalize(np.zeros((5, 6, 3)))


def marked(h=7, w=9):
    """An image whose channel 0 is its label + 1 (and channel 1 a position code), to check alignment."""
    label = (np.arange(h * w).reshape(h, w) % 3).astype(np.uint8)
    image = np.stack([label + 1, np.arange(h * w).reshape(h, w) % 251, np.full((h, w), 9)], axis=2)
    return image.astype(np.uint8), label


def test_flip_is_applied_to_both_and_twice_is_identity():
    image, label = marked()
    outcomes = set()
    for seed in range(20):
        im, lb = datasets.augment(image, label, np.random.default_rng(seed))
        assert np.array_equal(im[:, :, 0], lb + 1)
        flipped = not np.array_equal(im, image)
        if flipped:
            assert np.array_equal(im[:, ::-1], image) and np.array_equal(lb[:, ::-1], label)
        outcomes.add(flipped)
    assert outcomes == {True, False}
    im, lb = datasets.augment(image, label, np.random.default_rng(0), flip=False)
    assert np.array_equal(im, image) and np.array_equal(lb, label)


def test_crop_keeps_a_marker_at_the_same_place_in_image_and_label():
    image = np.zeros((20, 30, 3), np.uint8)
    label = np.zeros((20, 30), np.uint8)
    image[12:14, 20:23] = 200
    label[12:14, 20:23] = 2
    for seed in range(30):
        im, lb = datasets.augment(image, label, np.random.default_rng(seed), flip=seed % 2 == 0, crop=(16, 25))
        assert im.shape == (16, 25, 3) and lb.shape == (16, 25)
        assert np.array_equal(im[:, :, 0] == 200, lb == 2)


def test_crop_larger_than_the_image_pads_label_with_ignore():
    image, label = marked(5, 6)
    im, lb = datasets.augment(image, label, np.random.default_rng(0), flip=False, crop=8)
    assert im.shape == (8, 8, 3) and lb.shape == (8, 8)
    assert np.array_equal(im[:5, :6], image) and np.array_equal(lb[:5, :6], label)
    assert (lb[5:] == IGNORE).all() and (lb[:, 6:] == IGNORE).all()
    assert not im[5:].any() and not im[:, 6:].any()
    im, lb = datasets.augment(image, label, np.random.default_rng(0), flip=False, crop=(4, 8))  # pad one side only
    assert im.shape == (4, 8, 3) and (lb[:, 6:] == IGNORE).all()
    assert np.array_equal(im[:, :6, 0], lb[:, :6] + 1)
    with pytest.raises(ValueError, match=r"augment: crop must be positive, got \(0, 3\)"):
        datasets.augment(image, label, np.random.default_rng(0), crop=(0, 3))
    with pytest.raises(ValueError, match=r"augment: image \(5, 6, 3\) and label \(5, 5\) differ in size"):
        datasets.augment(image, label[:, :5], np.random.default_rng(0))


def test_batches_pad_mixed_sizes_with_zero_and_ignore():
    (a, la), (b, lb) = marked(5, 9), marked(8, 4)
    ds = datasets.Dataset([a, b], [la, lb], ["a", "b"], ["x", "y", "z"])
    [(x, y)] = list(datasets.batches(ds, 4))
    assert x.dtype == np.float32 and x.shape == (2, 3, 8, 9)
    assert y.dtype == np.int64 and y.shape == (2, 8, 9)
    assert np.array_equal(x[0, :, :5, :9], datasets.normalize(a)) and np.array_equal(y[0, :5], la)
    assert not x[0, :, 5:].any() and (y[0, 5:] == IGNORE).all()
    assert np.array_equal(x[1, :, :8, :4], datasets.normalize(b)) and np.array_equal(y[1, :, :4], lb)
    assert not x[1, :, :, 4:].any() and (y[1, :, 4:] == IGNORE).all()


def test_batches_order_shuffle_and_last_partial_batch():
    items = [marked() for _ in range(7)]
    images = [im.copy() for im, _ in items]
    for n, im in enumerate(images):
        im[:, :, 2] = n                                                  # channel 2 says which item it is
    ds = datasets.Dataset(images, [lb for _, lb in items], [str(n) for n in range(7)], ["a", "b", "c"])

    def order(**kwargs):
        out = list(datasets.batches(ds, 3, **kwargs))
        assert [len(x) for x, _ in out] == [3, 3, 1]
        return [int(round(v)) for x, _ in out for v in x[:, 2, 0, 0] * 0.25 * 255 + 127.5]

    assert order() == list(range(7))
    shuffled = order(rng=np.random.default_rng(1))
    assert sorted(shuffled) == list(range(7)) and shuffled != list(range(7))
    assert shuffled == order(rng=np.random.default_rng(1))
    crop = functools.partial(datasets.augment, rng=np.random.default_rng(0), crop=(4, 5))
    for x, y in datasets.batches(ds, 3, rng=np.random.default_rng(0), augment_fn=crop):
        assert x.shape[2:] == (4, 5) and y.shape[1:] == (4, 5)
        assert np.allclose(x[:, 0] * 0.25 * 255 + 127.5, y + 1, atol=1e-3)   # augmented together
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        next(datasets.batches(ds, 0))


def test_batches_follow_a_given_order_from_a_start_position():
    images = [np.full((2, 2, 1), n, np.uint8) for n in range(5)]
    ds = datasets.Dataset(images, [np.zeros((2, 2), np.uint8)] * 5, list("abcde"), ["bg"])
    order = np.array([4, 2, 0, 3, 1])
    out = [datasets.batches(ds, 2, order=order, start=start) for start in (0, 2, 5)]
    seen = [[[int(round(v)) for v in x[:, 0, 0, 0] * 0.25 * 255 + 127.5] for x, _ in batches] for batches in out]
    assert seen == [[[4, 2], [0, 3], [1]], [[0, 3], [1]], []]
    with pytest.raises(ValueError, match="give rng \\(to shuffle\\) or order, not both"):
        next(datasets.batches(ds, 2, rng=np.random.default_rng(0), order=order))


# ---------------------------------------------------------------- the shapes dataset


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_shapes_are_deterministic_and_seeded(tmp_path):
    a = files(datasets.make_shapes(tmp_path / "a", n_train=4, n_val=2, seed=3))
    b = files(datasets.make_shapes(tmp_path / "b", n_train=4, n_val=2, seed=3))
    c = files(datasets.make_shapes(tmp_path / "c", n_train=4, n_val=2, seed=4))
    assert a == b
    assert a.keys() == c.keys() and a["JPEGImages/train_00000.png"] != c["JPEGImages/train_00000.png"]
    more = files(datasets.make_shapes(tmp_path / "d", n_train=6, n_val=2, seed=3))
    assert more["JPEGImages/train_00003.png"] == a["JPEGImages/train_00003.png"]   # image i does not depend on n


def test_shapes_layout_classes_and_label_values(tmp_path):
    root = datasets.make_shapes(tmp_path / "s", n_train=16, n_val=3)
    train, val = datasets.load_split(root, "train"), datasets.load_split(root, "val")
    assert len(train) == 16 and len(val) == 3 and val.names[0] == "val_00000"
    assert train.classes == ["background", "disk", "triangle", "square"]
    assert train.in_channels == 3 and train.images[0].shape == (64, 64, 3)
    labels = np.stack(train.labels)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert 0.65 < (labels == 0).mean() < 0.9                            # objects are 16-32 px across
    # neither brightness nor colour gives the class: object pixels span the range, like the background
    pixels = np.stack(train.images).mean(axis=3)
    for cls in (1, 2, 3):
        assert pixels[labels == cls].min() < 100 and pixels[labels == cls].max() > 160


def test_shapes_options(tmp_path):
    gray = datasets.load_split(datasets.make_shapes(tmp_path / "g", 2, 1, channels=1, size=(40, 56)))
    assert gray.in_channels == 1 and gray.images[0].shape == (40, 56, 1)
    easy = datasets.load_split(datasets.make_shapes(tmp_path / "e", 8, 1, level="easy")).labels
    areas = np.stack([np.bincount(label.ravel(), minlength=4)[1:] for label in easy])
    assert ((areas == 0) | (areas > 250)).all()                         # whole objects of radius >= 11
    with pytest.raises(ValueError, match=r"level must be one of \['easy', 'normal'\], got 'hard'"):
        datasets.make_shapes(tmp_path / "x", 2, 1, level="hard")
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        datasets.make_shapes(tmp_path / "x", 2, 1, channels=2)
    with pytest.raises(ValueError, match="n_val must be an int >= 1, got 0"):
        datasets.make_shapes(tmp_path / "x", 2, 0)


def test_an_interrupted_write_leaves_the_old_dataset(tmp_path, monkeypatch):
    root = datasets.make_shapes(tmp_path / "s", n_train=3, n_val=1)
    save_image, calls = voc.save_image, []

    def fail_on_third(path, image):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        save_image(path, image)
    monkeypatch.setattr(voc, "save_image", fail_on_third)
    before = datasets.load_split(root, "train")
    with pytest.raises(KeyboardInterrupt, match="nothing was written to"):
        datasets.make_shapes(root, n_train=3, n_val=1, seed=1)
    after = datasets.load_split(root, "train")                          # the old dataset, untouched
    assert all(np.array_equal(a, b) for a, b in zip(before.images, after.images))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]          # no temporary folder left


# ---------------------------------------------------------------- the digits dataset


def test_vendored_digits_load_and_the_split_is_disjoint():
    pixels, digits = datasets.load_digits()
    assert pixels.shape == (1797, 8, 8) and pixels.dtype == np.uint8 and pixels.max() == 16
    assert digits.shape == (1797,) and set(digits) == set(range(10))
    (tp, td), (vp, vd) = datasets.load_digits("train"), datasets.load_digits("val")
    assert len(td) + len(vd) == 1797
    assert np.array_equal(np.concatenate([tp, vp]), pixels)              # two disjoint blocks of rows
    assert set(td) == set(vd) == set(range(10))
    assert not {p.tobytes() for p in tp} & {p.tobytes() for p in vp}     # no val handwriting in train


def test_digits_scenes(tmp_path):
    root = datasets.make_digits(tmp_path / "d", n_train=12, n_val=2)
    ds = datasets.load_split(root)
    assert ds.classes == ["background"] + [str(d) for d in range(10)] and ds.num_classes == 11
    assert ds.in_channels == 1 and ds.images[0].shape == (64, 84, 1)
    labels, images = np.stack(ds.labels), np.stack(ds.images)[..., 0]
    assert labels.max() <= 10 and len(np.unique(labels)) >= 5
    assert (images[labels > 0] > 127).all()                             # labelled where the ink is above 0.5
    assert (images[labels == 0] <= 128).all()
    assert files(datasets.make_digits(tmp_path / "e", n_train=12, n_val=2)) == files(root)


def test_resize_bilinear_is_smooth_and_keeps_constants():
    up = datasets.digits._resize_bilinear(np.array([[0.0, 1.0]]), 2, 4)
    assert np.allclose(up, [[0, 0.25, 0.75, 1]] * 2)
    assert np.allclose(datasets.digits._resize_bilinear(np.full((3, 3), 7.0), 7, 5), 7)


# ---------------------------------------------------------------- by name, and the committed samples


def test_make_dataset_by_name(tmp_path):
    root = datasets.make_dataset("digits", tmp_path / "d", 2, 1, 0, size=(32, 40))
    assert datasets.load_split(root).images[0].shape == (32, 40, 1)
    assert datasets.load_split(datasets.make_dataset("shapes-easy", tmp_path / "s", 2, 1, 0)).images[0].shape == (64, 64, 3)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; the toy datasets are: shapes, shapes-easy, digits"):
        datasets.make_dataset("mnist", tmp_path / "m", 2, 1, 0)


@pytest.mark.parametrize("name,make", [("shapes", datasets.make_shapes), ("digits", datasets.make_digits)])
def test_committed_samples_load_and_match_the_generator(tmp_path, name, make):
    for split in ("train", "val"):
        sample = datasets.load_split(SAMPLES / name, split)
        fresh = datasets.load_split(make(tmp_path / name, n_train=4, n_val=2, seed=0), split)
        assert sample.names == fresh.names and sample.classes == fresh.classes
        for a, b in zip(sample.images + sample.labels, fresh.images + fresh.labels):
            assert np.array_equal(a, b), f"data/samples/{name} is stale: regenerate it (see data/README.md)"
