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


def test_the_demo_video_shows_the_episode_then_live_beside_predicted_and_imagined(tmp_path):
    """Layout and timeline of `make demo`'s mp4, read back through the project's reader: live frames first (model
    columns waiting), then the last live view beside predicted frame k and imagined frame k, held 1/model_fps."""
    import numpy as np

    from motus_model.data.video import read_video
    from motus_ros.demo import CELL, HEADER, demo_video_frames, write_demo_video

    roles = ["high", "left_wrist"]

    def views(value: int, size=(48, 64)) -> dict:
        return {role: np.full((*size, 3), value + 10 * r, dtype=np.uint8) for r, role in enumerate(roles)}

    live = [views(20), views(40), views(60)]
    predicted = [views(100, (24, 32)), views(140, (24, 32))]  # the model's views are smaller: resized to one cell
    imagined = [views(180, (24, 32)), views(220, (24, 32))]
    frames = demo_video_frames(live, predicted, imagined, roles, live_fps=10, model_fps=5, loops=2)
    height, width = CELL
    assert frames.shape == (3 + 2 * 2 * 2, HEADER + 2 * height, 3 * width, 3)  # 3 live + 2 loops x 2 frames x hold 2

    def cell(frame: int, row: int, column: int) -> int:
        top, left = HEADER + row * height, column * width
        return int(np.median(frames[frame, top : top + height, left : left + width]))

    assert [cell(i, 0, 0) for i in range(3)] == [20, 40, 60]  # the episode, in order
    assert cell(0, 1, 0) == 30 and cell(0, 0, 1) == cell(0, 0, 2) == 32  # left_wrist row; model columns wait
    # Then: the last live view | world model frame k | imagination frame k, each for 2 video frames, looped.
    assert [cell(i, 0, 1) for i in range(3, 11)] == [100, 100, 140, 140, 100, 100, 140, 140]
    assert [cell(i, 1, 2) for i in range(3, 11)] == [190, 190, 230, 230, 190, 190, 230, 230]
    assert {cell(i, 0, 0) for i in range(3, 11)} == {60}
    report = write_demo_video(tmp_path / "demo" / "demo.mp4", live, predicted, imagined, roles, 10, 5)
    assert report["frames"] == 3 + 3 * 2 * 2 and Path(report["path"]).is_file()
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["demo.mp4"]  # no partial file left beside it
    decoded = read_video(report["path"])
    assert decoded.shape == (15, HEADER + 2 * height, 3 * width, 3)
    assert abs(int(np.median(decoded[3, HEADER : HEADER + height, width : 2 * width])) - 100) <= 3
