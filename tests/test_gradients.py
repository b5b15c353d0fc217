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


def test_table_reports_each_op_its_worst_error(monkeypatch):
    # test_gradient above runs the whole grid; table() is run here on a fake op and on relu only
    fake = (lambda: [dict(error=3e-9), dict(error=5e-9), dict(error=1e-12)], lambda error: {"x": error, "w": error / 2})
    monkeypatch.setattr(checks, "CHECKS", {"fake": fake, "relu": checks.CHECKS["relu"]})
    (fake_row, relu_row) = checks.table()
    assert fake_row == ("fake", 3, 5e-9)                              # the worst over every configuration
    assert relu_row[:2] == ("relu", len(checks.relu_configs())) and 0 <= relu_row[2] < checks.TOLERANCE


def test_format_table_gives_each_row_its_verdict():
    lines = checks.format_table([("conv2d", 12, 3e-10), ("Dropout / Crop / Add / Concat", 6, 2e-6)]).splitlines()
    assert lines[0].split() == ["op", "configs", "worst", "rel.", "error", "verdict"] and set(lines[1]) == {"-"}
    assert lines[2].split() == ["conv2d", "12", "3.00e-10", "ok"]
    assert lines[3].split() == ["Dropout", "/", "Crop", "/", "Add", "/", "Concat", "6", "2.00e-06", "FAIL"]
    assert len(lines) == 4
