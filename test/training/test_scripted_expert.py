"""The scripted ALOHA expert and its LeRobot recording (real gym-aloha physics, tiny or no rendering)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from training_helpers import write_tiny_dataset

from motus_model.data.lerobot import LeRobotDataset
from motus_sim import CAMERA_NAMES, DemoRecordingConfig, main, record_demonstrations, run_expert_episode
from motus_sim.scripted_expert import (
    _COMMAND_NOISE_STREAM,
    ARM_COLUMNS,
    GRIPPER_COLUMNS,
    CommandNoise,
    Waypoint,
    interpolate_waypoints,
    plan_joint_trajectory,
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [0, 1])
def test_transfer_cube_expert_succeeds_in_joint_space_replay(seed):
    episode = run_expert_episode("transfer_cube", seed)
    assert episode.states.shape == episode.actions.shape == (400, 14)
    assert episode.success, f"seed {seed}: max reward {episode.rewards.max()} < {episode.max_reward}"
    # A real hand-over: the left gripper still holds the cube off the table on the last frame.
    assert episode.success_at_end, f"seed {seed}: final reward {episode.rewards[-1]}"
    # The replay tracks its targets: the arms end close to where they were commanded.
    assert np.abs(episode.states[-1, :6] - episode.actions[-2, :6]).max() < 0.1


@pytest.mark.timeout(120)
def test_insertion_expert_succeeds_in_joint_space_replay_on_a_known_good_seed():
    # The insertion expert succeeds on only a minority of seeds (see docs/demonstrations.md); seed 4 is
    # one of them, so this pins the whole pipeline (grasps, carry, servoed insertion, replay) against regressions.
    episode = run_expert_episode("insertion", 4)
    assert episode.success, f"max reward {episode.rewards.max()} < {episode.max_reward}"


def test_waypoint_interpolation_is_linear_and_holds_after_the_end():
    quat = np.array([1.0, 0, 0, 0])
    plan = [Waypoint(0, np.zeros(3), quat, 0.0), Waypoint(10, np.array([1.0, 2.0, 3.0]), quat, 1.0)]
    np.testing.assert_allclose(interpolate_waypoints(plan, 5), [0.5, 1.0, 1.5, 1, 0, 0, 0, 0.5])
    np.testing.assert_allclose(interpolate_waypoints(plan, 50), [1.0, 2.0, 3.0, 1, 0, 0, 0, 1.0])
    # q and -q are one rotation: blending towards -q must not swing through other orientations.
    flipped = [Waypoint(0, np.zeros(3), quat, 0.0), Waypoint(10, np.zeros(3), -quat, 0.0)]
    np.testing.assert_allclose(np.abs(interpolate_waypoints(flipped, 5)[3:7]), [1, 0, 0, 0], atol=1e-12)


@pytest.mark.timeout(120)
def test_tiny_recording_round_trips_through_the_lerobot_reader(tmp_path):
    steps, height, width = 12, 24, 32
    config = DemoRecordingConfig(
        task="transfer_cube",
        episodes=1,
        seed=3,
        out=str(tmp_path / "demos"),
        image_height=height,
        image_width=width,
        num_steps=steps,
    )
    summary = record_demonstrations(config, show_progress=False)
    assert summary["episodes_recorded"] == 1

    dataset = LeRobotDataset(tmp_path / "demos")
    episode = dataset.load_episode(0)
    assert episode["task"] == "transfer the cube to the other arm"
    assert set(episode["frames"]) == set(CAMERA_NAMES)
    for clip in episode["frames"].values():
        assert clip.shape == (steps, height, width, 3)
        assert clip.std() > 1.0  # a rendered scene, not a blank frame
    assert episode["state"].shape == episode["action"].shape == (steps, 14)
    assert set(dataset.stats) >= {"observation.state", "action"}

    # The recorded actions are exactly the joint targets the replay was commanded, states what it observed.
    expected = run_expert_episode("transfer_cube", 3, num_steps=steps)
    np.testing.assert_allclose(episode["action"], expected.actions.astype(np.float32), rtol=0, atol=0)
    np.testing.assert_allclose(episode["state"], expected.states.astype(np.float32), rtol=0, atol=0)
    # Deterministic from the seed: the first state is the gym-aloha start pose, actions move away from it.
    assert not np.allclose(episode["action"][-1], episode["state"][0])

    records = json.loads((tmp_path / "demos" / "meta" / "expert_episodes.json").read_text())
    assert records[0]["seed"] == 3 and records[0]["episode_index"] == 0
    assert records[0]["success"] is False  # 12 steps cannot finish the task


def test_bad_arguments_fail_loudly(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        DemoRecordingConfig(task="fold_laundry", out=str(tmp_path))
    with pytest.raises(ValueError, match="even"):
        DemoRecordingConfig(image_height=121, out=str(tmp_path))
    with pytest.raises(SystemExit):
        main(["--task", "transfer_cube", "--out", str(tmp_path), "--image-size", "big"])


@pytest.mark.timeout(120)
def test_command_line_records_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "--task",
            "insertion",
            "--episodes",
            "1",
            "--seed",
            "0",
            "--num-steps",
            "3",
            "--image-size",
            "16x24",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "insertion: expert success 0/1 (0%; 0 still done at the end), recorded 1 episodes" in capsys.readouterr().out
    dataset = LeRobotDataset(out)
    assert dataset.task(0) == "insert the peg into the socket"
    assert dataset.frames(0, "observation.images.cam_high").shape == (3, 16, 24, 3)
    assert json.loads((out / "meta" / "demo_generation.json").read_text())[0]["task"] == "insertion"


def test_command_noise_perturbs_only_the_arms_and_falls_quiet_around_each_grasp():
    plan = plan_joint_trajectory("transfer_cube", np.array([0.1, 0.5, 0.05, 1, 0, 0, 0]))
    noise = CommandNoise(std=0.05, quiet_before=40, quiet_after=20)
    offsets = noise.sample(plan, np.random.default_rng(0))
    assert offsets.shape == plan.shape
    assert not offsets[:, list(GRIPPER_COLUMNS)].any()
    # Quiet from 40 steps before each gripper starts to close until 20 steps after.
    closing_starts = [np.flatnonzero(np.diff(plan[:, c]) < -1e-4)[0] + 1 for c in GRIPPER_COLUMNS]
    for start in closing_starts:
        assert not offsets[start - 40 : start + 20].any()
    # Before the first grasp window it is a correlated offset of about the asked size, not white noise.
    arm = offsets[20 : min(closing_starts) - 60][:, ARM_COLUMNS]
    assert 0.02 < arm.std() < 0.08
    lag_one = np.mean([np.corrcoef(arm[1:, j], arm[:-1, j])[0, 1] for j in range(arm.shape[1])])
    assert lag_one > 0.8  # exp(-0.02 s / 0.3 s) = 0.94 for this timescale
    np.testing.assert_array_equal(offsets, noise.sample(plan, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="std"):
        CommandNoise(std=-0.1)


@pytest.mark.timeout(120)
def test_noisy_episode_records_the_clean_plan_as_its_actions():
    clean = run_expert_episode("transfer_cube", 5, num_steps=80)
    noisy = run_expert_episode("transfer_cube", 5, num_steps=80, command_noise=CommandNoise(std=0.05))
    # The labels are the plan: absolute targets that lead back from wherever the noise pushed the arm.
    np.testing.assert_array_equal(noisy.actions, clean.actions)
    assert np.abs(noisy.states[40:, ARM_COLUMNS] - clean.states[40:, ARM_COLUMNS]).max() > 0.02
    np.testing.assert_allclose(
        noisy.command_offsets,
        CommandNoise(std=0.05).sample(clean.actions, np.random.default_rng([5, _COMMAND_NOISE_STREAM])),
    )
    repeat = run_expert_episode("transfer_cube", 5, num_steps=80, command_noise=CommandNoise(std=0.05))
    np.testing.assert_array_equal(repeat.states, noisy.states)


@pytest.mark.timeout(120)
def test_the_sent_commands_can_be_recorded_as_the_actions():
    clean = run_expert_episode("transfer_cube", 5, num_steps=80)
    sent = run_expert_episode(
        "transfer_cube", 5, num_steps=80, command_noise=CommandNoise(std=0.05), record_sent_commands=True
    )
    # World-model data: the labels are what the arms were sent, the plan plus the noise.
    np.testing.assert_allclose(sent.actions, clean.actions + sent.command_offsets)
    assert np.abs(sent.actions - clean.actions)[:, ARM_COLUMNS].max() > 0.02
    # The physics agrees: the arms track the recorded (sent) commands more closely than the plan.
    reached = sent.states[40:, ARM_COLUMNS]
    to_sent = np.abs(reached - sent.actions[39:-1, ARM_COLUMNS]).mean()
    to_plan = np.abs(reached - clean.actions[39:-1, ARM_COLUMNS]).mean()
    assert to_sent < 0.7 * to_plan, (to_sent, to_plan)
    with pytest.raises(ValueError, match="--command-noise"):
        DemoRecordingConfig(recorded_actions="sent")
    with pytest.raises(ValueError, match="recorded_actions"):
        DemoRecordingConfig(command_noise=0.05, recorded_actions="executed")


@pytest.mark.timeout(180)
def test_noisy_episodes_append_to_a_clean_dataset_with_parallel_workers(tmp_path, capsys):
    out = tmp_path / "demos"
    common = ["--episodes", "1", "--num-steps", "6", "--image-size", "16x24", "--out", str(out)]
    assert main(["--seed", "0", *common]) == 0
    assert (
        main(["--seed", "10", "--episodes", "2", "--command-noise", "0.05", "--append", "--workers", "2", *common[2:]])
        == 0
    )
    assert "recorded 2 episodes" in capsys.readouterr().out.splitlines()[-1]

    dataset = LeRobotDataset(out)
    assert dataset.num_episodes == 3 and dataset.info["total_frames"] == 18
    # Statistics now cover every row, old and new.
    states = np.concatenate([dataset.vectors(i)["observation.state"] for i in range(3)])
    np.testing.assert_allclose(dataset.stats["observation.state"]["mean"], states.mean(axis=0), atol=1e-5)
    assert dataset.read_table(2)["index"].to_pylist() == list(range(12, 18))
    # The appended episodes are in seed order (the pool keeps it), with the clean plan as actions.
    np.testing.assert_array_equal(
        dataset.vectors(2)["action"], run_expert_episode("transfer_cube", 11, num_steps=6).actions.astype(np.float32)
    )
    records = json.loads((out / "meta" / "expert_episodes.json").read_text())
    assert [r["seed"] for r in records] == [0, 10, 11]
    assert records[0]["command_noise_rms"] == 0 and records[1]["command_noise_rms"] > 0
    assert [c["command_noise"] for c in json.loads((out / "meta" / "demo_generation.json").read_text())] == [0.0, 0.05]
    # Appending different image sizes, or without --append, fails before anything is simulated.
    with pytest.raises(ValueError, match="16x24"):
        main(
            [
                "--seed",
                "20",
                "--append",
                "--episodes",
                "1",
                "--num-steps",
                "6",
                "--image-size",
                "32x48",
                "--out",
                str(out),
            ]
        )
    with pytest.raises(FileExistsError, match="append"):
        main(["--seed", "20", *common])


# ---------------------------------------------------------------------------------------------
# Task-agnostic random motions
# ---------------------------------------------------------------------------------------------


def _physics_at(qpos_changes: dict[int, float]):
    from motus_sim.scripted_expert import get_task, make_joint_environment

    environment = make_joint_environment("transfer_cube", get_task("transfer_cube").sample_object_pose(0))
    environment.reset()
    physics = environment.physics
    start = physics.data.qpos.copy()  # reset_context() starts from the model's qpos0, not the start pose
    for index, value in qpos_changes.items():
        start[index] = value
    with physics.reset_context():
        physics.data.qpos[:] = start
    return physics


def test_forbidden_contacts_sees_arm_table_and_arm_arm_but_not_the_start_pose():
    from motus_sim.scripted_expert import forbidden_contacts

    assert forbidden_contacts(_physics_at({})) == []  # the fingers of one gripper touching is allowed
    # qpos: 8 per arm (6 joints, 2 fingers); left shoulder forward and elbow down: the forearm meets the table
    into_table = forbidden_contacts(_physics_at({1: 1.2, 2: 1.0}))
    assert into_table and all("table" in pair for pair in into_table)
    # both arms stretched forward meet in the middle
    stretched = {1: 0.3, 2: -0.6, 4: 0.0, 9: 0.3, 10: -0.6, 12: 0.0}
    arm_arm = forbidden_contacts(_physics_at(stretched))
    assert arm_arm and all({p.split("/")[0] for p in pair} == {"vx300s_left", "vx300s_right"} for pair in arm_arm)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_motions_are_reachable_collision_free_and_move(seed):
    from motus_sim.scripted_expert import (
        forbidden_contacts,
        profile_joint_limits,
        replay_joint_trajectory,
        run_random_motion_episode,
    )

    episode = run_random_motion_episode(seed, num_steps=150)
    lower, upper = profile_joint_limits("aloha_sim")  # config/robots/aloha_sim.yaml
    assert episode.actions.shape == (150, 14)
    assert np.all(episode.actions >= lower) and np.all(episode.actions <= upper)
    # it moves: each arm travels well away from its start pose
    assert np.abs(episode.states[:, ARM_COLUMNS] - episode.states[0, ARM_COLUMNS]).max() > 0.3
    # replayed independently, no step touches what it must not
    touched = []
    replay_joint_trajectory(
        "transfer_cube",
        episode.object_pose,
        episode.actions,
        after_step=lambda step, physics: touched.extend(forbidden_contacts(physics)),
    )
    assert touched == []
    np.testing.assert_allclose(episode.states[-1, ARM_COLUMNS], episode.actions[-2, ARM_COLUMNS], atol=0.15)


def _tiny_random_motion(out, seed: int, num_steps: int, **fields) -> DemoRecordingConfig:
    """One small random-motion episode's recording config (24x32 views)."""
    return DemoRecordingConfig(
        task="random_motion",
        episodes=1,
        seed=seed,
        out=str(out),
        image_height=24,
        image_width=32,
        num_steps=num_steps,
        **fields,
    )


