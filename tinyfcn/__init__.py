"""tinyfcn: Fully Convolutional Networks (FCN-32s/16s/8s) from scratch in NumPy, with numba kernels."""

__version__ = "0.1.0"
