"""The data pyramid as a weighted mixture, and the sampler that honours its weights.

A mixture (YAML, see config/training/mixtures/*.yaml) is a list of tiers, each with a weight and
a list of datasets (each with its own weight inside the tier and the column to use as actions)::

    tiers:
      - name: L5_multi_robot
        weight: 0.5
        datasets:
          - {path: /data/aloha_sim_transfer, weight: 1.0, action_key: latent_action}
      - name: L2_egocentric_human
        weight: 0.5
        datasets:
          - {path: /data/ego_clips, action_key: latent_action, camera_map: {composite: observation.images.ego}}

Sampling is hierarchical: tier by tier weight, dataset by weight within the tier, episode uniform
within the dataset (the reference weights tasks/episodes equally), condition row uniform in the episode.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from motus_model.data.sampling import num_condition_indices
from motus_model.data.torch_dataset import SampleKey

logger = logging.getLogger(__name__)


@dataclass
class DatasetEntry:
    """One dataset of a tier. action_key None means video only (no action loss).

    ``mode_mix`` ({mode: share}, as ``TrainingConfig.mode_mix``): the modes this dataset's samples train, in place
    of the run's mix. For data whose actions suit some modes and not others: commands perturbed on purpose
    (``generate-demos --actions sent``) teach the world model what the arms do, but a policy must not learn to
    send them, so ``{world_model: 1.0}`` (every other mode trains the action head: video generation too, its
    marginalised actions keep their loss). None: the run's mix.
    """

    path: str
    weight: float = 1.0
    action_key: str | None = "action"
    camera_map: dict[str, str] | None = None
    mode_mix: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError(f"dataset weight must be positive, got {self.weight} for {self.path}")
        if self.mode_mix is not None:
            from motus_model.flow_matching import check_mode_mix

            try:
                self.mode_mix = check_mode_mix(self.mode_mix)
            except ValueError as error:
                raise ValueError(f"{self.path}: {error}") from error


@dataclass
class TierConfig:
    """One level of the data pyramid."""

    name: str
    weight: float
    datasets: list[DatasetEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError(f"tier weight must be positive, got {self.weight} for tier {self.name!r}")
        if not self.datasets:
            raise ValueError(f"tier {self.name!r} lists no datasets")
        self.datasets = [d if isinstance(d, DatasetEntry) else DatasetEntry(**d) for d in self.datasets]


@dataclass
class MixtureConfig:
    """The whole mixture (tiers with weights)."""

    tiers: list[TierConfig]

    def __post_init__(self) -> None:
        if not self.tiers:
            raise ValueError("a mixture needs at least one tier")
        self.tiers = [t if isinstance(t, TierConfig) else TierConfig(**t) for t in self.tiers]
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")

    @classmethod
    def single(cls, path: str | Path, action_key: str | None = "action") -> MixtureConfig:
        """A one-dataset mixture (the common stage-3 case)."""
        return cls([TierConfig("target", 1.0, [DatasetEntry(str(path), 1.0, action_key)])])

    @classmethod
    def from_yaml(cls, path: str | Path) -> MixtureConfig:
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict) or "tiers" not in data:
            raise ValueError(f"{path}: expected a mapping with a 'tiers' list")
        base = Path(path).parent
        mixture = cls(tiers=data["tiers"])
        for tier in mixture.tiers:  # relative dataset paths are relative to the YAML file
            for entry in tier.datasets:
                if not Path(entry.path).is_absolute():
                    entry.path = str((base / entry.path).resolve())
        return mixture

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def entries(self) -> list[tuple[int, DatasetEntry]]:
        """(tier index, entry) for every dataset, in the flat order the sampler's SampleKey.dataset uses."""
        return [(t, entry) for t, tier in enumerate(self.tiers) for entry in tier.datasets]


