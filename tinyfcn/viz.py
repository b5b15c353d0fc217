"""Figures: label maps, predictions, training curves, confusion matrices, and upsampling.

Colours: figures of up to 8 classes use the VOC palette, as the saved mask PNGs do; with
more classes (digits has 11) figures switch to matplotlib's tab20 for labels 1-20, whose
colours stay apart where VOC's do not (:func:`palette_for`). Every figure paints its label
maps and its legend with that one rule. Mask files keep the VOC palette.

The figures a training run writes (:func:`plot_curves`, :func:`plot_predictions`) and
:func:`plot_confusion`, :func:`plot_comparison` take an optional ``title``, drawn above all
panels, e.g. the run folder and the model, so a figure still says where it came from when it
is copied elsewhere.

Every plotting function builds a :class:`matplotlib.figure.Figure` itself and never touches
pyplot's global state, so it works headless, in scripts and in notebooks (a returned figure
displays itself as the cell's value). Given ``path``, a function also saves its figure
there, atomically (:func:`tinyfcn.files.atomic_write`), so a reader never sees half a
file and two runs saving the same name at once do not collide. The suffix picks the
format (``.png``, ``.pdf``, ``.svg``, ...); no suffix means PNG.

Inputs
------
image : uint8 ndarray, shape (H, W, 3) RGB, or (H, W, 1) / (H, W) grey.
    A normalized float (C, H, W) network input has to be turned back first:
    ``(x * std + mean).transpose(1, 2, 0)``, clipped to [0, 255], cast to uint8.
label map : integer ndarray, shape (H, W); class indices, ``IGNORE`` (255) = ignore.
classes : sequence of K class names; name ``classes[k]`` belongs to label k.
"""
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from .files import atomic_write
from .labels import IGNORE, voc_palette
from .ops.functional import conv_transpose2d_forward
from .ops.reference import conv_transpose2d_copies
from .ops.sizes import pair

PALETTE = voc_palette()   # (256, 3) uint8; row k is the colour of label k; IGNORE is never blended by overlay()
PANEL = 2.4               # inches per image panel
VOC_DISTINCT = 8
"""Up to this many classes, figures use the VOC colours of the saved masks (labels 0-7 are clearly distinct)."""


def _tab_palette():
    """For more classes: label 0 black, labels 1-20 matplotlib's tab20 (its 10 strong colours, then the 10
    light ones, so labels 1-10 -- the digits -- all differ in hue), the rest and IGNORE as in VOC."""
    from matplotlib import colormaps
    tab = np.round(np.array(colormaps["tab20"].colors) * 255).astype(np.uint8)
    palette = PALETTE.copy()
    palette[1:21] = np.concatenate([tab[0::2], tab[1::2]])
    return palette


def palette_for(num_classes):
    """The colours figures use for ``num_classes`` classes: an (256, 3) uint8 array, row k for label k.

    With at most ``VOC_DISTINCT`` (8) classes it is the VOC palette, the colours of the saved mask
    PNGs; with more, neighbouring VOC colours get hard to tell apart (labels 1 and 9 are two dark
    greens), so figures switch to tab20 for labels 1-20 (see :func:`_tab_palette`). Mask files
    always keep the VOC palette, which other VOC tools expect.
    """
    return PALETTE if num_classes is None or num_classes <= VOC_DISTINCT else _tab_palette()


# ---------------------------------------------------------------- helpers


def _figure(width, height):
    """A new Figure with an Agg canvas and constrained layout, independent of pyplot."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _title(fig, title):
    """Put ``title`` above all of ``fig``'s panels (constrained layout makes room for it); None: no title."""
    if title is not None:
        fig.suptitle(title)


def _save(fig, path):
    """Save ``fig`` to ``path`` with :func:`~tinyfcn.files.atomic_write` if ``path`` is given; return ``fig``."""
    if path is not None:
        path = Path(path)
        atomic_write(path, lambda f: fig.savefig(f.name, format=path.suffix[1:] or "png", dpi="figure"))
    return fig


