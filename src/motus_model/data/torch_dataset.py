"""Model-ready training samples from LeRobot-format episodes.

A sample is addressed by a ``SampleKey`` (dataset, episode, condition index) chosen by a sampler
(``mixture.MixtureSampler``), so all randomness lives in one seeded generator whose state is saved
with the training state: that is what makes resuming exact and multi-process batches reproducible.

Each sample holds (shapes for the model's composite H x W, F = chunk // ratio future frames):
    condition_image  float32 [3, H, W] in [-1, 1]   composite of the layout's views at row c
    future_images    float32 [F, 3, H, W] in [-1, 1] composites at the future video rows
    state            float32 [S]                    normalised qpos at row c
    actions          float32 [chunk, A]             normalised absolute targets (zeros if has_actions is False)
    has_actions      bool                           False for video-only data (stage 1 tiers)
    dataset_index    int64 []                       the sample's source (its DatasetEntry.mode_mix, if any)
    instruction      str
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from motus_model.data.lerobot import ACTION_KEY, STATE_KEY, LeRobotDataset
from motus_model.data.sampling import sample_indices
from motus_model.preprocessing import (
    CompositeLayout,
    Normalizer,
    compose_views,
    fit_composite,
    image_to_tensor,
)

logger = logging.getLogger(__name__)

# Composite role -> LeRobot camera key, as LeRobot's ALOHA datasets name them.
ALOHA_CAMERA_MAP: dict[str, str] = {
    "high": "observation.images.cam_high",
    "left_wrist": "observation.images.cam_left_wrist",
    "right_wrist": "observation.images.cam_right_wrist",
}
# A single role named "composite" means the dataset already stores one composed (or single) view.
COMPOSITE_ROLE = "composite"
CAMERA_KEY_PREFIX = "observation.images."
# Composite order of the roles a dataset's cameras are given when no order is named (the head first: it takes the
# top of a "head_row" composite); other roles follow in the dataset's order.
PREFERRED_ROLE_ORDER = ("high", "low", "left_wrist", "right_wrist")


def camera_role(key: str) -> str:
    """The camera role of a LeRobot camera key: ``observation.images.cam_high`` -> ``high``,
    ``observation.images.front`` -> ``front`` (the inverse of the bag and HDF5 converters' naming)."""
    name = key[len(CAMERA_KEY_PREFIX) :] if key.startswith(CAMERA_KEY_PREFIX) else key
    return name[len("cam_") :] if name.startswith("cam_") else name


def dataset_camera_roles(camera_keys: Sequence[str]) -> list[str]:
    """The roles of a dataset's cameras in composite order (``PREFERRED_ROLE_ORDER`` first, then the rest)."""
    roles = [camera_role(key) for key in camera_keys]
    if len(set(roles)) != len(roles):
        raise ValueError(f"camera keys {list(camera_keys)} give duplicate roles {roles}; name them in a camera_map")
    preferred = [role for role in PREFERRED_ROLE_ORDER if role in roles]
    return preferred + [role for role in roles if role not in preferred]


def camera_map_for(dataset: LeRobotDataset, roles: Sequence[str]) -> dict[str, str]:
    """Role -> camera key of ``dataset`` for the composite's ``roles`` (by ``camera_role``), or a one-line
    ValueError naming the roles, the dataset's cameras and the fix."""
    by_role = {camera_role(key): key for key in dataset.camera_keys}
    missing = [role for role in roles if role not in by_role]
    if missing:
        raise ValueError(
            f"{dataset.root} has no camera for role(s) {missing} of the camera layout {list(roles)} (its cameras: "
            f"{list(dataset.camera_keys)}); give its camera_map in a mixture, or choose the roles with --cameras"
        )
    return {role: by_role[role] for role in roles}


@dataclass(frozen=True)
class SamplingConfig:
    """Temporal layout of a sample (from ``MotusConfig.temporal``)."""

    action_chunk: int
    downsample_rate: int
    video_action_ratio: int

    @property
    def num_future_frames(self) -> int:
        return self.action_chunk // self.video_action_ratio

    @classmethod
    def from_model_config(cls, config: Any) -> SamplingConfig:
        temporal = config.temporal
        return cls(int(temporal.action_chunk), int(temporal.downsample_rate), int(temporal.video_action_ratio))


@dataclass(frozen=True)
class SampleKey:
    """Address of one sample: which dataset, which episode, which condition row."""

    dataset: int
    episode: int
    condition: int


@dataclass
class DatasetSource:
    """One dataset and how to read it.

    Args:
        dataset: the episodes.
        action_key: parquet column used as actions ("action": the commanded joint targets; "latent_action":
            stage-2 pseudo-actions; "observation.state": future qpos, exactly what the reference's loaders
            read as actions), or None for video-only data (no action loss).
        camera_map: composite role -> camera key: the layout's roles (``MotusTrainingDataset`` checks them),
            or the single role ``"composite"`` for a dataset that stores one already composed image.
        normalizer: this dataset's own state/action normaliser (per embodiment, as the reference's
            per-embodiment stat.json); None uses the training dataset's shared one.
    """

    dataset: LeRobotDataset
    action_key: str | None = ACTION_KEY
    camera_map: Mapping[str, str] = field(default_factory=lambda: dict(ALOHA_CAMERA_MAP))
    normalizer: Normalizer | None = None

    def __post_init__(self) -> None:
        if not self.camera_map:
            raise ValueError(f"camera_map of {self.dataset.root} is empty: map each composite role to a camera key")
        missing = [key for key in self.camera_map.values() if key not in self.dataset.camera_keys]
        if missing:
            raise ValueError(
                f"camera keys {missing} not in {self.dataset.root}; it has {list(self.dataset.camera_keys)}"
            )
        if self.action_key is not None and self.action_key not in self.dataset.vector_keys:
            raise ValueError(
                f"action column {self.action_key!r} not in {self.dataset.root}; it has {list(self.dataset.vector_keys)}"
                + (" (run `motus latent-actions` first)" if self.action_key == "latent_action" else "")
            )


class MotusTrainingDataset(Dataset):
    """Map-style dataset indexed by ``SampleKey`` (see the module docstring for the sample layout).

    Args:
        sources: the datasets (index = ``SampleKey.dataset``).
        sampling: temporal layout.
        layout: composite geometry.
        normalizer: shared state/action normaliser (a source's own one wins); state uses stats["state"],
            actions stats[action_key] (so latent actions are normalised with their own statistics).
        state_dim, action_dim: model widths; narrower robot vectors are zero-padded, wider ones rejected.
    """

    def __init__(
        self,
        sources: list[DatasetSource],
        sampling: SamplingConfig,
        layout: CompositeLayout,
        normalizer: Normalizer | None = None,
        state_dim: int = 14,
        action_dim: int = 14,
    ) -> None:
        if not sources:
            raise ValueError("need at least one dataset source")
        if normalizer is None and any(source.normalizer is None for source in sources):
            raise ValueError("every source needs a normalizer when no shared one is given")
        for source in sources:
            if set(source.camera_map) != {COMPOSITE_ROLE}:
                layout.check_roles(source.camera_map, f"camera_map of {source.dataset.root}")
        self.sources = sources
        self.sampling = sampling
        self.layout = layout
        self.normalizer = normalizer
        self.state_dim = state_dim
        self.action_dim = action_dim
        self._vector_cache: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    @property
    def num_episodes(self) -> int:
        """Episodes over every source (samples are addressed by SampleKey, so there is no __len__)."""
        return sum(source.dataset.num_episodes for source in self.sources)

    def episode_lengths(self, dataset: int) -> list[int]:
        source = self.sources[dataset].dataset
        return [source.episode_length(e) for e in range(source.num_episodes)]

    def _vectors(self, key: SampleKey) -> dict[str, np.ndarray]:
        cache_key = (key.dataset, key.episode)
        if cache_key not in self._vector_cache:
            self._vector_cache[cache_key] = self.sources[key.dataset].dataset.vectors(key.episode)
        return self._vector_cache[cache_key]

    def _composite(self, source: DatasetSource, episode: int, row: int) -> torch.Tensor:
        if set(source.camera_map) == {COMPOSITE_ROLE}:
            image = source.dataset.frames(episode, source.camera_map[COMPOSITE_ROLE])[row]
            return image_to_tensor(fit_composite(image, self.layout))
        views = {role: source.dataset.frames(episode, key)[row] for role, key in source.camera_map.items()}
        return image_to_tensor(compose_views(views, self.layout))

    def _pad(self, values: np.ndarray, width: int, what: str) -> np.ndarray:
        if values.shape[-1] > width:
            raise ValueError(f"{what} has {values.shape[-1]} dims, the model takes at most {width}")
        if values.shape[-1] == width:
            return values
        padding = np.zeros(values.shape[:-1] + (width - values.shape[-1],), dtype=values.dtype)
        return np.concatenate([values, padding], axis=-1)

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        if not isinstance(key, SampleKey):
            raise TypeError(f"index with a SampleKey (from a sampler), got {type(key).__name__}")
        source = self.sources[key.dataset]
        length = source.dataset.episode_length(key.episode)
        rows = sample_indices(
            key.condition,
            length,
            self.sampling.action_chunk,
            self.sampling.downsample_rate,
            self.sampling.video_action_ratio,
        )
        vectors = self._vectors(key)
        normalizer = source.normalizer or self.normalizer
        state = normalizer.normalize("state", vectors[STATE_KEY][rows.condition])
        if source.action_key is None:
            actions = np.zeros((self.sampling.action_chunk, self.action_dim), dtype=np.float32)
        else:
            actions = normalizer.normalize(source.action_key, vectors[source.action_key][rows.action_rows])
            actions = self._pad(np.asarray(actions, dtype=np.float32), self.action_dim, source.action_key)
        return {
            "condition_image": self._composite(source, key.episode, rows.condition),
            "future_images": torch.stack([self._composite(source, key.episode, int(r)) for r in rows.video_rows]),
            "state": torch.from_numpy(self._pad(np.asarray(state, dtype=np.float32), self.state_dim, "state")),
            "actions": torch.from_numpy(actions),
            "has_actions": source.action_key is not None,
            "dataset_index": torch.tensor(key.dataset),  # which source: its mode mix (DatasetEntry.mode_mix)
            "instruction": source.dataset.task(key.episode),
        }


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch (tensors stacked on dim 0, has_actions -> bool tensor, instructions -> list)."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    batch: dict[str, Any] = {}
    for name in samples[0]:
        values = [sample[name] for sample in samples]
        if isinstance(values[0], torch.Tensor):
            batch[name] = torch.stack(values)
        elif isinstance(values[0], bool):
            batch[name] = torch.tensor(values, dtype=torch.bool)
        else:
            batch[name] = values
    return batch
