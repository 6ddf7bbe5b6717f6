"""Any camera set: a dataset with only a head camera trains with `motus train` and serves on that one camera, with
the same composite in training and serving; the layout comes from the dataset's cameras or --cameras."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from training_helpers import write_tiny_dataset

from motus_model.cli import main
from motus_model.data.lerobot import ALOHA_CAMERA_KEYS, LeRobotDataset
from motus_model.data.mixture import MixtureConfig
from motus_model.data.torch_dataset import (
    DatasetSource,
    MotusTrainingDataset,
    SampleKey,
    SamplingConfig,
    camera_map_for,
    camera_role,
    dataset_camera_roles,
)
from motus_model.engine import MotusEngine
from motus_model.policy import MotusPolicy
from motus_model.preprocessing import CompositeLayout, Normalizer
from motus_model.training.config import TrainingConfig
from motus_model.training.trainer import resolve_cameras

HIGH = "observation.images.cam_high"


def test_camera_roles_follow_the_converters_key_names():
    assert [camera_role(key) for key in ALOHA_CAMERA_KEYS] == ["high", "left_wrist", "right_wrist"]
    assert camera_role("observation.images.front") == "front"
    keys = ["observation.images.cam_left_wrist", "observation.images.cam_low", HIGH, "observation.images.top2"]
    assert dataset_camera_roles(keys) == ["high", "low", "left_wrist", "top2"]  # the head first


@pytest.mark.timeout(300)
def test_a_single_head_camera_dataset_trains_and_serves_on_that_camera(tmp_path, capsys):
    dataset = tmp_path / "ds"
    _, episodes = write_tiny_dataset(dataset, num_episodes=2, length=16, camera_keys=(HIGH,))
    common = ["--preset", "motus-tiny", "--steps", "2", "--batch-size", "2", "--checkpoint-every", "0"]
    assert main(["train", "--stage", "3", "--dataset", str(dataset), "--output", str(tmp_path / "run"), *common]) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "step_0000002"
    saved = json.loads((checkpoint / "config.json").read_text())
    assert saved["cameras"] == {"roles": ["high"], "tiling": "grid"}

    engine = MotusEngine.from_pretrained(checkpoint)
    try:
        policy = MotusPolicy(engine)
        assert policy.camera_roles == ["high"]
        frame = episodes[0]["frames"][HIGH][0]
        chunk = policy.predict_action_chunk({"high": frame}, episodes[0]["state"][0])
        assert chunk.shape == (4, 14) and np.isfinite(chunk).all()
        with pytest.raises(
            ValueError, match=r"unknown camera \['left_wrist', 'right_wrist'\]\): expected roles \['high'\]"
        ):
            policy.predict_action_chunk(
                {"high": frame, "left_wrist": frame, "right_wrist": frame}, episodes[0]["state"][0]
            )
        # training saw the composite serving builds: the decoded frame, through the checkpoint's layout
        config = TrainingConfig.for_stage(3, dataset=str(dataset), output=str(tmp_path / "unused"))
        from motus_model.training.trainer import build_training_data

        training, _, _ = build_training_data(config, engine.config, MixtureConfig.single(dataset), seed=0)
        sample = training[SampleKey(0, 0, 0)]
        # (training decodes at most as wide as the composite, as build_training_data does)
        width = engine.config.latents.image_width
        decoded = LeRobotDataset(dataset, max_frame_width=width).frames(0, HIGH)[0]
        served = engine._composite({"high": decoded})
        expected = torch.from_numpy(served).permute(2, 0, 1).float() / 127.5 - 1.0
        assert torch.equal(sample["condition_image"], expected)
        assert (served != 0).all(axis=-1).mean() > 0.99  # one view fills the composite: no black padding
    finally:
        engine.close()


def test_cameras_option_picks_roles_and_a_missing_one_names_the_fix(tmp_path):
    dataset = tmp_path / "ds"
    write_tiny_dataset(dataset, num_episodes=1, length=12)
    mixture = MixtureConfig.single(dataset)
    assert resolve_cameras(TrainingConfig(dataset=str(dataset)), mixture).roles == ["high", "left_wrist", "right_wrist"]
    chosen = resolve_cameras(TrainingConfig(dataset=str(dataset), cameras="high, right_wrist"), mixture)
    assert chosen.roles == ["high", "right_wrist"] and chosen.tiling == "grid"
    assert camera_map_for(LeRobotDataset(dataset), chosen.roles) == {
        "high": HIGH,
        "right_wrist": "observation.images.cam_right_wrist",
    }
    with pytest.raises(ValueError, match=r"no camera for role\(s\) \['low'\] .*--cameras"):
        camera_map_for(LeRobotDataset(dataset), ["high", "low"])
    # a mixture's camera_map must name exactly the layout's roles
    source = DatasetSource(LeRobotDataset(dataset), camera_map={"high": HIGH}, normalizer=Normalizer.identity())
    sampling = SamplingConfig(action_chunk=4, downsample_rate=1, video_action_ratio=2)
    with pytest.raises(ValueError, match=r"camera_map of .*missing camera \['left_wrist', 'right_wrist'\]"):
        MotusTrainingDataset([source], sampling, CompositeLayout(32, 32))
    assert MotusTrainingDataset([source], sampling, CompositeLayout(32, 32, ("high",))).num_episodes == 1


@pytest.mark.timeout(240)
def test_motus_eval_renders_only_the_checkpoints_cameras(tmp_path):
    from motus_model.config import CameraConfig, MotusConfig
    from motus_model.data.video import read_video
    from motus_sim.closed_loop import ClosedLoopConfig, evaluate, model_views

    config = MotusConfig.preset("motus-tiny")
    config.cameras = CameraConfig(["high"])
    config.video.text_len = 48  # the task's instruction, byte-tokenised by the tiny umT5
    engine = MotusEngine.from_config(config, seed=0)
    try:
        run = ClosedLoopConfig(
            checkpoint="in-memory", episodes=1, max_steps=8, videos=1, imagine=0, inference_steps=1, out=str(tmp_path)
        )
        episode = evaluate(run, engine=engine, show_progress=False)["episodes"][0]
    finally:
        engine.close()
    assert episode["steps"] == 8 and episode["chunks"] == 2  # motus-tiny: a chunk covers 4 control steps
    assert read_video(tmp_path / "rollout_000.mp4").shape == (4, 120, 160, 3)  # one view, not three side by side
    with pytest.raises(ValueError, match=r"cameras \['high', 'low'\]: the scene renders only \["):
        model_views(None, (24, 32), ["high", "low"])