def _as_rgb(image, name="image"):
    """Check a uint8 (H, W, 3), (H, W, 1) or (H, W) image and return it as (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 (H, W, 3) or (H, W), got dtype {image.dtype}; turn a normalized "
                        f"float (C, H, W) input back with (x * std + mean).transpose(1, 2, 0), clip, astype(uint8)")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"{name} must be (H, W, 3), (H, W, 1) or (H, W), got shape {image.shape}; "
                         f"a (C, H, W) array needs .transpose(1, 2, 0)")
    return np.broadcast_to(image, (*image.shape[:2], 3))


def _check_label(label, name="label"):
    """Return ``label`` as an integer (H, W) ndarray, or raise naming it."""
    label = np.asarray(label)
    if label.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer label map, got dtype {label.dtype}")
    if label.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) label map, got shape {label.shape}")
    return label


def _paint(label, classes):
    """A label map in the figure colours for ``classes`` (:func:`palette_for`), its labels checked to be in range."""
    return colorize(label, len(classes), palette_for(len(classes)))


def _legend_handles(labels, classes):
    """One coloured patch per label in ``labels`` (sorted), named from ``classes``; 255 is "ignore".

    The colours are :func:`palette_for`'s, as in every label map the figures draw (:func:`_paint`).
    """
    palette = palette_for(len(classes))
    return [Patch(facecolor=palette[k] / 255, edgecolor="0.6", label="ignore" if k == IGNORE else classes[k])
            for k in sorted(labels)]


def pick_examples(labels, n=4):
    """Indices of ``n`` label maps that together show as many classes as possible, chosen deterministically.

    Greedy: each pick is the map that adds the most classes not yet shown (ties: the lowest
    index); once every class is shown, the lowest unused indices. So a figure of 4 examples
    shows a class that only a few images hold, where images 0-3 might miss it.
    """
    sets = [set(np.unique(label).tolist()) - {IGNORE} for label in labels]
    chosen, seen = [], set()
    for _ in range(min(n, len(sets))):
        gain = [-1 if i in chosen else len(s - seen) for i, s in enumerate(sets)]
        best = int(np.argmax(gain))              # the first of the largest gains
        chosen.append(best)
        seen |= sets[best]
    return sorted(chosen)


# ---------------------------------------------------------------- label maps as colours


def colorize(label, num_classes=None, palette=None):
    """Paint a label map with the VOC palette (or ``palette``, e.g. ``palette_for(K)``).

    Parameters
    ----------
    label : integer ndarray, shape (H, W) (any shape works)
        Labels in [0, 255]; 255 (ignore) gets the palette's near-white.
    num_classes : int, optional
        If given, labels other than 255 must lie in ``[0, num_classes)``.
    palette : (256, 3) uint8 ndarray, optional; default the VOC palette

    Returns
    -------
    rgb : uint8 ndarray, shape (H, W, 3)
    """
    label = np.asarray(label)
    if label.dtype.kind not in "iu":
        raise TypeError(f"colorize: label must be an integer array, got dtype {label.dtype}")
    top = len(PALETTE) if num_classes is None else min(num_classes, len(PALETTE))
    bad = (label != IGNORE) & ((label < 0) | (label >= top))
    if bad.any():
        raise ValueError(f"colorize: labels must lie in [0, {top}) or equal {IGNORE}; "
                         f"found {np.unique(label[bad])[:10].tolist()}")
    return (PALETTE if palette is None else palette)[label]


def overlay(image, label, alpha=0.5, palette=None):
    """Blend class colours over an image; background (0) and ignore (255) pixels stay as they were.

    ``out = round((1 - alpha) * image + alpha * colour)`` at labelled object pixels.

    Parameters
    ----------
    image : uint8 ndarray, shape (H, W, 3), (H, W, 1) or (H, W)
    label : integer ndarray, shape (H, W)
    alpha : float in [0, 1]
        Weight of the class colour.
    palette : (256, 3) uint8 ndarray, optional; default the VOC palette

    Returns
    -------
    out : uint8 ndarray, shape (H, W, 3)
    """
    rgb = _as_rgb(image)
    label = _check_label(label)
    if label.shape != rgb.shape[:2]:
        raise ValueError(f"overlay: label {label.shape} must match the image's (H, W) = {rgb.shape[:2]}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay: alpha must lie in [0, 1], got {alpha}")
    blended = np.rint((1 - alpha) * rgb + alpha * colorize(label, palette=palette).astype(np.float64))
    keep = (label == 0) | (label == IGNORE)
    return np.where(keep[..., None], rgb, blended).astype(np.uint8)


def plot_overlay(image, label, classes, alpha=0.5, path=None):
    """The image with its label map blended over it (:func:`overlay`) and a legend of the classes it holds.

    Parameters
    ----------
    image : uint8 ndarray, shape (H, W, 3), (H, W, 1) or (H, W)
    label : integer ndarray, shape (H, W)
    classes : sequence of str, length K
    alpha : float in [0, 1]
    path : str or Path, optional

    Returns
    -------
    fig : Figure
    """
    label = _check_label(label)
    colorize(label, len(classes))                    # labels in range
    rgb = _as_rgb(image)
    scale = PANEL / max(rgb.shape[:2])
    fig = _figure(max(rgb.shape[1] * scale, 1.0) + 1.8, max(rgb.shape[0] * scale, 1.0))
    ax = fig.add_subplot()
    ax.imshow(overlay(rgb, label, alpha, palette_for(len(classes))), interpolation="nearest")
    ax.set_axis_off()
    fig.legend(handles=_legend_handles(np.unique(label).tolist(), classes), loc="outside right upper",
               frameon=False, fontsize="small")
    return _save(fig, path)


def plot_labels(label, classes, ax=None, path=None):
    """Draw one label map in palette colours, with a legend of the classes it contains.

    Parameters
    ----------
    label : integer ndarray, shape (H, W)
    classes : sequence of str, length K
    ax : matplotlib Axes, optional
        Draw into this axes (of any figure) instead of a new figure.
    path : str or Path, optional
        Save the figure here.

    Returns
    -------
    fig : Figure
        The new figure, or the figure ``ax`` belongs to.
    """
    label = _check_label(label)
    colours = _paint(label, classes)
    handles = _legend_handles(np.unique(label).tolist(), classes)
    if ax is None:
        fig = _figure(PANEL + 1.8, PANEL)
        ax = fig.add_subplot()
        fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize="small")
    else:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize="small")
    ax.imshow(colours, interpolation="nearest")
    ax.set_axis_off()
    return _save(ax.figure, path)


def _label_grid(images, columns, classes, max_rows, title):
    """Rows of ``image | label map | label map | ...``, one titled column per entry of ``columns``.

    ``columns`` maps a column title to a sequence of (H, W) label maps, one per image. At most
    ``max_rows`` rows are drawn; one legend lists the classes that appear; ``title``, if
    not None, goes above everything.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no images to plot")
    for column, maps in columns.items():
        if len(maps) != n:
            raise ValueError(f"{column!r} has {len(maps)} label maps for {n} images")
    rows = min(n, max_rows)
    fig = _figure(PANEL * (1 + len(columns)) + 1.6, PANEL * rows)
    axes = fig.subplots(rows, 1 + len(columns), squeeze=False)
    shown = set()
    for r in range(rows):
        image = _as_rgb(images[r], f"images[{r}]")
        panels = [image]
        for column, maps in columns.items():
            label = _check_label(maps[r], f"{column}[{r}]")
            if label.shape != image.shape[:2]:
                raise ValueError(f"{column}[{r}] is {label.shape} but images[{r}] is {image.shape[:2]}")
            panels.append(_paint(label, classes))
            shown.update(np.unique(label).tolist())
        for ax, panel in zip(axes[r], panels):
            ax.imshow(panel, interpolation="nearest")
            ax.set_axis_off()
    for ax, column in zip(axes[0], ["image", *columns]):
        ax.set_title(column)
    fig.legend(handles=_legend_handles(shown, classes), loc="outside right upper", frameon=False)
    _title(fig, title)
    return fig


