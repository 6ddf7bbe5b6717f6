"""`motus eval-ros`: the closed loop through motus_sim + motus_server, end to end in a subprocess (one short episode
with the shipped checkpoint), and the `motus` command that adds it to motus_model.cli's subcommands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(300)


def motus_command() -> list[str]:
    """The installed `motus` console script (motus_ros.cli:main) where it is on PATH, else the module."""
    found = shutil.which("motus")
    return [found] if found else [sys.executable, "-m", "motus_ros.cli"]


def test_motus_adds_eval_ros_and_motus_model_cli_stays_ros_free():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ros = subprocess.run([*motus_command(), "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert ros.returncode == 0, ros.stderr[-2000:]
    assert "eval-ros" in ros.stdout and "train" in ros.stdout and "eval" in ros.stdout
    plain = subprocess.run(
        [sys.executable, "-m", "motus_model.cli", "--help"], capture_output=True, text=True, timeout=120, env=env
    )
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "eval-ros" not in plain.stdout and "train" in plain.stdout


@pytest.mark.slow
def test_eval_ros_one_episode_end_to_end(tmp_path):
    out = tmp_path / "eval_ros"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("ROS_DOMAIN_ID", None)  # the command picks a private domain: it must not meet other tests' nodes
    process = subprocess.run(
        [
            *motus_command(),
            "eval-ros",
            "--episodes",
            "1",
            "--duration",
            "2",
            "--videos",
            "1",
            "--steps",
            "1",
            "--camera-rate",
            "4.0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert len(results["episodes"]) == 1
    episode = results["episodes"][0]
    assert episode["seed"] == 1000 and episode["steps"] > 0
    assert set(episode) >= {"seed", "success", "success_at_end", "max_reward", "final_reward", "steps", "chunks"}
    summary = results["summary"]
    assert {"success_rate", "success_rate_ci95", "episodes"} <= set(summary) and summary["episodes"] == 1
    assert 0.0 <= summary["success_rate"] <= 1.0 and len(summary["success_rate_ci95"]) == 2
    assert results["config"]["checkpoint"] == "motus-small-aloha-transfer-cube"
    video = out / "rollout_000.mp4"
    assert video.is_file() and video.stat().st_size > 0, output[-4000:]
    # The summary is printed as JSON at the end.
    printed = json.loads(process.stdout[process.stdout.rindex("{\n") :])
    assert printed["success_rate"] == summary["success_rate"]
