"""`motus eval`: closed-loop episodes in the gym-aloha scene with the shipped checkpoint and the scripted expert."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import motus_sim.closed_loop as closed_loop
from motus_model.action_chunks import upsample_chunk
from motus_model.cli import main as motus_main
from motus_model.data.video import read_video
from motus_sim.closed_loop import ClosedLoopConfig, EpisodeResult, evaluate, summarize, wilson_interval

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "motus-small-aloha-transfer-cube"


def test_wilson_interval_matches_published_values():
    # Wilson score intervals at 95%: 0/10 -> [0, 0.2775], 5/10 -> [0.2366, 0.7634], 10/10 -> [0.7225, 1].
    np.testing.assert_allclose(wilson_interval(0, 10), (0.0, 0.2775), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(5, 10), (0.2366, 0.7634), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(10, 10), (0.7225, 1.0), atol=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_summary_counts_successes_and_world_model_errors():
    episodes = [
        EpisodeResult(1000, True, False, 4.0, 2.0, 400, imagined_mse=[0.1, 0.3], repeat_last_frame_mse=[0.2, 0.2]),
        EpisodeResult(1001, False, False, 1.0, 0.0, 400),
    ]
    summary = summarize(episodes)
    assert summary["successes"] == 1 and summary["success_rate"] == 0.5 and summary["success_at_end_rate"] == 0.0
    assert summary["mean_max_reward"] == 2.5
    assert summary["world_model_mse"] == pytest.approx(0.2) and summary["repeat_last_frame_mse"] == pytest.approx(0.2)


def test_bad_configs_fail_clearly():
    with pytest.raises(ValueError, match="checkpoint"):
        ClosedLoopConfig(policy="motus", checkpoint="")
    with pytest.raises(ValueError, match="policy"):
        ClosedLoopConfig(policy="random", checkpoint="x")
    with pytest.raises(ValueError, match="unknown task"):
        ClosedLoopConfig(policy="expert", task="stack_blocks")


@pytest.mark.timeout(240)
def test_motus_eval_runs_a_short_episode_end_to_end_with_the_shipped_checkpoint(tmp_path, capsys):
    out = tmp_path / "eval"
    status = motus_main(
        [
            "eval",
            "--checkpoint",
            str(SHIPPED),
            "--episodes",
            "1",
            "--max-steps",
            "40",
            "--videos",
            "1",
            "--imagine",
            "1",
            "--inference-steps",
            "2",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["episodes"] == 1 and len(printed["success_rate_ci95"]) == 2
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["episodes"] == 1 and len(results["episodes"]) == 1
    episode = results["episodes"][0]
    assert episode["seed"] == 1000 and episode["steps"] == 40
    assert episode["chunks"] == 2  # a chunk spans 32 control steps: planned at steps 0 and 32
    # The world model predicted the executed chunk's 4 frames (8 control steps apart), compared with the render.
    assert len(episode["imagined_mse"]) == 4 and len(episode["repeat_last_frame_mse"]) == 4
    assert all(0.0 <= x <= 1.0 for x in episode["imagined_mse"] + episode["repeat_last_frame_mse"])
    video = read_video(out / "rollout_000.mp4")
    assert video.shape == (20, 120, 480, 3) and video.std() > 1.0  # every 2nd step, three views side by side
    comparison = read_video(out / "imagined_vs_actual_000.mp4")
    assert comparison.shape[0] == 4 and comparison.shape[2] == 2 * 80  # actual | imagined composites


@pytest.mark.timeout(240)
def test_expert_can_drive_the_start_then_hand_over(tmp_path):
    config = ClosedLoopConfig(
        checkpoint=str(SHIPPED),
        episodes=1,
        max_steps=40,
        expert_steps=33,
        videos=0,
        imagine=0,
        inference_steps=2,
        out=str(tmp_path),
    )
    episode = evaluate(config, show_progress=False)["episodes"][0]
    assert episode["steps"] == 40 and episode["chunks"] == 1  # the policy planned once, at step 33
    with pytest.raises(ValueError, match="expert_steps"):
        ClosedLoopConfig(checkpoint="x", max_steps=40, expert_steps=41)


@pytest.mark.timeout(240)
def test_temporal_ensembling_executes_the_weighted_vote_of_overlapping_chunks(tmp_path, monkeypatch):
    from motus_model.engine import MotusEngine

    engine = MotusEngine.from_pretrained(SHIPPED)
    planned: list[np.ndarray] = []  # each chunk, upsampled to control steps from the state it was planned at
    submit = engine.submit

    def recording_submit(request, *args, **kwargs):
        future = submit(request, *args, **kwargs)
        rate = engine.config.temporal.downsample_rate
        future.add_done_callback(
            lambda done: planned.append(upsample_chunk(done.result().actions, request.state, rate))
        )
        return future

    executed: list[np.ndarray] = []
    make_environment = closed_loop.make_joint_environment

    def recording_environment(*args, **kwargs):
        environment = make_environment(*args, **kwargs)
        step = environment.step
        environment.step = lambda action: (executed.append(np.array(action)), step(action))[1]
        return environment

    monkeypatch.setattr(engine, "submit", recording_submit)
    monkeypatch.setattr(closed_loop, "make_joint_environment", recording_environment)
    config = ClosedLoopConfig(
        checkpoint=str(SHIPPED),
        episodes=1,
        max_steps=20,
        execute_steps=8,
        blending="temporal_ensemble",
        ensemble_decay=0.5,
        videos=0,
        imagine=0,
        inference_steps=2,
        out=str(tmp_path),
    )
    try:
        episode = evaluate(config, engine=engine, show_progress=False)["episodes"][0]
    finally:
        engine.close()
    assert episode["chunks"] == len(planned) == 3 and len(executed) == 20  # planned at steps 0, 8 and 16
    weights = np.exp(-0.5 * np.arange(3))  # the oldest chunk weighs most (ACT)
    np.testing.assert_allclose(executed[5], planned[0][5])  # one chunk covers step 5
    np.testing.assert_allclose(
        executed[12], (weights[0] * planned[0][12] + weights[1] * planned[1][4]) / weights[:2].sum()
    )
    vote = weights[0] * planned[0][17] + weights[1] * planned[1][9] + weights[2] * planned[2][1]
    np.testing.assert_allclose(executed[17], vote / weights.sum())
    with pytest.raises(ValueError, match="blending"):
        ClosedLoopConfig(checkpoint="x", blending="average")


@pytest.mark.timeout(120)
def test_expert_policy_succeeds_on_the_evaluation_seeds(tmp_path):
    results = evaluate(ClosedLoopConfig(policy="expert", episodes=2, videos=0, out=str(tmp_path)), show_progress=False)
    assert [e["seed"] for e in results["episodes"]] == [1000, 1001]
    assert results["summary"]["success_rate"] == 1.0