def plot_predictions(images, targets, preds, classes, path=None, max_rows=6, title=None):
    """One row per example: image | ground truth | prediction.

    Parameters
    ----------
    images : sequence of uint8 images, each (H, W, 3) or (H, W), e.g. an (N, H, W, 3) array
    targets, preds : sequences of integer label maps, each (H, W) like its image
    classes : sequence of str, length K
    path : str or Path, optional
    max_rows : int
        Draw only the first ``max_rows`` examples.
    title : str, optional
        Drawn above all panels, e.g. the run folder and the model.

    Returns
    -------
    fig : Figure
    """
    return _save(_label_grid(images, {"ground truth": targets, "prediction": preds}, classes, max_rows, title), path)


def plot_comparison(images, targets, preds_by_model, classes, path=None, max_rows=6, title=None):
    """The paper's figure 4: image | one column per model (e.g. FCN-32s, FCN-16s, FCN-8s) | ground truth.

    Parameters
    ----------
    images : sequence of uint8 images, each (H, W, 3) or (H, W)
    targets : sequence of integer label maps, each (H, W)
    preds_by_model : dict
        Model name -> sequence of predicted label maps, one per image; columns follow the dict's order.
    classes : sequence of str, length K
    path : str or Path, optional
    max_rows : int
    title : str, optional
        Drawn above all panels.

    Returns
    -------
    fig : Figure
    """
    return _save(_label_grid(images, {**preds_by_model, "ground truth": targets}, classes, max_rows, title), path)


