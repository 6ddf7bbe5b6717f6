"""The reference's sampling rule (exact rows), the training dataset built on it, and the mixture weights."""

from __future__ import annotations

import numpy as np
import pytest

from motus_model.data import (
    DatasetSource,
    LeRobotDataset,
    MixtureConfig,
    MixtureSampler,
    MotusTrainingDataset,
    SampleKey,
    SamplingConfig,
    TierConfig,
    collate_samples,
    sample_indices,
)
from motus_model.data.sampling import draw_condition
from motus_model.preprocessing import CompositeLayout, Normalizer


def test_robotwin_layout_rows():
    # RoboTwin: chunk 16, rate 3, ratio 2 (thu-ml/Motus robotwin.yml)
    rows = sample_indices(condition=5, episode_length=100, action_chunk=16, downsample_rate=3, video_action_ratio=2)
    assert rows.condition == 5
    assert rows.action_rows.tolist() == [5 + 3 * (i + 1) for i in range(16)]
    assert rows.video_rows.tolist() == [11, 17, 23, 29, 35, 41, 47, 53]  # actions 1, 3, 5, ..., 15


def test_ac_one_layout_rows():
    # AC-One: chunk 48, rate 1, ratio 6 -> frames at actions 5, 11, ..., 47
    rows = sample_indices(condition=0, episode_length=49, action_chunk=48, downsample_rate=1, video_action_ratio=6)
    assert rows.action_rows.tolist() == list(range(1, 49))
    assert rows.video_rows.tolist() == [6, 12, 18, 24, 30, 36, 42, 48]


def test_condition_range_bounds():
    # valid c is [0, T - chunk*rate - 1]: T=20, chunk 4, rate 2 -> c in [0, 11]
    sample_indices(11, 20, 4, 2, 2)
    with pytest.raises(ValueError, match=r"\[0, 11\]"):
        sample_indices(12, 20, 4, 2, 2)
    rng = np.random.default_rng(0)
    drawn = {draw_condition(rng, 20, 4, 2) for _ in range(500)}
    assert drawn == set(range(12))


@pytest.mark.timeout(60)
def test_training_sample_matches_rows(tiny_dataset):
    root, written = tiny_dataset
    dataset = LeRobotDataset(root)
    normalizer = Normalizer({"state": dataset.stats["observation.state"], "action": dataset.stats["action"]})
    sampling = SamplingConfig(action_chunk=4, downsample_rate=2, video_action_ratio=2)
    training = MotusTrainingDataset([DatasetSource(dataset)], sampling, CompositeLayout(32, 32), normalizer)
    sample = training[SampleKey(dataset=0, episode=1, condition=3)]
    assert sample["condition_image"].shape == (3, 32, 32)
    assert sample["future_images"].shape == (2, 3, 32, 32)
    assert sample["condition_image"].min() >= -1 and sample["condition_image"].max() <= 1
    episode = written[1]
    np.testing.assert_allclose(sample["state"].numpy(), normalizer.normalize("state", episode["state"][3]), atol=1e-6)
    expected_actions = normalizer.normalize("action", episode["action"][[5, 7, 9, 11]])
    np.testing.assert_allclose(sample["actions"].numpy(), expected_actions, atol=1e-6)
    assert sample["instruction"] == "task 1" and sample["has_actions"] is True
    batch = collate_samples([sample, training[SampleKey(0, 0, 0)]])
    assert batch["future_images"].shape == (2, 2, 3, 32, 32) and batch["has_actions"].tolist() == [True, True]


def test_mixture_sampler_honours_weights():
    mixture = MixtureConfig(
        [
            TierConfig("L5", 0.75, [{"path": "a", "weight": 1.0}, {"path": "b", "weight": 3.0}]),
            TierConfig("L2", 0.25, [{"path": "c", "action_key": None}]),
        ]
    )
    lengths = [[30, 5], [40], [25, 25]]  # dataset a's second episode is too short and must never be drawn
    sampler = MixtureSampler(mixture, lengths, action_chunk=4, downsample_rate=2, seed=1)
    np.testing.assert_allclose(sampler.dataset_probabilities(), [0.1875, 0.5625, 0.25])
    keys = sampler.draw_batch(8000)
    counts = np.bincount([k.dataset for k in keys], minlength=3) / len(keys)
    np.testing.assert_allclose(counts, [0.1875, 0.5625, 0.25], atol=0.02)
    assert all(k.episode == 0 for k in keys if k.dataset == 0)
    assert all(0 <= k.condition <= 40 - 8 - 1 for k in keys if k.dataset == 1)
    # exact resume of the generator
    state = sampler.state_dict()
    ahead = sampler.draw_batch(5)
    sampler.load_state_dict(state)
    assert sampler.draw_batch(5) == ahead


def test_mixture_sampler_oversamples_the_episode_start():
    mixture = MixtureConfig.single("a")
    lengths = [[200, 200, 6 + 8]]  # the last episode has 6 condition rows, fewer than the start window
    plain = MixtureSampler(mixture, lengths, action_chunk=4, downsample_rate=2, seed=3)
    start = MixtureSampler(
        mixture, lengths, action_chunk=4, downsample_rate=2, seed=3, episode_start_fraction=0.5, episode_start_rows=16
    )
    long_episodes = lambda keys: np.array([k.condition for k in keys if k.episode < 2])  # noqa: E731
    plain_rows, start_rows = long_episodes(plain.draw_batch(6000)), long_episodes(start.draw_batch(6000))
    # Uniform over 192 rows puts 16/192 in the first 16; half the draws forced there adds 0.5.
    assert abs(float((plain_rows < 16).mean()) - 16 / 192) < 0.02
    assert abs(float((start_rows < 16).mean()) - (0.5 + 0.5 * 16 / 192)) < 0.03
    assert start_rows.max() > 150  # the rest of the episode is still drawn
    assert all(k.condition < 6 for k in start.draw_batch(500) if k.episode == 2)  # never past a short episode
    with pytest.raises(ValueError, match="episode_start_fraction"):
        MixtureSampler(
            mixture, lengths, action_chunk=4, downsample_rate=2, episode_start_fraction=0.5, episode_start_rows=0
        )
