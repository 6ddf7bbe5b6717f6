"""motus_ros.harness: child processes (READY line, failure output, SIGINT stop), the suite's parameter file, and the
import layering (`motus eval-ros` and the demo stand on the harness; evaluation never imports the demo script)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from motus_ros import harness
from motus_ros.harness import Child

pytestmark = pytest.mark.timeout(60)

# A child that prints a READY line, then waits for SIGINT and exits with code 3 (as the server holds the robot).
READY_CHILD = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, lambda *_: sys.exit(3))
    print("starting", flush=True)
    print("FAKE READY", flush=True)
    while True:
        time.sleep(0.05)
""")


def test_child_waits_for_its_ready_line_and_stops_with_sigint():
    child = Child("fake", [sys.executable, "-c", READY_CHILD], "FAKE READY", verbose=False)
    try:
        child.wait_ready(30)
        assert child.ready.is_set() and child.process.poll() is None
    finally:
        code = child.stop(timeout_s=10)
    assert code == 3  # the SIGINT handler ran: the child was interrupted, not killed
    assert "starting\n" in child.lines


def test_child_that_exits_before_ready_raises_with_its_output():
    child = Child("broken", [sys.executable, "-c", "print('no model here'); raise SystemExit(1)"], "NEVER", False)
    with pytest.raises(RuntimeError, match="(?s)broken did not start.*no model here"):
        child.wait_ready(30)
    assert child.stop() == 1


def test_demo_defaults_are_the_launch_files_real_time_settings():
    """make demo and `ros2 launch ... sim:=true` share config/sim_realtime.yaml (read independently here)."""
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "sim_realtime.yaml").read_text())
    assert harness.DEFAULT_STEPS == data["/**"]["ros__parameters"]["default_steps"] == 2
    assert harness.CHUNK_REQUEST_THRESHOLD == data["/**/policy"]["ros__parameters"]["chunk_request_threshold"]
    assert harness.DEFAULT_CAMERA_RATE_HZ == data["aloha_sim"]["ros__parameters"]["camera_rate_hz"]
    assert harness.DEFAULT_TORCH_THREADS == 1


def test_evaluation_stands_on_the_harness_not_on_the_demo_script():
    code = (
        "import sys, motus_ros.evaluation; print('motus_ros.demo' in sys.modules, 'motus_ros.harness' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=True)
    assert out.stdout.split() == ["False", "True"]