# ---------------------------------------------------------------- training


def plot_curves(history, path=None, title=None):
    """Training curves: loss per epoch (left) and validation mean IoU per epoch (right).

    Parameters
    ----------
    history : dict of lists, one entry per epoch
        Needs ``"train_loss"`` and ``"val_mean_iou"``; ``"val_loss"`` and
        ``"val_pixel_accuracy"`` are drawn too when present.
    path : str or Path, optional
    title : str, optional
        Drawn above both panels, e.g. the run folder and the model.

    Returns
    -------
    fig : Figure
    """
    missing = [key for key in ("train_loss", "val_mean_iou") if key not in history]
    if missing:
        raise KeyError(f"plot_curves: history needs {missing}; it has {sorted(history)}")
    fig = _figure(9, 3.5)
    ax_loss, ax_score = fig.subplots(1, 2)
    for ax, series in ((ax_loss, {"train_loss": "train", "val_loss": "validation"}),
                       (ax_score, {"val_mean_iou": "mean IoU", "val_pixel_accuracy": "pixel accuracy"})):
        for key, name in series.items():
            if key in history:
                values = history[key]
                ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, max(len(history["train_loss"]), 1) + 0.5)   # so one epoch gets the tick 1, not 0.95 ... 1.05
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set(ylabel="loss", title="loss")
    ax_score.set(ylabel="score", title="validation", ylim=(0, 1))
    _title(fig, title)
    return _save(fig, path)


def plot_confusion(matrix, classes, path=None, normalize=True, title=None):
    """Draw a confusion matrix, rows = ground truth, columns = prediction.

    Parameters
    ----------
    matrix : ndarray, shape (K, K)
        From :func:`tinyfcn.training.metrics.confusion_matrix`.
    classes : sequence of str, length K
    path : str or Path, optional
    normalize : bool
        Divide each row by its total, so cell (i, j) is the fraction of class i's pixels
        predicted as j and the diagonal is per-class accuracy. Classes with no pixels
        give an empty (blank) row. False shows raw pixel counts.
    title : str, optional
        Drawn above the matrix, e.g. the checkpoint and the split.

    Returns
    -------
    fig : Figure
    """
    m = np.asarray(matrix, dtype=np.float64)
    K = len(classes)
    if m.shape != (K, K):
        raise ValueError(f"plot_confusion: matrix must be (K, K) = ({K}, {K}) for {K} classes, got {m.shape}")
    if normalize:
        with np.errstate(divide="ignore", invalid="ignore"):
            m = m / m.sum(axis=1, keepdims=True)
    side = max(4.0, 0.4 * K + 2.5)
    fig = _figure(side + 1, side)
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, label="fraction of the true class" if normalize else "pixels")
    ax.set_xticks(range(K), classes, rotation=90)
    ax.set_yticks(range(K), classes)
    ax.set(xlabel="prediction", ylabel="ground truth")
    if K <= 12:
        bright = 0.5 if normalize else 0.5 * m.max()     # white text on the darker half of the colour scale
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}" if normalize else f"{v:.0f}", ha="center", va="center",
                        fontsize="small", color="white" if v > bright else "black")
    _title(fig, title)
    return _save(fig, path)


# ---------------------------------------------------------------- upsampling


