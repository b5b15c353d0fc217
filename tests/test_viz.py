"""Figures: colours by hand, every plot saved as a real PNG, atomic saving, and the transposed-conv picture."""
import threading

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from tinyfcn import viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["background", "cat", "dog"]


def assert_png(path, fig):
    """``path`` is a PNG of ``fig``'s size in pixels (width, height), with no temp file beside it."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    width, height = fig.get_size_inches() * fig.dpi
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (round(width), round(height))
    assert not list(path.parent.glob("*.tmp*"))


def examples(n, h=8, w=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    targets = rng.integers(0, 3, (n, h, w))
    targets[:, 0] = 255
    preds = rng.integers(0, 3, (n, h, w))
    return images, targets, preds


# ---------------------------------------------------------------- colours


def test_colorize_uses_the_voc_palette():
    rgb = viz.colorize(np.array([[0, 1], [2, 255]], np.uint8))
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb, [[[0, 0, 0], [128, 0, 0]], [[0, 128, 0], [224, 224, 192]]])
    np.testing.assert_array_equal(viz.colorize(np.array([[255, 1]]), num_classes=2), [[[224, 224, 192], [128, 0, 0]]])


def test_colorize_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"\[0, 2\) or equal 255; found \[2\]"):
        viz.colorize(np.array([[0, 2]]), num_classes=2)
    with pytest.raises(ValueError, match=r"found \[-1, 256\]"):
        viz.colorize(np.array([-1, 256]))
    with pytest.raises(TypeError, match="integer"):
        viz.colorize(np.zeros((2, 2)))


def test_overlay_blends_objects_only():
    label = np.array([[0, 1], [255, 2]])
    grey = np.full((2, 2), 100, np.uint8)
    out = viz.overlay(grey, label, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    # background and ignore untouched; class 1 (128, 0, 0) and class 2 (0, 128, 0) mixed half and half
    np.testing.assert_array_equal(out, [[[100, 100, 100], [114, 50, 50]], [[100, 100, 100], [50, 114, 50]]])
    rgb = np.stack([grey, grey + 10, grey + 20], axis=-1)
    np.testing.assert_array_equal(viz.overlay(rgb, label, alpha=0), rgb)
    np.testing.assert_array_equal(viz.overlay(rgb[..., :1], label, alpha=1)[0, 1], [128, 0, 0])


def test_overlay_rejects_bad_input():
    label = np.zeros((4, 5), int)
    with pytest.raises(TypeError, match="uint8"):
        viz.overlay(np.zeros((4, 5, 3)), label)
    with pytest.raises(ValueError, match=r"transpose\(1, 2, 0\)"):
        viz.overlay(np.zeros((3, 4, 5), np.uint8), label)
    with pytest.raises(ValueError, match="must match"):
        viz.overlay(np.zeros((5, 4, 3), np.uint8), label)
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(np.zeros((4, 5, 3), np.uint8), label, alpha=1.5)


# ---------------------------------------------------------------- figures


def test_plot_labels_new_figure_and_given_axes(tmp_path):
    label = np.array([[0, 0, 2], [2, 255, 0]])
    fig = viz.plot_labels(label, CLASSES, path=tmp_path / "labels.png")
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "dog", "ignore"]
    assert_png(tmp_path / "labels.png", fig)

    host = Figure()
    ax = host.subplots(1, 2)[1]
    assert viz.plot_labels(label, CLASSES, ax=ax) is host
    np.testing.assert_array_equal(ax.images[0].get_array(), viz.colorize(label))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        viz.plot_labels(np.array([[3]]), CLASSES)


def test_plot_predictions_rows_and_columns(tmp_path):
    images, targets, preds = examples(8)
    fig = viz.plot_predictions(images, targets, preds, CLASSES, path=tmp_path / "pred.png", max_rows=6)
    assert len(fig.axes) == 6 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "ground truth", "prediction"]
    np.testing.assert_array_equal(fig.axes[3 * 5 + 2].images[0].get_array(), viz.colorize(preds[5]))
    assert_png(tmp_path / "pred.png", fig)
    with Image.open(tmp_path / "pred.png") as image:
        assert image.height > image.width                   # six rows of three panels

    grey_images = list(images[:1, :, :, 0])                  # a list of (H, W) images works too
    fig = viz.plot_predictions(grey_images, targets[:1], preds[:1], CLASSES, path=tmp_path / "one.png")
    assert_png(tmp_path / "one.png", fig)
    with Image.open(tmp_path / "one.png") as image:
        assert image.width > image.height                   # one row of three panels


def test_plot_predictions_rejects_mismatches():
    images, targets, preds = examples(2)
    with pytest.raises(ValueError, match="'prediction' has 1 label maps for 2 images"):
        viz.plot_predictions(images, targets, preds[:1], CLASSES)
    with pytest.raises(ValueError, match=r"ground truth\[0\] is \(8, 9\)"):
        viz.plot_predictions(images, targets[:, :, :9], preds, CLASSES)


def test_plot_comparison_is_the_papers_figure_4(tmp_path):
    images, targets, preds = examples(2)
    by_model = {"FCN-32s": preds, "FCN-16s": preds[::-1], "FCN-8s": targets}
    fig = viz.plot_comparison(images, targets, by_model, CLASSES, path=tmp_path / "cmp.png")
    assert [ax.get_title() for ax in fig.axes[:5]] == ["image", "FCN-32s", "FCN-16s", "FCN-8s", "ground truth"]
    np.testing.assert_array_equal(fig.axes[5].images[0].get_array(), images[1])
    np.testing.assert_array_equal(fig.axes[7].images[0].get_array(), viz.colorize(preds[0]))
    np.testing.assert_array_equal(fig.axes[9].images[0].get_array(), viz.colorize(targets[1]))
    assert_png(tmp_path / "cmp.png", fig)
    with Image.open(tmp_path / "cmp.png") as image:
        assert image.width > image.height


def test_plot_curves(tmp_path):
    history = {"train_loss": [2.0, 1.2, 0.9], "val_loss": [2.1, 1.5, 1.1], "val_mean_iou": [0.1, 0.4, 0.6]}
    fig = viz.plot_curves(history, path=tmp_path / "curves.png")
    ax_loss, ax_score = fig.axes
    assert [line.get_label() for line in ax_loss.lines] == ["train", "validation"]
    np.testing.assert_array_equal(ax_loss.lines[0].get_xdata(), [1, 2, 3])          # epochs count from 1
    np.testing.assert_array_equal(ax_score.lines[0].get_ydata(), [0.1, 0.4, 0.6])
    assert ax_score.get_ylim() == (0, 1)
    assert_png(tmp_path / "curves.png", fig)
    with pytest.raises(KeyError, match="val_mean_iou"):
        viz.plot_curves({"train_loss": [1.0]})


def test_plot_confusion(tmp_path):
    matrix = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 2]])
    fig = viz.plot_confusion(matrix, CLASSES, path=tmp_path / "conf.png")
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown, [[0.75, 0.25, 0], [np.nan, np.nan, np.nan], [0.5, 0, 0.5]])
    assert [t.get_text() for t in fig.axes[0].texts][:3] == ["0.75", "0.25", "0.00"]
    assert_png(tmp_path / "conf.png", fig)
    fig = viz.plot_confusion(matrix, CLASSES, path=tmp_path / "counts.png", normalize=False)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), matrix)
    assert_png(tmp_path / "counts.png", fig)
    with pytest.raises(ValueError, match=r"\(3, 3\) for 3 classes"):
        viz.plot_confusion(np.zeros((2, 2)), CLASSES)


ELEVEN = [f"class {k}" for k in range(11)]                   # more than 8 classes: figures use tab20


def _legend_colours(legend):
    """Class name -> the legend patch's colour as uint8 RGB."""
    return {t.get_text(): tuple(np.rint(np.array(h.get_facecolor()[:3]) * 255).astype(int))
            for t, h in zip(legend.get_texts(), legend.legend_handles)}


