"""Datasets: LeRobot-format episodes, ROS 2 bag conversion, sampling, and the data-pyramid mixture."""

from motus_model.data.lerobot import (
    ACTION_KEY,
    ALOHA_CAMERA_KEYS,
    LATENT_ACTION_KEY,
    STATE_KEY,
    LeRobotDataset,
    LeRobotDatasetWriter,
    write_stats,
)
from motus_model.data.mixture import DatasetEntry, MixtureConfig, MixtureSampler, TierConfig
from motus_model.data.sampling import SampleIndices, draw_condition, num_condition_indices, sample_indices
from motus_model.data.torch_dataset import (
    ALOHA_CAMERA_MAP,
    DatasetSource,
    MotusTrainingDataset,
    SampleKey,
    SamplingConfig,
    collate_samples,
)

__all__ = [
    "ACTION_KEY",
    "ALOHA_CAMERA_KEYS",
    "ALOHA_CAMERA_MAP",
    "LATENT_ACTION_KEY",
    "STATE_KEY",
    "DatasetEntry",
    "DatasetSource",
    "LeRobotDataset",
    "LeRobotDatasetWriter",
    "MixtureConfig",
    "MixtureSampler",
    "MotusTrainingDataset",
    "SampleIndices",
    "SampleKey",
    "SamplingConfig",
    "TierConfig",
    "collate_samples",
    "draw_condition",
    "num_condition_indices",
    "sample_indices",
    "write_stats",
]