class MixtureSampler:
    """Draws ``SampleKey``s following the mixture weights, from one seeded generator.

    Args:
        mixture: tiers and weights.
        episode_lengths: per flat dataset (``mixture.entries()`` order), the length of every episode.
        action_chunk, downsample_rate: the sample's temporal extent (episodes too short are skipped;
            a dataset with no usable episode is an error).
        seed: generator seed.
        episode_start_fraction, episode_start_rows: draw this fraction of the condition rows from an
            episode's first ``episode_start_rows`` rows instead of uniformly. The start is where a policy
            must read the scene from the camera: later, the arm's own heading already says where the
            object is, so uniformly drawn samples rarely punish a policy that ignores the camera.
    """

    def __init__(
        self,
        mixture: MixtureConfig,
        episode_lengths: list[list[int]],
        action_chunk: int,
        downsample_rate: int,
        seed: int = 0,
        episode_start_fraction: float = 0.0,
        episode_start_rows: int = 0,
    ) -> None:
        if not 0 <= episode_start_fraction <= 1 or (episode_start_fraction > 0 and episode_start_rows < 1):
            raise ValueError(
                f"episode_start_fraction must be in [0, 1] and episode_start_rows >= 1 when it is used, got "
                f"{episode_start_fraction}, {episode_start_rows}"
            )
        self.episode_start_fraction = float(episode_start_fraction)
        self.episode_start_rows = int(episode_start_rows)
        entries = mixture.entries()
        if len(episode_lengths) != len(entries):
            raise ValueError(f"need episode lengths for {len(entries)} datasets, got {len(episode_lengths)}")
        self.mixture = mixture
        self._condition_counts = [
            np.array([num_condition_indices(n, action_chunk, downsample_rate) for n in lengths], dtype=np.int64)
            for lengths in episode_lengths
        ]
        self._usable = [np.flatnonzero(counts > 0) for counts in self._condition_counts]
        for (_, entry), usable in zip(entries, self._usable):
            if usable.size == 0:
                raise ValueError(
                    f"dataset {entry.path} has no episode longer than chunk {action_chunk} x rate {downsample_rate}"
                )
        tier_weights = np.array([t.weight for t in mixture.tiers], dtype=np.float64)
        self.tier_probabilities = tier_weights / tier_weights.sum()
        self._tier_datasets: list[np.ndarray] = []
        self._dataset_probabilities: list[np.ndarray] = []
        for t in range(len(mixture.tiers)):
            flat = np.array([i for i, (tier_index, _) in enumerate(entries) if tier_index == t])
            weights = np.array([entries[i][1].weight for i in flat], dtype=np.float64)
            self._tier_datasets.append(flat)
            self._dataset_probabilities.append(weights / weights.sum())
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def dataset_probabilities(self) -> np.ndarray:
        """Marginal probability of each flat dataset."""
        probabilities = np.zeros(len(self._condition_counts))
        for t, flat in enumerate(self._tier_datasets):
            probabilities[flat] += self.tier_probabilities[t] * self._dataset_probabilities[t]
        return probabilities

    def draw(self, rng: np.random.Generator | None = None) -> SampleKey:
        """One key from ``rng`` (default: the sampler's own generator)."""
        rng = self.rng if rng is None else rng
        tier = int(rng.choice(len(self.tier_probabilities), p=self.tier_probabilities))
        dataset = int(rng.choice(self._tier_datasets[tier], p=self._dataset_probabilities[tier]))
        episode = int(rng.choice(self._usable[dataset]))
        count = int(self._condition_counts[dataset][episode])
        # the extra draw only when the option is on, so runs without it keep their exact batches
        if self.episode_start_fraction > 0 and rng.random() < self.episode_start_fraction:
            count = min(count, self.episode_start_rows)
        condition = int(rng.integers(0, count))
        return SampleKey(dataset=dataset, episode=episode, condition=condition)

    def draw_batch(self, batch_size: int) -> list[SampleKey]:
        """Keys from the sampler's running generator (see ``state_dict``)."""
        return [self.draw() for _ in range(batch_size)]

    def keys_for_step(self, step: int, batch_size: int) -> list[SampleKey]:
        """The global batch of training step ``step``: a pure function of (seed, step), so data
        loader workers can prepare batches ahead and a resumed run needs no sampler state."""
        rng = np.random.default_rng([self.seed, step])
        return [self.draw(rng) for _ in range(batch_size)]

    def state_dict(self) -> dict[str, Any]:
        """The generator state (JSON-serialisable), for exact resume."""
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