def _drawn_colours(rgb, label, classes):
    """Class name -> the one colour drawn at that class's pixels of a painted (H, W, 3) map."""
    drawn = {}
    for k in np.unique(label):
        colours = np.unique(np.asarray(rgb)[label == k][:, :3], axis=0)
        assert len(colours) == 1, (k, colours)
        drawn["ignore" if k == 255 else classes[k]] = tuple(colours[0].astype(int))
    return drawn


@pytest.mark.parametrize("classes", [CLASSES, ELEVEN], ids=["3-classes", "11-classes"])
def test_every_legend_names_the_colour_its_map_draws(classes):
    K = len(classes)
    label = np.arange(4 * 6).reshape(4, 6) % K
    label[0, 0] = 255
    fig = viz.plot_labels(label, classes)
    assert _legend_colours(fig.legends[0]) == _drawn_colours(fig.axes[0].images[0].get_array(), label, classes)

    fig = viz.plot_overlay(np.zeros((4, 6, 3), np.uint8), label, classes, alpha=1)   # alpha 1: the pure colours
    legend = _legend_colours(fig.legends[0])
    del legend["ignore"]                                   # ignore pixels keep the image, by design
    drawn = _drawn_colours(fig.axes[0].images[0].get_array(), np.where(label == 255, 0, label), classes)
    assert legend == drawn

    images = np.zeros((2, 4, 6, 3), np.uint8)
    fig = viz.plot_predictions(images, [label, label], [label[::-1], label], classes)
    assert _legend_colours(fig.legends[0]) == _drawn_colours(fig.axes[1].images[0].get_array(), label, classes)

    scores = np.full((K, 2, K), -5.0)                      # a 2 x K score map whose column k is class k
    scores[np.arange(K), :, np.arange(K)] = 5.0
    fig = viz.plot_heatmap(np.zeros((8, 4 * K, 3), np.uint8), scores, ((4, 4), (1.5, 1.5)), classes)
    ax = fig.axes[2]
    argmax = np.broadcast_to(np.arange(K), (2, K))
    assert _legend_colours(ax.get_legend()) == _drawn_colours(ax.images[1].get_array(), argmax, classes)


