"""The layers a learner studies, each op once as readable NumPy and once compiled.

``sizes`` (output-size arithmetic), ``reference`` (every op and kernel in plain NumPy),
``_kernels`` (the numba loops, the only module that imports numba), ``functional`` (the
checked ops that run the kernels), ``init``, ``nn`` (layers with ``params`` and ``grads``),
``gradcheck`` and ``check_table`` (finite-difference checks of every backward pass).
"""
