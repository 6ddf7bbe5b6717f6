"""``motus eval-generative``: the generative modes against repeat-last / hold-still on held-out samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from training_helpers import write_tiny_dataset

from motus_model.cli import main
from motus_model.config import MotusConfig
from motus_model.data.lerobot import LeRobotDataset
from motus_model.data.mixture import MixtureConfig, MixtureSampler
from motus_model.data.sampling import sample_indices
from motus_model.data.torch_dataset import ALOHA_CAMERA_MAP
from motus_model.preprocessing import CompositeLayout, compose_views
from motus_model.training.generative_eval import MOVING_THRESHOLD, frame_errors, paired_action_gap

PRESET = "motus-tiny"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root, _ = write_tiny_dataset(tmp_path_factory.mktemp("gen_eval") / "ds", num_episodes=2, length=20)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from motus_model.engine import MotusEngine

    directory = tmp_path_factory.mktemp("motus") / "ckpt"
    engine = MotusEngine.from_preset(PRESET)
    with torch.no_grad():  # heads that write something: with zero heads every sampler returns its noise
        torch.manual_seed(0)
        for head in (engine.model.video.head.head, engine.model.action_expert.head.head):
            torch.nn.init.normal_(head.weight, std=0.1)
    engine.save_pretrained(directory)
    engine.close()
    return directory


def test_frame_errors_score_the_moving_pixels_only():
    condition = np.zeros((4, 4, 3), dtype=np.uint8)
    truth = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    truth[0, 0, 0] = 255  # one pixel moves at horizon 1, none at horizon 2
    predicted = np.zeros_like(truth)
    errors = frame_errors(predicted, truth, condition)
    assert errors["moving_count"].tolist() == [1.0, 0.0]
    assert errors["moving_sum"].tolist() == pytest.approx([1.0, 0.0])  # the moving pixel entirely missed
    assert errors["full"].tolist() == pytest.approx([1.0 / 16, 0.0])
    assert frame_errors(truth, truth, condition)["moving_sum"].tolist() == [0.0, 0.0]


def test_paired_action_gap_separates_a_consistent_gap_from_noise():
    rng = np.random.default_rng(1)
    count = np.full(2, 50.0)  # 50 moving pixels at each of 2 horizons

    def errors(sums: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return [(np.zeros(2), np.array([s / 2, s / 2]), count) for s in sums]

    true = rng.uniform(1.0, 3.0, size=20)
    worse = true * 1.1  # 10% worse on every sample
    noisy = true * rng.choice([0.8, 1.2], size=20)  # as often better as worse: no gap to find
    gaps = paired_action_gap({"true": errors(true), "worse": errors(worse), "noisy": errors(noisy)}, "true")
    assert gaps["worse"]["gap"] == pytest.approx(0.1, abs=1e-4)
    assert gaps["worse"]["samples_reference_better"] == gaps["worse"]["samples_compared"] == 20
    assert gaps["worse"]["sign_test_p"] == pytest.approx(0.5**20, abs=1e-6)
    assert gaps["worse"]["gap_ci95"][0] == pytest.approx(0.1, abs=1e-3)  # every resample has the same ratio
    noisy_gap = gaps["noisy"]
    expected = float(noisy.sum() / true.sum() - 1)
    assert noisy_gap["gap"] == pytest.approx(expected, abs=1e-4)
    assert noisy_gap["gap_ci95"][0] < expected < noisy_gap["gap_ci95"][1]
    assert noisy_gap["gap_ci95"][0] < 0 < noisy_gap["gap_ci95"][1]
    assert noisy_gap["sign_test_p"] > 0.05


@pytest.mark.timeout(300)
def test_eval_generative_reports_every_mode_against_its_baselines(dataset, checkpoint, tmp_path, capsys):
    out, strip = tmp_path / "gen.json", tmp_path / "img" / "strip.png"
    args = ["eval-generative", "--checkpoint", str(checkpoint), "--dataset", str(dataset), "--samples", "3"]
    assert main([*args, "--steps", "1", "--out", str(out), "--strip", str(strip)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    report = json.loads(printed[0])
    assert json.loads(out.read_text()) == report
    assert any(line.startswith("| repeat_last |") for line in printed)  # the markdown table
    expected = {
        "world_model_true_actions",
        "world_model_other_actions",
        "world_model_hold",
        "video_generation",
        "repeat_last",
    }
    assert set(report["frames"]) == expected
    # with one Euler step a sample is the conditional mean: the two scores agree to the digit; with more steps
    # the samples change and the conditional mean does not
    assert report["frames_expected"] == report["frames"]
    assert main([*args, "--steps", "3"]) == 0
    three_steps = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert three_steps["frames_expected"] == report["frames_expected"]
    assert three_steps["frames"]["video_generation"] != report["frames"]["video_generation"]
    repeat_rows = [line for line in printed if line.startswith("| repeat_last |")]
    # the sampled and expected frame tables (errors), then the two paired-gap tables (percentages)
    assert [row.split("|")[2].strip()[-1] != "%" for row in repeat_rows[:2]] == [True, True]
    assert [row.split("|")[2].strip().split(" ")[0][-1] for row in repeat_rows[2:]] == ["%", "%"]
    assert set(report["idm"]) == {"motus_idm", "hold_state"}
    assert set(report["action_gap"]) == set(report["action_gap_expected"]) == expected - {"world_model_true_actions"}
    assert report["action_gap_expected"] == report["action_gap"]  # one Euler step: the same errors
    config = MotusConfig.preset(PRESET)
    assert len(report["horizon_control_steps"]) == config.temporal.num_video_frames

    # repeat-last recomputed by hand from the dataset, on the samples idm-eval draws (same seed and count)
    layout = CompositeLayout.from_config(config)
    source = LeRobotDataset(dataset, max_frame_width=layout.width)  # decoded as training decodes
    lengths = [source.episode_length(e) for e in range(source.num_episodes)]
    temporal = config.temporal
    keys = MixtureSampler(
        MixtureConfig.single(dataset), [lengths], temporal.action_chunk, temporal.downsample_rate, seed=0
    ).keys_for_step(0, 3)
    full, moving_sum, moving_count = [], 0.0, 0
    for key in keys:
        rows = sample_indices(
            key.condition,
            lengths[key.episode],
            temporal.action_chunk,
            temporal.downsample_rate,
            temporal.video_action_ratio,
        )

        def composite(row: int, episode: int = key.episode) -> np.ndarray:
            views = {role: source.frames(episode, camera)[row] for role, camera in ALOHA_CAMERA_MAP.items()}
            return compose_views(views, layout).astype(np.float64) / 255

        condition = composite(rows.condition)
        for row in rows.video_rows:
            truth = composite(int(row))
            squared = ((truth - condition) ** 2).mean(axis=-1)
            moving = (np.abs(truth - condition) > MOVING_THRESHOLD).any(axis=-1)
            full.append(squared.mean())
            moving_sum += float((squared * moving).sum())
            moving_count += int(moving.sum())
    repeat = report["frames"]["repeat_last"]
    assert repeat["mse_full"] == pytest.approx(float(np.mean(full)), rel=1e-4, abs=1e-7)
    assert repeat["mse_moving"] == pytest.approx(moving_sum / max(moving_count, 1), rel=1e-4, abs=1e-7)

    from PIL import Image

    with Image.open(strip) as image:  # live, world model (true, its mean, hold), video generation, joint, repeat
        height = config.latents.image_height
        assert image.size[1] == 7 * (2 * height + 4)  # frames enlarged twice
    with pytest.raises(FileNotFoundError, match="not a Motus checkpoint"):
        main(["eval-generative", "--checkpoint", str(tmp_path), "--dataset", str(dataset)])