def transposed_conv_copies(x, weight, stride=1, padding=0):
    """Split a single-channel transposed convolution into the weighted kernel copies it sums.

    Input pixel (i, j) adds ``x[i, j] * weight`` to the output window whose corner is at
    ``(i * sh, j * sw)`` of the uncropped grid; the padding then trims ``p`` rows and
    columns from each side. The copies come from
    :func:`tinyfcn.ops.reference.conv_transpose2d_copies`, the output from
    :func:`tinyfcn.ops.functional.conv_transpose2d_forward` (which checks the arguments).

    Parameters
    ----------
    x : array_like, shape (H, W)
    weight : array_like, shape (kH, kW)
    stride, padding : int or (int, int)

    Returns
    -------
    copies : ndarray, shape (H, W, Hf, Wf), float64
        ``copies[i, j]`` is input pixel (i, j)'s weighted kernel in the uncropped grid,
        zero elsewhere; ``Hf = (H - 1) * sh + kH``.
    out : ndarray, shape (Hf - 2 * ph, Wf - 2 * pw), float64
        The transposed convolution, equal to ``copies.sum(axis=(0, 1))`` with the padding trimmed.
    """
    x, weight = np.asarray(x, dtype=np.float64), np.asarray(weight, dtype=np.float64)
    if x.ndim != 2 or weight.ndim != 2:
        raise ValueError(f"transposed_conv_copies: x and weight must be 2-D, got shapes {x.shape} and {weight.shape}")
    out, _ = conv_transpose2d_forward(x[None, None], weight[None, None], None, stride, padding)
    return conv_transpose2d_copies(x[None, None], weight[None, None], stride)[0, 0, :, :, 0], out[0, 0]


