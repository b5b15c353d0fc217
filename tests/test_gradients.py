"""Every backward pass against centred finite differences, in float64, over the grid in tinyfcn.ops.check_table."""
import pytest

from tinyfcn import check_table as checks

CASES = [(op, case) for op, (configs, _) in checks.CHECKS.items() for case in configs()]


@pytest.mark.parametrize("op,case", CASES, ids=[f"{op}-{i}" for i, (op, _) in enumerate(CASES)])
def test_gradient(op, case):
    errors = checks.CHECKS[op][1](**case)
    limit = 1e-12 if "adjoint" in op else checks.TOLERANCE
    assert errors and max(errors.values()) < limit, errors


def test_grid_covers_what_the_docs_promise():
    configs = checks.conv2d_configs()
    kernels = {k for c in configs for k in c["kernel"]}
    strides = {s for c in configs for s in c["stride"]}
    paddings = {p for c in configs for p in c["padding"]}
    assert kernels == {1, 2, 3, 4, 5} and strides == {1, 2, 3} and paddings == {0, 1, 2}
    assert any(c["kernel"][0] != c["kernel"][1] for c in configs)
    assert all(c["x_shape"][0] > 1 and c["x_shape"][2] != c["x_shape"][3] for c in configs)
    assert {c["ceil_mode"] for c in checks.max_pool2d_configs()} == {False, True}


def test_table_reports_every_op():
    rows = checks.table()
    assert [r[0] for r in rows] == list(checks.CHECKS)
    assert all(n > 0 and worst < checks.TOLERANCE for _, n, worst in rows)
    text = checks.format_table(rows)
    assert "FAIL" not in text and "conv_transpose2d" in text
