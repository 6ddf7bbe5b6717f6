"""A mixture's normalisation statistics (TrainingConfig.normalization_stats).

The checkpoint keeps one set of statistics, and serving un-normalises every action with it. So a dataset
trained under other statistics (its own, with "per_dataset") is served wrongly; "pooled" and "init" train
every dataset under the set the checkpoint keeps. The oracle is numpy over the raw actions as written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from training_helpers import write_tiny_dataset

from motus_model.config import MotusConfig
from motus_model.data.mixture import DatasetEntry, MixtureConfig, TierConfig
from motus_model.data.sampling import sample_indices
from motus_model.data.torch_dataset import SampleKey
from motus_model.preprocessing import Normalizer
from motus_model.training.config import TrainingConfig
from motus_model.training.trainer import Trainer, build_training_data, checkpoint_stats

LENGTH = 24


def _dataset(root, offset: float, scale: float, seed: int, episodes: int = 2) -> list[np.ndarray]:
    """A tiny dataset whose state and actions are offset + scale * a smooth curve; its actions as written."""
    _, written = write_tiny_dataset(root, num_episodes=episodes, length=LENGTH, seed=seed, offset=offset, scale=scale)
    return [episode["action"] for episode in written]


@pytest.fixture
def two_datasets(tmp_path):
    """Two datasets of one robot with different action ranges, and their raw actions."""
    first = _dataset(tmp_path / "a", offset=0.0, scale=1.0, seed=0)
    second = _dataset(tmp_path / "b", offset=2.0, scale=3.0, seed=1, episodes=3)
    mixture = MixtureConfig(
        [TierConfig("all", 1.0, [DatasetEntry(str(tmp_path / "a")), DatasetEntry(str(tmp_path / "b"))])]
    )
    return mixture, first, second


def _built(mixture: MixtureConfig, **overrides):
    config = TrainingConfig.for_stage(3, preset="motus-tiny", output="unused", **overrides)
    return build_training_data(config, MotusConfig.preset("motus-tiny"), mixture, seed=0)


def _served_action(training, normalizer: Normalizer, dataset: int, episode: int, condition: int) -> np.ndarray:
    """A training sample's actions un-normalised as serving does, with the checkpoint's statistics."""
    sample = training[SampleKey(dataset, episode, condition)]
    return np.asarray(normalizer.unnormalize("action", sample["actions"].numpy()))


def _written_rows(training, actions: list[np.ndarray], episode: int, condition: int) -> np.ndarray:
    sampling = training.sampling
    rows = sample_indices(
        condition, LENGTH, sampling.action_chunk, sampling.downsample_rate, sampling.video_action_ratio
    )
    return actions[episode][rows.action_rows]


def test_pooled_statistics_cover_every_dataset_and_serve_each_back(two_datasets):
    mixture, first, second = two_datasets
    training, _, normalizers = _built(mixture, normalization_stats="pooled")
    saved = checkpoint_stats(normalizers[0], "action")
    every = np.concatenate(first + second).astype(np.float64)
    action = saved["stats"]["action"]
    np.testing.assert_allclose(action["mean"], every.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(action["std"], every.std(axis=0), atol=1e-5)
    np.testing.assert_allclose(action["min"], every.min(axis=0), atol=1e-6)
    np.testing.assert_allclose(action["max"], every.max(axis=0), atol=1e-6)
    served = Normalizer.from_dict(saved)
    for dataset, actions in ((0, first), (1, second)):
        np.testing.assert_allclose(
            _served_action(training, served, dataset, 1, 3), _written_rows(training, actions, 1, 3), atol=1e-4
        )


def test_per_dataset_statistics_serve_only_the_first_dataset_back(two_datasets):
    """The default (one robot per dataset): what the pooled option exists for."""
    mixture, first, second = two_datasets
    training, _, normalizers = _built(mixture)
    served = Normalizer.from_dict(checkpoint_stats(normalizers[0], "action"))
    np.testing.assert_allclose(
        _served_action(training, served, 0, 1, 3), _written_rows(training, first, 1, 3), atol=1e-4
    )
    assert not np.allclose(_served_action(training, served, 1, 1, 3), _written_rows(training, second, 1, 3), atol=0.1)


def _checkpoint_with_stats(directory, offset: float, scale: float):
    directory.mkdir()
    stats = {
        key: {"mean": [offset] * 14, "std": [scale] * 14, "min": [offset - scale] * 14, "max": [offset + scale] * 14}
        for key in ("state", "action")
    }
    (directory / "stats.json").write_text(json.dumps({"mode": "mean_std", "eps": 1e-6, "stats": stats}))
    return directory


def test_init_statistics_are_the_checkpoints_for_every_dataset(two_datasets, tmp_path):
    mixture, first, second = two_datasets
    init = _checkpoint_with_stats(tmp_path / "init", offset=0.5, scale=2.0)
    training, _, normalizers = _built(mixture, normalization_stats="init", init_from=str(init))
    saved = checkpoint_stats(normalizers[0], "action")
    assert saved["stats"]["action"]["mean"] == [0.5] * 14 and saved["stats"]["state"]["std"] == [2.0] * 14
    for dataset, actions in ((0, first), (1, second)):
        sample = training[SampleKey(dataset, 0, 2)]
        expected = (_written_rows(training, actions, 0, 2) - 0.5) / (2.0 + 1e-6)
        np.testing.assert_allclose(sample["actions"].numpy(), expected, atol=1e-5)


def test_init_statistics_refuse_what_does_not_fit(two_datasets, tmp_path):
    mixture, _, _ = two_datasets
    with pytest.raises(ValueError, match="--init-from"):
        TrainingConfig.for_stage(3, output="unused", normalization_stats="init")
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="has no stats.json"):
        _built(mixture, normalization_stats="init", init_from=str(tmp_path / "bare"))
    init = _checkpoint_with_stats(tmp_path / "init", offset=0.0, scale=1.0)
    with pytest.raises(ValueError, match="'mean_std' but the config says 'min_max'"):
        _built(mixture, normalization_stats="init", init_from=str(init), normalization="min_max")


@pytest.mark.timeout(240)
def test_the_held_out_data_is_read_with_the_runs_statistics(two_datasets, tmp_path):
    mixture, _, _ = two_datasets
    path = tmp_path / "mixture.yaml"
    path.write_text(json.dumps({"tiers": [{"name": "all", "weight": 1.0, "datasets": [
        {"path": e.path} for _, e in mixture.entries()]}]}))  # fmt: skip
    config = TrainingConfig.for_stage(
        3,
        preset="motus-tiny",
        mixture=str(path),
        eval_dataset=str(tmp_path / "b"),
        output=str(tmp_path / "run"),
        normalization_stats="pooled",
        steps=1,
        batch_size=2,
    )
    trainer = Trainer(config)
    held_out = trainer.eval_dataset.sources[0].normalizer.to_dict()
    assert held_out["stats"] == trainer.stats["stats"]
