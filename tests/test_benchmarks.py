"""The benchmark suite runs on the current tinyfcn: a smoke run of its cheapest sections.

The breakdown section replays tinyfcn's convolutions from its private helpers and reports a part
as skipped when they no longer fit; on the tinyfcn it ships with, nothing may be skipped.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_ops_and_breakdown_sections_run_and_skip_nothing(tmp_path):
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--no-torch",
                           "--only", "ops", "breakdown", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped" not in done.stdout, done.stdout
    (section,) = json.loads(out.read_text())["by_threads"].values()
    assert section["breakdown"]["train_step"]["step total"] > 0
    assert section["ops"], "the ops section measured nothing"


def _gemm_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gemm
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return gemm


def test_the_machine_line_says_how_idle_cpus_wait(tmp_path):
    cpu_idle = _gemm_module().cpu_idle
    assert cpu_idle(tmp_path) == "unknown"                       # nothing in sysfs says
    cpuidle = tmp_path / "sys" / "devices" / "system" / "cpu" / "cpuidle"
    cpuidle.mkdir(parents=True)
    (cpuidle / "current_driver").write_text("haltpoll\n")
    (cpuidle / "current_governor_ro").write_text("haltpoll\n")
    assert cpu_idle(tmp_path) == "driver haltpoll, governor haltpoll"
    (cpuidle / "current_governor").write_text("menu\n")          # a writable governor file wins over the read-only one
    poll = tmp_path / "sys" / "module" / "haltpoll" / "parameters"
    poll.mkdir(parents=True)
    (poll / "guest_halt_poll_ns").write_text("0\n")
    assert cpu_idle(tmp_path) == "driver haltpoll, governor menu, guest_halt_poll_ns 0"
