"""Latent actions that carry motion: stride, camera, the data's flow scale, delta alignment, the held-out
R^2 probe, mismatch refusals and atomic labelling; and the task-agnostic random-motion generator."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from motus_model.cli import main
from motus_model.data.lerobot import LeRobotDataset, LeRobotDatasetWriter
from motus_model.latent_actions import LatentActionVAE, LatentActionVAEConfig, label_dataset
from motus_model.latent_actions.train import (
    episode_frames,
    episode_targets,
    fit_latent_action_vae,
    linear_probe_r2,
    near_white_share,
)

SIZE = (48, 64)  # recorded frames (H, W)


def texture(seed: int, height: int, width: int) -> np.ndarray:
    """Blurred noise: enough texture for DIS flow, smooth enough for H.264 at this size."""
    rng = np.random.default_rng(seed)
    noise = (rng.random((height, width)) * 255).astype(np.uint8)
    gray = cv2.GaussianBlur(noise, (0, 0), 2.0)
    gray = cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX)
    return np.repeat(gray[..., None], 3, axis=2)


def write_moving_dataset(root, episodes: int = 3, length: int = 48, seed: int = 0):
    """The high camera looks at a texture that pans by the position in action[0:2] (pixels); the wrist views are
    static. Velocity changes every 12 frames, so the action delta over a stride is what the flow sees."""
    rng = np.random.default_rng(seed)
    big = texture(seed, SIZE[0] + 80, SIZE[1] + 80)
    still = texture(seed + 1, *SIZE)
    writer = LeRobotDatasetWriter(root, fps=50)
    for _ in range(episodes):
        velocity = np.repeat(rng.uniform(-1.2, 1.2, size=(length // 12 + 1, 2)), 12, axis=0)[:length]
        position = np.cumsum(velocity, axis=0)
        position -= position.min(axis=0) - 2
        position = np.minimum(position, 76)
        frames = np.stack(
            [big[int(round(y)) : int(round(y)) + SIZE[0], int(round(x)) : int(round(x)) + SIZE[1]] for x, y in position]
        )
        action = np.zeros((length, 14), dtype=np.float32)
        action[:, 0:2] = np.round(position)
        action[:, 2:] = rng.normal(size=12)  # constant per episode
        views = {
            "observation.images.cam_high": frames,
            "observation.images.cam_left_wrist": np.repeat(still[None], length, axis=0),
            "observation.images.cam_right_wrist": np.repeat(still[None], length, axis=0),
        }
        writer.add_episode(views, action.copy(), action, "pan")
    writer.finalize()
    return root


def tiny_config(**changes) -> LatentActionVAEConfig:
    return LatentActionVAEConfig(**{"image_size": 16, "frame_stride": 4, "labelled_fraction": 0.5, **changes})


def test_targets_are_deltas_over_the_stride():
    action = np.arange(10, dtype=np.float32)[:, None] ** 2 * np.ones((1, 3))
    state = -action
    vectors = {"action": action, "observation.state": state}
    deltas = episode_targets(vectors, "action_delta", stride=3)
    # rows before the stride see the motion since row 0, as the flow pairs (max(r - stride, 0), r) do
    np.testing.assert_allclose(deltas[:, 0], [0, 1, 4, 9, 15, 21, 27, 33, 39, 45])
    np.testing.assert_allclose(episode_targets(vectors, "state_delta", stride=3), -deltas)
    np.testing.assert_allclose(episode_targets(vectors, "action", stride=3), action)
    np.testing.assert_allclose(episode_targets(vectors, "action_delta", stride=3, every=4), deltas[::4])


def test_linear_probe_r2():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(400, 3))
    y[:, 2] = 5.0  # a joint that never moves is left out, not scored
    mixing = rng.normal(size=(3, 14))
    x = y @ mixing + 0.01 * rng.normal(size=(400, 14))
    probe = linear_probe_r2(x[:300], y[:300], x[300:], y[300:])
    assert probe["r2"] > 0.99 and probe["r2_per_dim"][2] is None and probe["test_rows"] == 100
    assert probe["r2_mean_per_dim"] == pytest.approx(np.mean(probe["r2_per_dim"][:2]))
    unrelated = linear_probe_r2(rng.normal(size=(300, 14)), y[:300], rng.normal(size=(100, 14)), y[300:])
    assert unrelated["r2"] < 0.1


@pytest.mark.timeout(300)
def test_fit_scales_flow_to_the_data_and_reports_a_held_out_probe(tmp_path):
    root = write_moving_dataset(tmp_path / "pan")
    config = tiny_config(flow_max_radius=100.0, camera_key="high")
    metrics = fit_latent_action_vae(config, [root], [], tmp_path / "vae", steps=20, batch_size=16, learning_rate=3e-3)
    saved = json.loads((tmp_path / "vae" / "config.json").read_text())
    on_disk = json.loads((tmp_path / "vae" / "metrics.json").read_text())
    assert on_disk["probe"]["r2"] == pytest.approx(metrics["probe"]["r2"])
    # the radius is the data's 99th percentile, saved with the VAE; the pan moves ~1.2 px a frame x 4 frames
    assert saved["flow_max_radius"] == pytest.approx(metrics["flow_magnitude_percentiles"]["p99"])
    assert 1.0 < saved["flow_max_radius"] < 10.0
    assert (saved["fps"], saved["flow_width"], saved["frame_stride"]) == (50.0, SIZE[1], 4)
    assert saved["camera_key"] == "observation.images.cam_high"
    # at a scale far above the motion most pixels code as white; at the data's scale far fewer do
    white = metrics["near_white_share"]
    assert white["at_given_radius"] > 0.5 and white["at_data_radius"] < white["at_given_radius"] / 2
    # one of three episodes is held out, the probe is scored on all of its rows
    (held,) = metrics["heldout_episodes"].values()
    assert len(held) == 1 and metrics["probe"]["test_rows"] == 48
    assert metrics["training_rows"]["labelled"] == 2 * 48
    assert np.isfinite(metrics["probe"]["r2"])
    # only the panned dims (0, 1) move, the others are dropped from the probe
    assert metrics["probe"]["r2_per_dim"][2:] == [None] * 12


@pytest.mark.timeout(600)
def test_probe_of_a_trained_vae_sees_the_pan(tmp_path):
    """The latent trained with delta alignment predicts the held-out pan velocity linearly."""
    root = write_moving_dataset(tmp_path / "pan", episodes=4)
    config = tiny_config(kl_weight=1e-4)
    metrics = fit_latent_action_vae(
        config, [root], [], tmp_path / "vae", steps=150, batch_size=16, learning_rate=3e-3, holdout_fraction=0.25
    )
    assert metrics["probe"]["r2"] > 0.5, metrics["probe"]


def test_composite_camera_composes_the_three_views(tmp_path):
    root = write_moving_dataset(tmp_path / "pan", episodes=1, length=8)
    dataset = LeRobotDataset(root)
    frames = episode_frames(dataset, 0, tiny_config(camera_key="composite", flow_width=64))
    # head 48x64 on top, the two 24x32 wrist views below
    assert frames.shape == (8, 72, 64, 3)
    np.testing.assert_allclose(
        frames[:, :48].astype(float), dataset.frames(0, "observation.images.cam_high").astype(float), atol=2
    )


def test_near_white_share():
    images = np.full((1, 2, 2, 3), 255, dtype=np.uint8)
    images[0, 0, 0] = (255, 120, 120)
    assert near_white_share(images) == 0.75


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"fps": 25.0}, ["25 fps", "50 fps", "stride"]),
        ({"camera_key": "observation.images.cam_low"}, ["cam_low", "--camera"]),
        ({"latent_dim": 7}, ["14-d", "7-d"]),
    ],
)
def test_labelling_refuses_a_vae_that_does_not_fit(tmp_path, changes, words):
    root = write_moving_dataset(tmp_path / "pan", episodes=1, length=8)
    model = LatentActionVAE(tiny_config(**changes))
    with pytest.raises(ValueError) as error:
        label_dataset(root, model)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message
    assert "latent_action" not in LeRobotDataset(root).info["features"]


@pytest.mark.timeout(120)
def test_cli_refuses_a_mismatched_stride_in_one_line(tmp_path, capsys):
    root = write_moving_dataset(tmp_path / "pan", episodes=1, length=8)
    LatentActionVAE(tiny_config()).save_pretrained(tmp_path / "vae")
    argv = ["latent-actions", "--dataset", str(root), "--vae", str(tmp_path / "vae"), "--stride", "2"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--stride 2" in lines[0] and "stride 4" in lines[0], lines


@pytest.mark.timeout(120)
def test_interrupted_labelling_leaves_the_dataset_as_it_was(tmp_path, monkeypatch):
    import motus_model.data.lerobot as lerobot

    root = write_moving_dataset(tmp_path / "pan", episodes=2, length=8)
    before = {path.name: path.read_bytes() for path in root.rglob("*") if path.is_file()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lerobot, "write_stats", interrupted)  # the last write before the swap
    with pytest.raises(KeyboardInterrupt):
        label_dataset(root, LatentActionVAE(tiny_config()))
    after = {path.name: path.read_bytes() for path in root.rglob("*") if path.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pan"]  # no staging folder left behind
    table = pq.read_table(next((root / "data").rglob("*.parquet")))
    assert "latent_action" not in table.column_names


@pytest.mark.timeout(120)
def test_interrupted_labelling_into_out_leaves_no_half_dataset(tmp_path, monkeypatch):
    import motus_model.latent_actions as latent_actions

    root = write_moving_dataset(tmp_path / "pan", episodes=1, length=8)
    LatentActionVAE(tiny_config()).save_pretrained(tmp_path / "vae")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(latent_actions, "label_dataset", interrupted)
    out = tmp_path / "labelled"
    with pytest.raises(KeyboardInterrupt):
        main(["latent-actions", "--dataset", str(root), "--vae", str(tmp_path / "vae"), "--out", str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pan", "vae"]


@pytest.mark.timeout(300)
def test_cli_train_options_reach_the_saved_vae(tmp_path, capsys):
    root = write_moving_dataset(tmp_path / "pan", episodes=3, length=16)
    common = ["train-latent-vae", "--labelled", str(root), "--shape", "tiny", "--steps", "2", "--batch-size", "4"]
    fixed = [*common, "--output", str(tmp_path / "fixed"), "--stride", "2", "--camera", "high"]
    assert main([*fixed, "--flow-max-radius", "8", "--align", "action"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "fixed" / "config.json").read_text())
    assert saved["flow_max_radius"] == 8.0 and saved["flow_scale_percentile"] is None  # a fixed scale stays fixed
    assert (saved["frame_stride"], saved["camera_key"], saved["alignment_target"]) == (
        2,
        "observation.images.cam_high",
        "action",
    )
    assert printed["probe_r2"] == json.loads((tmp_path / "fixed" / "metrics.json").read_text())["probe"]["r2"]
    assert main([*common, "--output", str(tmp_path / "scaled")]) == 0
    scaled = json.loads((tmp_path / "scaled" / "config.json").read_text())
    assert scaled["flow_scale_percentile"] == 99.0 and scaled["flow_max_radius"] != 8.0
    assert (scaled["frame_stride"], scaled["alignment_target"]) == (4, "action_delta")
    # a --config contradicted by an option is refused in one line
    (tmp_path / "c.json").write_text(json.dumps(tiny_config().to_dict()))
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--output", str(tmp_path / "x"), "--config", str(tmp_path / "c.json"), "--stride", "1"])
    assert exit_info.value.code == 2 and "--stride 1 vs 4" in capsys.readouterr().err
