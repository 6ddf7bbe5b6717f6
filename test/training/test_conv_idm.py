"""The ConvIDM baseline (``motus train-conv-idm``) and the held-out IDM comparison (``motus idm-eval``),
on a tiny LeRobot dataset with the motus-tiny layout (32x32 composite, chunk 4, 2 future frames)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from training_helpers import write_tiny_dataset

from motus_model.baselines.conv_idm import (
    ConvIDM,
    ConvIDMConfig,
    ConvIDMPredictor,
    ConvIDMTrainConfig,
    batch_tensors,
    build_data,
    train_step,
)
from motus_model.cli import main
from motus_model.config import MotusConfig
from motus_model.data.lerobot import LeRobotDataset
from motus_model.data.mixture import MixtureConfig, MixtureSampler
from motus_model.data.sampling import sample_indices
from motus_model.data.torch_dataset import SampleKey, collate_samples
from motus_model.modeling_utils import load_stats
from motus_model.preprocessing import Normalizer

PRESET = "motus-tiny"


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _train_cli(dataset, output, steps=2) -> list[str]:
    return [
        "train-conv-idm",
        "--dataset",
        str(dataset),
        "--preset",
        PRESET,
        "--output",
        str(output),
        "--steps",
        str(steps),
        "--batch-size",
        "4",
        "--warmup-steps",
        "0",
        "--log-every",
        "1",
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root, _ = write_tiny_dataset(tmp_path_factory.mktemp("conv_idm") / "ds", num_episodes=2, length=20)
    return root


@pytest.fixture(scope="module")
def motus_checkpoint(tmp_path_factory):
    """A random-weight motus-tiny checkpoint (engine folder: model, stats, text encoder, VLM)."""
    from motus_model.engine import MotusEngine

    directory = tmp_path_factory.mktemp("motus") / "ckpt"
    engine = MotusEngine.from_preset(PRESET)
    engine.save_pretrained(directory)
    engine.close()
    return directory


def test_config_follows_the_motus_preset():
    config = ConvIDMConfig.from_preset("motus-small-aloha")
    motus = MotusConfig.preset("motus-small-aloha")
    assert (config.image_height, config.image_width) == (96, 80)
    assert (config.action_chunk, config.downsample_rate, config.num_future_frames) == (16, 2, 4)
    assert config.action_chunk == motus.temporal.action_chunk
    parameters = ConvIDM(config).count_parameters()
    assert 500_000 <= parameters <= 2_000_000, parameters
    with pytest.raises(ValueError, match="num_future_frames"):
        ConvIDMConfig(action_chunk=16, num_future_frames=3, video_action_ratio=4)
    with pytest.raises(ValueError, match="motus-tny|unknown|did you mean"):
        ConvIDMConfig.from_preset("motus-tny")


@pytest.mark.timeout(120)
def test_same_samples_as_motus_and_overfits_a_fixed_batch(dataset, tmp_path):
    from motus_model.training.config import TrainingConfig
    from motus_model.training.trainer import build_training_data

    config = ConvIDMTrainConfig(dataset=str(dataset), preset=PRESET, output=str(tmp_path / "run"))
    motus_config = MotusConfig.preset(PRESET)
    data, sampler, stats = build_data(config, motus_config)
    # the same samples as `motus train --stage 3` builds
    motus_data, _, _ = build_training_data(
        TrainingConfig.for_stage(3, dataset=str(dataset), preset=PRESET), motus_config, MixtureConfig.single(dataset), 0
    )
    key = SampleKey(0, 1, 3)
    mine, theirs = data[key], motus_data[key]
    for name in ("condition_image", "future_images", "state", "actions"):
        assert torch.equal(mine[name], theirs[name]), name
    assert mine["future_images"].shape == (2, 3, 32, 32) and mine["actions"].shape == (4, 14)
    assert set(stats["stats"]) == {"state", "action"} and stats["mode"] == "mean_std"

    torch.manual_seed(0)
    model = ConvIDM(ConvIDMConfig.from_preset(PRESET, dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = batch_tensors(collate_samples([data[k] for k in sampler.keys_for_step(0, 8)]))
    losses = [train_step(model, optimizer, batch)["loss"] for _ in range(60)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])


@pytest.mark.timeout(120)
def test_train_command_writes_a_loadable_folder(dataset, tmp_path, capsys):
    output = tmp_path / "conv"
    assert main(_train_cli(dataset, output, steps=3)) == 0
    summary = _last_json(capsys)
    assert summary["steps"] == 3 and summary["stopped_by"] == "steps"
    assert math.isfinite(summary["final_loss"]) and summary["wall_clock_s"] >= 0
    for name in ("config.json", "model.safetensors", "stats.json", "training_config.json", "metrics.jsonl"):
        assert (output / name).is_file(), name
    assert len((output / "metrics.jsonl").read_text().splitlines()) == 3
    stats = json.loads((output / "stats.json").read_text())
    source = LeRobotDataset(dataset).stats
    np.testing.assert_allclose(stats["stats"]["action"]["mean"], source["action"]["mean"])
    np.testing.assert_allclose(stats["stats"]["state"]["std"], source["observation.state"]["std"])
    model, loaded_stats = ConvIDM.from_pretrained(output), load_stats(output)
    assert loaded_stats == stats and model.config.preset == PRESET

    # a wall-clock budget without --steps stops the run (here: at once) and still saves
    assert (
        main(
            [
                "train-conv-idm",
                "--dataset",
                str(dataset),
                "--preset",
                PRESET,
                "--output",
                str(tmp_path / "budget"),
                "--max-minutes",
                "1e-9",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    summary = _last_json(capsys)
    assert summary["stopped_by"] == "max_minutes" and summary["steps"] == 0
    assert (tmp_path / "budget" / "model.safetensors").is_file()


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    config = ConvIDMConfig.from_preset(PRESET)
    model = ConvIDM(config).eval()
    stats = {
        "mode": "mean_std",
        "eps": 1e-6,
        "stats": {"state": {"mean": [0.1] * 14, "std": [2.0] * 14}, "action": {"mean": [-0.2] * 14, "std": [0.5] * 14}},
    }
    model.save_pretrained(tmp_path / "m", stats=stats)
    loaded, loaded_stats = ConvIDM.from_pretrained(tmp_path / "m"), load_stats(tmp_path / "m")
    assert loaded_stats == stats
    generator = torch.Generator().manual_seed(0)
    inputs = (
        torch.rand(3, 3, 32, 32, generator=generator) * 2 - 1,
        torch.rand(3, 2, 3, 32, 32, generator=generator) * 2 - 1,
        torch.randn(3, 14, generator=generator),
    )
    with torch.no_grad():
        assert torch.equal(model(*inputs), loaded(*inputs))

    # the robot-unit predictor: raw state in, raw actions out, through the saved normaliser
    predictor = ConvIDMPredictor.from_pretrained(tmp_path / "m")
    rng = np.random.default_rng(0)
    views = lambda: {
        role: rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for role in ("high", "left_wrist", "right_wrist")
    }
    images, future, state = views(), [views(), views()], rng.normal(size=14).astype(np.float32)
    condition, future_t, state_t = predictor.inputs(images, future, state)
    np.testing.assert_allclose(state_t[0].numpy(), (state - 0.1) / (2.0 + 1e-6), rtol=1e-5)
    with torch.no_grad():
        expected = loaded(condition, future_t, state_t)[0].numpy() * (0.5 + 1e-6) - 0.2
    np.testing.assert_allclose(predictor.predict(images, future, state), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="future_frames"):
        predictor.predict(images, future[:1], state)


@pytest.mark.timeout(180)
def test_idm_eval_reports_three_methods(dataset, motus_checkpoint, tmp_path, capsys):
    conv = tmp_path / "conv"
    assert main(_train_cli(dataset, conv, steps=2)) == 0
    capsys.readouterr()
    out = tmp_path / "eval" / "idm.json"
    args = [
        "idm-eval",
        "--dataset",
        str(dataset),
        "--motus",
        str(motus_checkpoint),
        "--conv-idm",
        str(conv),
        "--samples",
        "5",
        "--seed",
        "0",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    report = _last_json(capsys)
    assert json.loads(out.read_text()) == report
    assert set(report["methods"]) == {"motus_idm", "conv_idm", "hold_state"}
    assert report["samples"] == 5 and report["layout"]["action_chunk"] == 4
    for name, metrics in report["methods"].items():
        for metric in ("mae_arm_rad", "mae_gripper", "nmse", "mae_arm_rad_sem"):
            assert math.isfinite(metrics[metric]) and metrics[metric] >= 0, (name, metric)
        assert len(metrics["mae_arm_rad_by_step"]) == 4
    assert "ConvIDM" in report["normalised_with"]

    # hold-state numbers recomputed by hand from the parquet columns and the training rows
    source = LeRobotDataset(dataset)
    lengths = [source.episode_length(e) for e in range(source.num_episodes)]
    keys = MixtureSampler(MixtureConfig.single(dataset), [lengths], 4, 1, seed=0).keys_for_step(0, 5)
    arm = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
    errors, squared = [], []
    normalizer = Normalizer.from_dict(json.loads((conv / "stats.json").read_text()))
    for key in keys:
        vectors = source.vectors(key.episode)
        rows = sample_indices(key.condition, lengths[key.episode], 4, 1, 2)
        target = vectors["action"][rows.action_rows]
        hold = np.tile(vectors["observation.state"][rows.condition], (4, 1))
        errors.append(np.abs(hold - target)[:, arm].mean())
        squared.append(((normalizer.normalize("action", hold) - normalizer.normalize("action", target)) ** 2).mean())
    assert report["methods"]["hold_state"]["mae_arm_rad"] == pytest.approx(float(np.mean(errors)), rel=1e-5)
    assert report["methods"]["hold_state"]["nmse"] == pytest.approx(float(np.mean(squared)), rel=1e-4)

    # the same seed draws the same samples and the same Motus noise: identical report
    assert main(args[:-2]) == 0
    again = _last_json(capsys)
    for name in report["methods"]:
        assert again["methods"][name]["mae_arm_rad"] == report["methods"][name]["mae_arm_rad"]


def test_bad_inputs_give_clear_errors(dataset, motus_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(_train_cli(tmp_path / "nowhere", tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="not a LeRobot dataset"):
        (tmp_path / "empty").mkdir()
        main(_train_cli(tmp_path / "empty", tmp_path / "out"))
    with pytest.raises(ValueError, match="did you mean|unknown"):
        main(["train-conv-idm", "--dataset", str(dataset), "--preset", "motus-tny", "--output", str(tmp_path / "o")])

    # a ConvIDM of another preset than the Motus checkpoint
    small = tmp_path / "conv_small"
    ConvIDM(ConvIDMConfig.from_preset("motus-small-aloha")).save_pretrained(small)
    with pytest.raises(ValueError, match="preset mismatch.*motus-small-aloha.*action_chunk: conv IDM 16 vs Motus 4"):
        main(
            [
                "idm-eval",
                "--dataset",
                str(dataset),
                "--motus",
                str(motus_checkpoint),
                "--conv-idm",
                str(small),
                "--samples",
                "2",
            ]
        )
    with pytest.raises(FileNotFoundError, match="--dataset .* does not exist"):
        main(["idm-eval", "--dataset", str(tmp_path / "nowhere"), "--conv-idm", str(small), "--samples", "2"])
    with pytest.raises(FileNotFoundError, match="--conv-idm .* does not exist"):
        main(["idm-eval", "--dataset", str(dataset), "--conv-idm", str(tmp_path / "nowhere")])
    with pytest.raises(ValueError, match="not a ConvIDM config"):
        main(["idm-eval", "--dataset", str(dataset), "--conv-idm", str(motus_checkpoint)])
    with pytest.raises(ValueError, match="--motus and/or --conv-idm"):
        main(["idm-eval", "--dataset", str(dataset)])