def _draw_cells(ax, values, norm, title, annotate):
    """Show a 2-D array as coloured cells with grid lines; NaN cells stay blank; values written when asked."""
    ax.imshow(values, cmap="RdBu_r", norm=norm)
    ax.set_xticks(np.arange(values.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(values.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="0.8", linewidth=0.8)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(title, fontsize="small")
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize="small",
                        color="white" if abs(v) > 0.6 * norm.vmax else "black")


def plot_transposed_conv(x, weight, stride, padding=0, path=None):
    """Picture one transposed convolution as weighted kernel copies summing into the output.

    Panels: the input x and the kernel K (left); for each input pixel (i, j), its copy
    ``x[i, j] * K`` placed in the output grid (arranged like the input pixels); and their
    sum, the output (right). With padding, a dashed frame marks the part of the grid that is
    kept. Cell values are written when the grid is at most 10 cells across. Values come
    from :func:`transposed_conv_copies`.

    Parameters
    ----------
    x : array_like, shape (H, W), at most 16 pixels
    weight : array_like, shape (kH, kW)
    stride, padding : int or (int, int)
    path : str or Path, optional

    Returns
    -------
    fig : Figure
        The output panel's axes has the label ``"output"``.
    """
    copies, out = transposed_conv_copies(x, weight, stride, padding)
    x, weight = np.asarray(x, dtype=np.float64), np.asarray(weight, dtype=np.float64)
    (sh, sw), (ph, pw) = pair(stride, "stride"), pair(padding, "padding")
    H, W, Hf, Wf = copies.shape
    if H * W > 16:
        raise ValueError(f"plot_transposed_conv: one panel per input pixel; use at most 16 pixels, got {H}x{W}")
    lim = max(np.abs(copies).max(), np.abs(out).max(), np.abs(x).max()) or 1.0
    norm = Normalize(-lim, lim)                      # zero is white, positive red, negative blue
    annotate = max(Hf, Wf) <= 10
    cell = max(1.8, 0.35 * max(Hf, Wf))
    rows = max(H, 2)                                 # the left column stacks x over K
    fig = _figure(cell * (W + 2), cell * rows + 0.6)
    fig.suptitle(f"transposed convolution, stride {stride}, padding {padding}\n"
                 f"each input pixel adds a weighted copy of the kernel")
    grid = fig.add_gridspec(rows, W + 2)
    left = grid[:, 0].subgridspec(2, 1)
    _draw_cells(fig.add_subplot(left[0]), x, norm, f"input x ({H}x{W})", annotate)
    _draw_cells(fig.add_subplot(left[1]), weight, norm, f"kernel K ({weight.shape[0]}x{weight.shape[1]})", annotate)
    Ho, Wo = out.shape
    for i, j in np.ndindex(H, W):
        ax = fig.add_subplot(grid[i * rows // H:(i + 1) * rows // H, 1 + j])
        shown = np.full((Hf, Wf), np.nan)
        window = np.s_[i * sh:i * sh + weight.shape[0], j * sw:j * sw + weight.shape[1]]
        shown[window] = copies[i, j][window]
        _draw_cells(ax, shown, norm, f"x[{i},{j}]·K = {x[i, j]:.3g}·K", annotate)
        ax.add_patch(Rectangle((j * sw - 0.5, i * sh - 0.5), weight.shape[1], weight.shape[0],
                               fill=False, edgecolor="black", linewidth=1.5))
        if ph or pw:
            ax.add_patch(Rectangle((pw - 0.5, ph - 0.5), Wo, Ho,
                                   fill=False, edgecolor="tab:green", linestyle="--", linewidth=1.5))
    ax_out = fig.add_subplot(grid[:, -1], label="output")
    kept = "\ninside the dashed frame" if ph or pw else ""
    _draw_cells(ax_out, out, norm, f"output ({Ho}x{Wo}) = sum of copies{kept}", annotate)
    return _save(fig, path)


# ---------------------------------------------------------------- convolutionalization


def plot_heatmap(image, scores, coords, classes, path=None, title=None):
    """A convolutionalized classifier's coarse score map over the image it was run on.

    Panels: the image; the probability of "not background" (1 - softmax class 0); the
    arg-max class, each score pixel drawn over the input window it stands for.

    Parameters
    ----------
    image : uint8 image (H, W, 3) or (H, W, 1) or (H, W)
    scores : float ndarray (K, h, w), the network's output for the image
    coords : ``(scale, shift)`` of the score map, ``x_in = scale * x + shift`` (the graph's
        ``coords["score"]``): score pixel i is centred on input pixel ``scale * i + shift``
    classes : sequence of K class names
    path : str or Path, optional
    title : str, optional, above all panels (e.g. the run's name)

    Returns
    -------
    fig : Figure
    """
    rgb = _as_rgb(image)
    K, h, w = scores.shape
    (sy, sx), (ty, tx) = coords
    extent = (tx - sx / 2 - 0.5, tx + sx * (w - 0.5) - 0.5, ty + sy * (h - 0.5) - 0.5, ty - sy / 2 - 0.5)
    e = np.exp(scores - scores.max(axis=0))
    prob = e / e.sum(axis=0)
    fig = _figure(3 * PANEL, PANEL + 0.4)
    axes = fig.subplots(1, 3)
    axes[0].imshow(rgb)
    axes[0].set_title(f"image {rgb.shape[0]}x{rgb.shape[1]}")
    shown = axes[1].imshow(1 - prob[0], cmap="magma", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    axes[1].set_title(f"P(not {classes[0]}), {h}x{w}")
    fig.colorbar(shown, ax=axes[1], shrink=0.8)
    label = prob.argmax(axis=0)
    axes[2].imshow(rgb)
    axes[2].imshow(_paint(label, classes), extent=extent, alpha=0.6, interpolation="nearest")
    axes[2].set_title("arg-max class")
    axes[2].legend(handles=_legend_handles(np.unique(label), classes), fontsize=6, loc="lower right")
    for ax in axes:
        ax.set_xlim(-0.5, rgb.shape[1] - 0.5)
        ax.set_ylim(rgb.shape[0] - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    _title(fig, title)
    return _save(fig, path)


def plot_diagnostics(history, classes=None, path=None, title=None):
    """The instruments of a run (:mod:`tinyfcn.training.instruments`), one panel each, by epoch.

    Top: per-layer gradient norm, update/weight ratio (the healthy band shaded) and share of
    dead ReLU channels, layers coloured from the first (dark) to the last (light). Bottom: the
    share of pixels predicted as each class (solid) against its true share (dashed), and the
    validation IoU of each class, in the class colours of the label figures.

    Parameters
    ----------
    history : dict of lists, as :func:`tinyfcn.training.train.fit` returns it (``"diagnostics"``
        and ``"val_per_class_iou"`` per epoch; epochs without them are skipped)
    classes : list of K class names, optional
    path : str or Path, optional
    title : str, optional, e.g. the run's name (put before "diagnostics, N epochs")

    Returns
    -------
    fig : Figure
    """
    from matplotlib import colormaps

    from .training.instruments import DEAD, UPDATE_RATIO
    epochs = [(e, d) for e, d in zip(history.get("epoch", []), history.get("diagnostics", [])) if d]
    fig = _figure(17, 7.5)
    axes = fig.subplots(2, 3)
    top = [("grad_norm", "gradient norm", True), ("update_ratio", "update / weight per step", True),
           ("dead_relu", "dead ReLU channels (share)", False)]
    for ax, (key, heading, log) in zip(axes[0], top):
        layers = list(dict.fromkeys(k for _, d in epochs for k in d.get(key, {})))
        colours = colormaps["viridis"](np.linspace(0, 0.9, max(len(layers), 1)))
        for layer, colour in zip(layers, colours):
            points = [(e, d[key][layer]) for e, d in epochs
                      if d.get(key, {}).get(layer) is not None and (d[key][layer] > 0 or not log)]
            if points:
                ax.plot(*zip(*points), color=colour, marker=".", label=layer)
        if log and ax.lines:
            ax.set_yscale("log")
        ax.set(title=heading, xlabel="epoch")
        ax.grid(alpha=0.3)
        if layers:                                       # beside the panel: it would hide the lines
            ax.legend(fontsize=5, ncol=1 + len(layers) // 16, title="layer", title_fontsize=6,
                      loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes[0, 1].axhspan(*UPDATE_RATIO, color="green", alpha=0.08, label="healthy")
    axes[0, 2].axhline(DEAD, color="red", lw=0.8, ls="--")
    axes[0, 2].set_ylim(-0.02, 1.02)
    K = len(classes) if classes else len(next((d["predicted_share"] for _, d in epochs if "predicted_share" in d), []))
    names = classes or [f"class {k}" for k in range(K)]
    palette = palette_for(K) / 255
    for k in range(K):
        share = [(e, d["predicted_share"][k], d["true_share"][k]) for e, d in epochs if "predicted_share" in d]
        if share:
            e, predicted, true = zip(*share)
            axes[1, 0].plot(e, np.maximum(predicted, 1e-4), color=palette[k], marker=".", label=names[k])
            axes[1, 0].plot(e, np.maximum(true, 1e-4), color=palette[k], ls="--", lw=0.8)
        iou = [(e, v[k]) for e, v in zip(history.get("epoch", []), history.get("val_per_class_iou", []))
               if v and v[k] is not None]
        if iou:
            axes[1, 1].plot(*zip(*iou), color=palette[k], marker=".", label=names[k])
    axes[1, 0].set(title="share of pixels: predicted (solid), true (dashed)", xlabel="epoch",
                   ylabel="share (0 drawn at 1e-4)", yscale="log", ylim=(8e-5, 1.5))
    axes[1, 1].set(title="validation IoU per class", xlabel="epoch", ylim=(-0.02, 1.02))
    for ax in axes.flat[:5]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    for ax in axes[1, :2]:
        ax.grid(alpha=0.3)
        if K:
            ax.legend(fontsize=6, ncol=2)
    axes[1, 2].axis("off")
    axes[1, 2].text(0, 1, "How to read it\n\n"
                    "gradient norm: a layer orders of magnitude below\nthe others learns nothing\n\n"
                    f"update / weight: healthy between {UPDATE_RATIO[0]:.0e} and {UPDATE_RATIO[1]:.0e}\n(green);"
                    " below, the layer barely moves;\nabove, it is thrown around\n\n"
                    f"dead ReLUs: above {DEAD:.0%} (red line), a layer\nhas lost most of its channels\n\n"
                    "predicted share: all pixels in one class is a\nrun collapsed to the easy answer",
                    va="top", fontsize=8, transform=axes[1, 2].transAxes)
    fig.suptitle(f"{title}: diagnostics, {len(epochs)} epochs" if title else f"diagnostics, {len(epochs)} epochs")
    return _save(fig, path)
