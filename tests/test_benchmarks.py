"""The benchmark suite runs on the current tinyfcn: a smoke run of its cheapest sections.

The breakdown section replays tinyfcn's convolutions from its private helpers and reports a part
as skipped when they no longer fit; on the tinyfcn it ships with, nothing may be skipped.
"""
import json
import os
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
    if len(os.sched_getaffinity(0)) > 1:                   # the two-thread account: every shared job seen at both counts
        for norm in ("none", "batch"):
            account = section["breakdown"]["two_threads"][norm]
            assert account["1"]["jobs"] == account["2"]["jobs"] > 0
            assert account["2"]["worker busy"] > 0 and account["1"].get("worker busy", 0) == 0
    assert section["ops"], "the ops section measured nothing"


def _benchmark_module(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_the_machine_line_says_how_idle_cpus_wait(tmp_path):
    cpu_idle = _benchmark_module("gemm").cpu_idle
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


def test_whole_model_ratios_pair_each_rounds_processes():
    run, report = _benchmark_module("run"), _benchmark_module("report")

    def process(train_s, infer_s):
        return {"train_s": train_s, "infer_s": infer_s, "peak_rss_mb": 1, "peak_rss_train_mb": 1, "rss_after_import_mb": 1}

    tiny = run.summarize_model_runs([process([1.0, 1.0, 9.0], [0.5]), process([2.0, 2.0], [1.0])], batch=8)
    torch = run.summarize_model_runs([process([2.0], [0.5]), process([2.0, 2.0, 2.0], [2.0])], batch=8)
    assert tiny["train_s_per_process"] == [1.0, 2.0]                  # each process's own median
    assert run.paired_ratios(tiny, torch, "train") == [0.5, 1.0]      # round by round, not pooled
    assert run.paired_ratios(tiny, torch, "infer") == [1.0, 0.5]
    assert report.spread([1.0, 0.5, 0.75]) == "0.50-1.00" and report.spread([]) is None
