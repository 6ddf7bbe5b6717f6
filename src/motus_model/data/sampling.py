"""Which rows of an episode make one training sample (the reference's sampling rule).

With chunk = actions per sample, rate = downsample rate (control steps between actions) and
ratio = actions per video frame (the thu-ml/Motus loader's rule; RoboTwin configs: chunk 16, rate 3, ratio 2):

- condition index c is uniform in [0, T - chunk*rate - 1];
- action i (i = 0..chunk-1) is the joint target at row c + (i+1)*rate;
- future video frame j (j = 0..chunk/ratio-1) is the frame of action (j+1)*ratio - 1,
  i.e. row c + (j+1)*ratio*rate;
- the state is qpos at row c; the conditioning frame is row c.

Actions are absolute joint targets, never deltas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SampleIndices:
    """Rows of one sample. condition: int; action_rows: [chunk]; video_rows: [chunk // ratio]."""

    condition: int
    action_rows: np.ndarray
    video_rows: np.ndarray


def num_condition_indices(episode_length: int, action_chunk: int, downsample_rate: int) -> int:
    """How many valid condition indices an episode has (0 if it is too short)."""
    return max(0, episode_length - action_chunk * downsample_rate)


def sample_indices(
    condition: int,
    episode_length: int,
    action_chunk: int,
    downsample_rate: int,
    video_action_ratio: int,
) -> SampleIndices:
    """Rows for condition index ``condition`` (see the module docstring)."""
    if action_chunk <= 0 or downsample_rate <= 0 or video_action_ratio <= 0:
        raise ValueError(
            f"action_chunk, downsample_rate, video_action_ratio must be positive, got "
            f"{action_chunk}, {downsample_rate}, {video_action_ratio}"
        )
    if action_chunk % video_action_ratio:
        raise ValueError(
            f"action_chunk ({action_chunk}) must be a multiple of video_action_ratio ({video_action_ratio})"
        )
    last_condition = episode_length - action_chunk * downsample_rate - 1
    if not 0 <= condition <= last_condition:
        raise ValueError(
            f"condition index must be in [0, {last_condition}] for an episode of {episode_length} rows "
            f"(chunk {action_chunk} x rate {downsample_rate}), got {condition}"
        )
    action_rows = condition + (np.arange(action_chunk) + 1) * downsample_rate
    num_frames = action_chunk // video_action_ratio
    video_rows = action_rows[(np.arange(num_frames) + 1) * video_action_ratio - 1]
    return SampleIndices(condition=int(condition), action_rows=action_rows, video_rows=video_rows)


def draw_condition(rng: np.random.Generator, episode_length: int, action_chunk: int, downsample_rate: int) -> int:
    """Uniform condition index in [0, T - chunk*rate - 1]."""
    count = num_condition_indices(episode_length, action_chunk, downsample_rate)
    if count == 0:
        raise ValueError(
            f"episode of {episode_length} rows is too short for chunk {action_chunk} x rate {downsample_rate}"
        )
    return int(rng.integers(0, count))