@pytest.mark.timeout(300)
def test_random_motion_records_as_a_lerobot_dataset(tmp_path):
    summary = record_demonstrations(_tiny_random_motion(tmp_path / "rm", seed=3, num_steps=20), show_progress=False)
    assert summary["episodes_recorded"] == 1
    dataset = LeRobotDataset(tmp_path / "rm")
    assert dataset.task(0) == "move the arms"
    assert set(dataset.camera_keys) == set(CAMERA_NAMES)
    assert dataset.vectors(0)["action"].shape == (20, 14)
    with pytest.raises(ValueError, match="command-noise"):
        DemoRecordingConfig(task="random_motion", command_noise=0.05)


# The transfer-cube demonstrations' action range (meta/stats.json of 27 scripted episodes, seeds 0-13 and 100-113)
_TRANSFER_CUBE_ACTION_MIN = [
    -0.057,
    -1.065,
    0.141,
    -0.531,
    -1.868,
    0.0,
    0.0,
    -0.308,
    -0.963,
    0.457,
    -0.574,
    -1.551,
    -0.243,
    0.0,
]
_TRANSFER_CUBE_ACTION_MAX = [0.056, 0.689, 1.303, 0.498, -0.071, 2.008, 1.0, 0.296, 0.28, 1.23, 0.51, 1.54, 0.328, 1.0]


