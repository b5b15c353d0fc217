"""Weight initialisation: He (Kaiming) normal, zeros, and the FCN bilinear upsampling kernel."""
import numpy as np

from .sizes import pair


def he_normal(shape, fan_in=None, rng=None, dtype=np.float32):
    """He/Kaiming normal init: N(0, 2 / fan_in), which keeps activations' variance through ReLUs.

    Parameters
    ----------
    shape : tuple of int
        Weight shape, e.g. (C_out, C_in, kH, kW).
    fan_in : int, optional
        Inputs feeding each output. Default ``prod(shape[1:])``, right for a convolution.
    rng : numpy.random.Generator, optional
    dtype : numpy dtype
    """
    rng = np.random.default_rng() if rng is None else rng
    fan_in = int(np.prod(shape[1:])) if fan_in is None else fan_in
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def zeros(shape, dtype=np.float32):
    """All zeros. Right for biases and for FCN's score layers; anywhere else a zero layer never learns."""
    return np.zeros(shape, dtype=dtype)


def bilinear_kernel(in_channels, out_channels, kernel_size, dtype=np.float32):
    """The FCN bilinear upsampling weight, on the class-to-same-class diagonal.

    For a kernel of size k: ``f = ceil(k / 2)``, centre ``c = f - 1`` if k is odd else ``f - 0.5``,
    ``w(i, j) = (1 - |i - c| / f) * (1 - |j - c| / f)``. Size 4 gives the 1-D taps
    0.25, 0.75, 0.75, 0.25. With kernel 2s, stride s and padding s/2 a transposed
    convolution with this weight is bilinear interpolation by a factor s.

    Returns
    -------
    weight : ndarray, shape (in_channels, out_channels, kH, kW)
        ``weight[c, c]`` is the kernel and every other (input, output) pair is 0, so each
        channel is upsampled on its own.
    """
    if in_channels != out_channels:
        raise ValueError(f"bilinear_kernel: upsampling maps each channel to itself, so in_channels "
                         f"({in_channels}) must equal out_channels ({out_channels})")
    taps = []
    for k in pair(kernel_size, "kernel_size"):
        f = (k + 1) // 2
        c = f - 1 if k % 2 == 1 else f - 0.5
        taps.append(1 - np.abs(np.arange(k) - c) / f)
    weight = np.zeros((in_channels, out_channels, len(taps[0]), len(taps[1])), dtype=dtype)
    weight[range(in_channels), range(out_channels)] = np.outer(taps[0], taps[1])
    return weight