@pytest.mark.parametrize("plot", ["curves", "predictions", "comparison", "confusion"])
def test_figures_carry_a_title_when_given(plot, tmp_path):
    images, targets, preds = examples(2)
    draw = {
        "curves": lambda **kw: viz.plot_curves({"train_loss": [1.0, 0.5], "val_mean_iou": [0.2, 0.4]}, **kw),
        "predictions": lambda **kw: viz.plot_predictions(images, targets, preds, CLASSES, **kw),
        "comparison": lambda **kw: viz.plot_comparison(images, targets, {"FCN-8s": preds}, CLASSES, **kw),
        "confusion": lambda **kw: viz.plot_confusion(np.eye(3), CLASSES, **kw),
    }[plot]
    assert draw().get_suptitle() == ""                     # no title unless asked
    title = "runs/fcn8s-3: FCN-8s on shapes"
    fig = draw(title=title, path=tmp_path / "fig.png")
    assert fig.get_suptitle() == title
    box = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
    assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)   # drawn inside the figure
    for ax in fig.axes:                                    # and above every panel, overlapping none
        assert box.y0 >= ax.get_tightbbox(fig.canvas.get_renderer()).y1 - 1
    assert_png(tmp_path / "fig.png", fig)


# ---------------------------------------------------------------- transposed convolution

X = [[0, 1], [2, 3]]
K = [[0, 1], [2, 3]]


def test_transposed_conv_copies_d2l_example():
    copies, out = viz.transposed_conv_copies(X, K, stride=1)
    np.testing.assert_array_equal(out, [[0, 0, 1], [0, 4, 6], [4, 12, 9]])
    assert copies.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(copies[0, 1], [[0, 0, 1], [0, 2, 3], [0, 0, 0]])     # 1 * K at (0, 1)
    np.testing.assert_array_equal(copies[1, 1], [[0, 0, 0], [0, 0, 3], [0, 6, 9]])     # 3 * K at (1, 1)
    np.testing.assert_array_equal(copies.sum(axis=(0, 1)), out)