@pytest.mark.timeout(300)
def test_random_motions_stay_in_the_envelope_of_a_tasks_demonstrations(tmp_path):
    from motus_sim.scripted_expert import RandomMotionConfig, action_envelope, plan_random_motion

    demos, _ = write_tiny_dataset(tmp_path / "demos", num_episodes=1, length=8)
    stats = json.loads((demos / "meta" / "stats.json").read_text())  # a real dataset, the task's action range
    stats["action"].update(min=_TRANSFER_CUBE_ACTION_MIN, max=_TRANSFER_CUBE_ACTION_MAX)
    (demos / "meta" / "stats.json").write_text(json.dumps(stats))
    low, high = np.array(_TRANSFER_CUBE_ACTION_MIN), np.array(_TRANSFER_CUBE_ACTION_MAX)
    envelope = action_envelope(demos)
    inside, default = (
        plan_random_motion(0, 300, config)[0] for config in (RandomMotionConfig(box=envelope), RandomMotionConfig())
    )
    # waypoints in the box, cosine steps between them (the start pose is inside too): every target in the box
    assert np.all(inside >= low - 1e-9) and np.all(inside <= high + 1e-9)
    assert np.abs(inside[:, ARM_COLUMNS] - inside[0, ARM_COLUMNS]).max() > 0.3  # and it still moves
    assert np.any(default < low - 0.1) or np.any(default > high + 0.1)  # the default box reaches further
    # recorded through generate-demos' path (worker jobs), and the envelope saved with the generation config
    config = _tiny_random_motion(tmp_path / "rm", seed=0, num_steps=60, motion_envelope=str(demos))
    record_demonstrations(config, show_progress=False)
    recorded = LeRobotDataset(tmp_path / "rm").vectors(0)["action"]
    assert np.all(recorded >= low - 1e-6) and np.all(recorded <= high + 1e-6)
    saved = json.loads((tmp_path / "rm" / "meta" / "demo_generation.json").read_text())
    assert saved[-1]["motion_envelope"] == str(demos)
    # bad input: one line naming the fix
    with pytest.raises(ValueError, match="use it with --task random_motion"):
        DemoRecordingConfig(task="transfer_cube", motion_envelope=str(demos))
    with pytest.raises(FileNotFoundError, match="no meta/stats.json"):
        DemoRecordingConfig(task="random_motion", motion_envelope=str(tmp_path / "missing"))
    stats["action"].update(min=[0.0] * 7, max=[1.0] * 7)
    (demos / "meta" / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match="14-d action"):
        DemoRecordingConfig(task="random_motion", motion_envelope=str(demos))
