"""The three stages end to end through the ``motus`` CLI, on a tiny dataset:

stats -> train-latent-vae -> latent-actions -> train stage 1 -> stage 2 (latent actions, from stage 1)
-> stage 3 (real actions, from stage 2, action encoder/decoder re-initialised) -> the serving engine
loads the stage-3 checkpoint and answers a VLA request in raw units.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_helpers import write_tiny_dataset

from motus_model.cli import main
from motus_model.conditioning import build_tiny_qwen3_vl, build_tiny_umt5
from motus_model.config import MotusConfig
from motus_model.data.lerobot import LeRobotDataset
from motus_model.modeling_motus import MotusModel
from motus_model.training.trainer import load_stage_weights


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "step_0000002" / "model.safetensors"))


@pytest.mark.timeout(300)
def test_three_stages_through_the_cli(tmp_path, capsys, caplog):
    dataset = tmp_path / "ds"
    write_tiny_dataset(dataset, num_episodes=2, length=16)
    build_tiny_umt5(24, directory=tmp_path / "te")
    build_tiny_qwen3_vl(24, directory=tmp_path / "vlm")
    encoders = ["--text-encoder", str(tmp_path / "te"), "--vlm", str(tmp_path / "vlm")]
    common = [
        "--preset",
        "motus-tiny",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "0",
        "--warmup-steps",
        "0",
        "--lr",
        "1e-3",
        *encoders,
    ]

    assert main(["stats", "--dataset", str(dataset)]) == 0
    # state and action statistics computed; the statistics LeRobot writes per episode (cameras, indices) are kept
    assert {"observation.state", "action"} <= set(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))

    assert (
        main(
            [
                "train-latent-vae",
                "--labelled",
                str(dataset),
                "--output",
                str(tmp_path / "vae"),
                "--steps",
                "3",
                "--batch-size",
                "4",
                "--shape",
                "tiny",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "latent-actions",
                "--dataset",
                str(dataset),
                "--vae",
                str(tmp_path / "vae"),
                "--out",
                str(tmp_path / "ds_latent"),
            ]
        )
        == 0
    )
    assert "latent_action" in LeRobotDataset(tmp_path / "ds_latent").vector_keys
    assert "latent_action" not in LeRobotDataset(dataset).vector_keys  # --out leaves the source alone

    # stage 1: video only; action and understanding experts frozen
    assert main(["train", "--stage", "1", "--dataset", str(dataset), "--output", str(tmp_path / "run1"), *common]) == 0
    stage1 = _weights(tmp_path / "run1")
    torch.manual_seed(0)
    init = MotusModel(
        MotusConfig.from_dict({**MotusConfig.preset("motus-tiny").to_dict(), "training_mode": "pretrain"})
    )
    init_state = init.state_dict()
    assert all(torch.equal(stage1[k], init_state[k]) for k in stage1 if k.startswith(("action_expert.", "und_expert.")))
    assert not torch.equal(stage1["video.blocks.0.self_attn.q.weight"], init_state["video.blocks.0.self_attn.q.weight"])
    assert (
        json.loads((tmp_path / "run1/checkpoints/step_0000002/config.json").read_text())["training_mode"] == "pretrain"
    )

    # stage 2: latent actions, every expert trains, starts from stage 1
    assert (
        main(
            [
                "train",
                "--stage",
                "2",
                "--dataset",
                str(tmp_path / "ds_latent"),
                "--output",
                str(tmp_path / "run2"),
                "--init-from",
                str(tmp_path / "run1/checkpoints/step_0000002"),
                *common,
            ]
        )
        == 0
    )
    stage2 = _weights(tmp_path / "run2")
    assert not torch.equal(stage2["action_expert.blocks.0.o.weight"], stage1["action_expert.blocks.0.o.weight"])
    stats2 = json.loads((tmp_path / "run2/checkpoints/step_0000002/stats.json").read_text())
    latent_stats = LeRobotDataset(tmp_path / "ds_latent").stats["latent_action"]
    np.testing.assert_allclose(stats2["stats"]["action"]["mean"], latent_stats["mean"])

    # stage 3: real actions, finetune mode, from stage 2
    assert (
        main(
            [
                "train",
                "--stage",
                "3",
                "--dataset",
                str(dataset),
                "--output",
                str(tmp_path / "run3"),
                "--init-from",
                str(tmp_path / "run2/checkpoints/step_0000002"),
                "--lr-cycle-steps",
                "2",
                "--lr-min-factor",
                "0.05",
                "--state-noise-std",
                "0.5",
                "--episode-start-fraction",
                "0.5",
                "--episode-start-rows",
                "4",
                "--max-minutes",
                "60",
                *common,
            ]
        )
        == 0
    )
    assert "stopped at steps=2" in caplog.text  # the steps ran out long before the minutes: said, not silent
    run3_config = json.loads((tmp_path / "run3/training_config.json").read_text())
    assert (run3_config["lr_cycle_steps"], run3_config["lr_f_min"]) == (2, 0.05)
    assert (
        run3_config["state_noise_std"],
        run3_config["episode_start_fraction"],
        run3_config["episode_start_rows"],
    ) == (0.5, 0.5, 4)
    checkpoint = tmp_path / "run3/checkpoints/step_0000002"
    # given encoder folders are linked into the checkpoint, not copied
    assert (checkpoint / "text_encoder").is_symlink() and (checkpoint / "text_encoder").resolve() == (
        tmp_path / "te"
    ).resolve()
    stage3 = _weights(tmp_path / "run3")
    assert "action_expert.registers" in stage3 and "action_expert.registers" not in stage2
    # A run continues from its saved config (which names the output folder); the flags given override it.
    assert (
        main(
            [
                "train",
                "--stage",
                "3",
                "--config",
                str(tmp_path / "run3/training_config.json"),
                "--steps",
                "3",
                "--resume",
            ]
        )
        == 0
    )
    assert (tmp_path / "run3/checkpoints/step_0000003").is_dir()
    assert json.loads((tmp_path / "run3/training_config.json").read_text())["steps"] == 3
    # --output RUN --resume alone continues it the same way (the run's saved config, the flags given on top)
    assert main(["train", "--stage", "3", "--output", str(tmp_path / "run3"), "--steps", "4", "--resume"]) == 0
    assert (tmp_path / "run3/checkpoints/step_0000004").is_dir()
    saved = (tmp_path / "run3/training_config.json").read_text()
    assert json.loads(saved)["steps"] == 4 and json.loads(saved)["init_from"] == run3_config["init_from"]
    # settings that build another model are refused in one line, and the run's record stays as it was
    with pytest.raises(ValueError, match="--resume: .*another model than these settings build"):
        main(["train", "--stage", "3", "--output", str(tmp_path / "run3"), "--action-modulation", "--resume"])
    assert (tmp_path / "run3/training_config.json").read_text() == saved
    with pytest.raises(ValueError, match="--output"):
        main(["train", "--stage", "3", "--dataset", str(dataset), *common])

    from motus_model.engine import MotusEngine, MotusRequest

    engine = MotusEngine.from_pretrained(checkpoint)
    try:
        episode = LeRobotDataset(dataset).load_episode(0)
        images = {
            role: episode["frames"][f"observation.images.cam_{role}"][0]
            for role in ("high", "left_wrist", "right_wrist")
        }
        result = engine.infer(
            MotusRequest(
                mode="vla", images=images, state=episode["observation.state"][0], instruction="task 0", seed=0
            ),
            timeout=60,
        )
    finally:
        engine.close()
    assert result.actions.shape == (4, 14) and np.all(np.isfinite(result.actions))


def test_stage3_reinitialises_action_encoder_and_decoder():
    pretrain = MotusConfig.from_dict({**MotusConfig.preset("motus-tiny").to_dict(), "training_mode": "pretrain"})
    torch.manual_seed(1)
    previous = MotusModel(pretrain).state_dict()
    torch.manual_seed(2)
    model = MotusModel(MotusConfig.preset("motus-tiny"))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_stage_weights(model, previous, ["action_expert.action_encoder.", "action_expert.head."])
    state = model.state_dict()
    assert report["reinitialised"] and all(
        k.startswith(("action_expert.action_encoder.", "action_expert.head.")) for k in report["reinitialised"]
    )
    assert set(report["new"]) == {
        k for k in state if k.startswith(("action_expert.state_encoder.", "action_expert.registers"))
    }
    for key in report["reinitialised"] + report["new"]:
        assert torch.equal(state[key], fresh[key]), key
    for key in report["loaded"]:
        assert torch.equal(state[key], previous[key]), key
    assert "video.blocks.0.self_attn.q.weight" in report["loaded"]
    bad = dict(previous)
    bad["video.blocks.0.self_attn.q.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="mis-shaped"):
        load_stage_weights(MotusModel(MotusConfig.preset("motus-tiny")), bad, [])


@pytest.mark.parametrize("previous_mode", ["pretrain", "finetune"])
def test_reinitialising_a_stage3_checkpoints_action_head_is_warned(tmp_path, caplog, previous_mode):
    """Stage 3 from a stage-2 checkpoint re-initialises the latent-action encoder/head (expected, no warning); from a
    stage-3 checkpoint the same prefixes would discard the trained policy: the trainer says so."""
    from motus_model.training.config import TrainingConfig
    from motus_model.training.trainer import build_model

    config = MotusConfig.from_dict({**MotusConfig.preset("motus-tiny").to_dict(), "training_mode": previous_mode})
    MotusModel(config).save_pretrained(tmp_path / "previous")
    training = TrainingConfig.for_stage(3)
    training.init_from = str(tmp_path / "previous")
    with caplog.at_level("WARNING", logger="motus_model.training.trainer"):
        build_model(training)
    warned = [record for record in caplog.records if "discards its trained action encoder/head" in record.message]
    assert bool(warned) == (previous_mode == "finetune")


def test_a_fine_tune_inherits_the_encoders_and_codec_of_its_initial_checkpoint(tmp_path):
    """Initialised from a checkpoint, training must encode with that checkpoint's frozen text encoder, VLM and
    video codec (new random ones would change every conditioning feature the weights learned from); a folder the
    config names explicitly still wins, and without init_from nothing is inherited."""
    from motus_model.pipeline_motus import MotusPipeline
    from motus_model.training.config import TrainingConfig
    from motus_model.training.trainer import inherited_encoder_paths

    MotusPipeline.from_preset("motus-small-aloha-pca", seed=5).save_pretrained(tmp_path / "previous")
    training = TrainingConfig.for_stage(3)
    assert inherited_encoder_paths(training) == ("", "", "")
    training.init_from = str(tmp_path / "previous")
    assert inherited_encoder_paths(training) == tuple(
        str(tmp_path / "previous" / folder) for folder in ("text_encoder", "vlm", "vae")
    )
    training.vlm_path = str(tmp_path / "my_vlm")
    assert inherited_encoder_paths(training)[1] == str(tmp_path / "my_vlm")