def test_transposed_conv_copies_stride_and_padding():
    copies, out = viz.transposed_conv_copies(X, K, stride=2)
    assert copies.shape == (2, 2, 4, 4)
    np.testing.assert_array_equal(out, [[0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3], [4, 6, 6, 9]])
    copies, out = viz.transposed_conv_copies(X, K, stride=1, padding=1)
    assert copies.shape == (2, 2, 3, 3)                       # copies live in the uncropped grid
    np.testing.assert_array_equal(out, [[4]])                 # its centre is what padding 1 keeps


def test_plot_transposed_conv_draws_the_output(tmp_path):
    fig = viz.plot_transposed_conv(X, K, stride=1, path=tmp_path / "tconv.png")
    (ax_out,) = [ax for ax in fig.axes if ax.get_label() == "output"]
    np.testing.assert_array_equal(ax_out.images[0].get_array(), [[0, 0, 1], [0, 4, 6], [4, 12, 9]])
    assert sorted(t.get_text() for t in ax_out.texts) == sorted(["0", "0", "1", "0", "4", "6", "4", "12", "9"])
    assert len(fig.axes) == 2 + 4 + 1                         # x and K, four copies, output
    assert_png(tmp_path / "tconv.png", fig)
    fig = viz.plot_transposed_conv(X, K, stride=2, padding=1, path=tmp_path / "tconv2.png")
    assert_png(tmp_path / "tconv2.png", fig)
    with pytest.raises(ValueError, match="at most 16 pixels"):
        viz.plot_transposed_conv(np.ones((5, 4)), K, stride=1)


# ---------------------------------------------------------------- saving


def test_save_is_atomic_creates_folders_and_overwrites(tmp_path):
    target = tmp_path / "new" / "dir" / "curves.png"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old")
    fig = viz.plot_curves({"train_loss": [1.0], "val_mean_iou": [0.5]}, path=target)
    assert_png(target, fig)
    fig = viz.plot_curves({"train_loss": [1.0], "val_mean_iou": [0.5]}, path=tmp_path / "other" / "no_suffix")
    assert_png(tmp_path / "other" / "no_suffix", fig)          # no suffix: PNG
    viz.plot_curves({"train_loss": [1.0], "val_mean_iou": [0.5]}, path=tmp_path / "fig.svg")
    assert (tmp_path / "fig.svg").read_text().lstrip().startswith("<?xml")   # the suffix picks the format


def test_failed_save_leaves_nothing_behind(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"previous figure")
    fig = Figure()

    def crash_half_way(fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(PNG_SIGNATURE)
        raise OSError("disk full")

    fig.savefig = crash_half_way
    with pytest.raises(OSError, match="disk full"):
        viz._save(fig, tmp_path / "fig.png")
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]                # the temp file is gone
    assert (tmp_path / "fig.png").read_bytes() == b"previous figure"          # the old figure is intact
    with pytest.raises(ValueError, match="not supported"):
        viz.plot_curves({"train_loss": [1.0], "val_mean_iou": [0.5]}, path=tmp_path / "fig.nosuchformat")
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_two_concurrent_saves_of_the_same_figure_name_do_not_collide(tmp_path, monkeypatch):
    both_saving, savefig, errors = threading.Barrier(2, timeout=10), Figure.savefig, []

    def savefig_together(fig, fname, **kwargs):
        savefig(fig, fname, **kwargs)
        both_saving.wait()                     # both temporary files are written before either is moved
    monkeypatch.setattr(Figure, "savefig", savefig_together)

    def plot():
        try:
            viz.plot_curves({"train_loss": [1.0], "val_mean_iou": [0.5]}, path=tmp_path / "curves.png")
        except BaseException as e:             # pragma: no cover - the failure this test looks for
            errors.append(e)

    threads = [threading.Thread(target=plot) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_SIGNATURE
