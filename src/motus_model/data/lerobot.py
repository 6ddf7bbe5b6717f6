"""LeRobot dataset format: a writer (v3.0 by default, or a complete v2.1) and a reader (v2.0, v2.1, v3.0).

v3.0 (LeRobot >= 0.4; many episodes per file)::

    root/
      meta/info.json                 fps, features, path templates, totals, file size limits
      meta/tasks.parquet             index: task (the instruction), column task_index
      meta/stats.json                {feature: {"mean", "std", "min", "max", "count", "q01", ...}}
      meta/episodes/chunk-000/file-000.parquet
            one row per episode: episode_index, tasks, length, data/chunk_index, data/file_index,
            dataset_from_index, dataset_to_index, videos/<key>/{chunk_index, file_index, from_timestamp,
            to_timestamp}, stats/<feature>/<stat>, meta/episodes/{chunk_index, file_index}
      data/chunk-000/file-000.parquet                  consecutive episodes' frame rows
      videos/<camera key>/chunk-000/file-000.mp4       consecutive episodes' frames, back to back

v2.x (one file per episode)::

      meta/info.json, meta/episodes.jsonl, meta/tasks.jsonl, meta/stats.json (v2.0),
      meta/episodes_stats.jsonl (v2.1: per-episode stats; stats.json is optional there)
      data/chunk-000/episode_000000.parquet
      videos/chunk-000/<camera key>/episode_000000.mp4

Frame rows: observation.state [D] float32, action [D] float32, timestamp, frame_index, episode_index,
index, task_index (+ optional extra float vector columns such as latent_action).

Frames are H.264 mp4 (see ``video.py``), so they come back close to, not equal to, what was written;
parquet columns come back exactly. The writer builds the dataset in a hidden sibling folder and renames
it into place in ``finalize`` (appending works on hard links of the existing files, never on the files
themselves), so an interrupted write leaves the previous dataset, or none, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # (pa.compute)
import pyarrow.parquet as pq

from motus_model.data.video import concat_videos, read_video, write_video

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
SUPPORTED_WRITE_VERSIONS = ("v3.0", "v2.1")
CHUNK_SIZE = 1000
# v3.0 starts a new data / video file past these sizes (LeRobot's defaults).
DATA_FILE_SIZE_MB = 100
VIDEO_FILE_SIZE_MB = 200
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V3_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V3_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
# ALOHA camera keys as LeRobot's aloha datasets name them.
ALOHA_CAMERA_KEYS = (
    "observation.images.cam_high",
    "observation.images.cam_left_wrist",
    "observation.images.cam_right_wrist",
)
STATE_KEY = "observation.state"
ACTION_KEY = "action"
LATENT_ACTION_KEY = "latent_action"
# Columns every frame row carries besides the vector features.
_INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot's per-episode quantile stats (q01 ... q99)
# frames sampled per episode for the camera statistics (LeRobot samples too)
_IMAGE_STATS_SAMPLES = 100


def _episode_chunk(episode_index: int) -> int:
    return episode_index // CHUNK_SIZE


def _next_file(chunk_index: int, file_index: int) -> tuple[int, int]:
    """The (chunk, file) after this one: CHUNK_SIZE files per chunk folder, as LeRobot numbers them."""
    return (chunk_index + 1, 0) if file_index == CHUNK_SIZE - 1 else (chunk_index, file_index + 1)


def _replace_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename: never writes into an existing file (it may be a hard
    link shared with the dataset being appended to)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _replace_table(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def feature_stats(values: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension mean/std/min/max of a [N, D] array, as JSON-ready lists (the Normalizer's stats format)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"expected a non-empty [N, D] array, got shape {tuple(values.shape)}")
    return {
        "mean": values.mean(axis=0).tolist(),
        "std": values.std(axis=0).tolist(),
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
    }


def episode_feature_stats(values: np.ndarray) -> dict[str, Any]:
    """LeRobot's per-episode statistics of a [N, D] array: min, max, mean, std, count, q01..q99."""
    values = np.asarray(values, dtype=np.float64)
    stats: dict[str, Any] = feature_stats(values)
    stats["count"] = [int(values.shape[0])]
    for q in QUANTILES:
        stats[f"q{int(round(q * 100)):02d}"] = np.quantile(values, q, axis=0).tolist()
    return stats


def image_stats(clip: np.ndarray) -> dict[str, Any]:
    """LeRobot's per-episode camera statistics: per channel over sampled frames, in [0, 1], shape [3, 1, 1]."""
    step = max(1, clip.shape[0] // _IMAGE_STATS_SAMPLES)
    pixels = clip[::step].reshape(-1, 3).astype(np.float64) / 255.0
    stats = episode_feature_stats(pixels)
    out: dict[str, Any] = {key: [[[v]] for v in value] for key, value in stats.items() if key != "count"}
    out["count"] = [int(clip[::step].shape[0])]
    return out


def aggregate_stats(per_episode: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Combine per-episode mean/std/min/max (weighted by count) into the dataset's stats."""
    counts = np.array([float(np.asarray(s["count"]).reshape(-1)[0]) for s in per_episode])
    means = np.stack([np.asarray(s["mean"], dtype=np.float64) for s in per_episode])
    variances = np.stack([np.asarray(s["std"], dtype=np.float64) ** 2 for s in per_episode])
    weights = (counts / counts.sum()).reshape((-1,) + (1,) * (means.ndim - 1))
    mean = (weights * means).sum(axis=0)
    variance = (weights * (variances + (means - mean) ** 2)).sum(axis=0)
    return {
        "mean": mean.tolist(),
        "std": np.sqrt(variance).tolist(),
        "min": np.min(np.stack([np.asarray(s["min"]) for s in per_episode]), axis=0).tolist(),
        "max": np.max(np.stack([np.asarray(s["max"]) for s in per_episode]), axis=0).tolist(),
        "count": [int(counts.sum())],
    }


def _column_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A vector (list) or scalar column as float32 [T, D]."""
    values = column.to_numpy(zero_copy_only=False)
    if len(values) and isinstance(values[0], np.ndarray):
        return np.stack(values).astype(np.float32)
    return np.asarray(values, dtype=np.float32).reshape(-1, 1)


@dataclass
class LeRobotDatasetWriter:
    """Writes episodes into a new LeRobot-format dataset folder, or appends them to an existing one.

    Args:
        root: dataset folder (must not already hold a dataset unless ``append``).
        fps: control rate in Hz (frames and state/action rows share it).
        camera_keys: video feature names, e.g. ``observation.images.cam_high``.
        robot_type: free text recorded in info.json.
        state_dim, action_dim: vector sizes (14 for the bimanual ALOHA).
        append: add episodes after those already in ``root`` (same fps, cameras, sizes and columns);
            ``finalize`` then rewrites meta/ and the statistics over old and new rows together.
        version: "v3.0" (LeRobot >= 0.4) or "v2.1" (LeRobot 0.3; one file per episode). Appending keeps
            the existing dataset's version.

    Everything is written into a hidden sibling folder; ``finalize`` moves it into place, ``abort``
    (or leaving a ``with`` block by an exception) removes it.
    """

    root: str | Path
    fps: float
    camera_keys: tuple[str, ...] = ALOHA_CAMERA_KEYS
    robot_type: str = "aloha"
    state_dim: int = 14
    action_dim: int = 14
    append: bool = False
    version: str = CODEBASE_VERSION
    _tasks: dict[str, int] = field(default_factory=dict, init=False)
    _episodes: list[dict[str, Any]] = field(default_factory=list, init=False)
    _total_frames: int = field(default=0, init=False)
    _frame_shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict, init=False)
    _existing_features: dict[str, Any] = field(default_factory=dict, init=False)
    _pending_videos: dict[str, list[tuple[Path, int]]] = field(default_factory=dict, init=False)
    _data_writer: Any = field(default=None, init=False)
    _data_file: tuple[int, int] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        self.camera_keys = tuple(self.camera_keys)
        exists = (self.root / "meta" / "info.json").exists()
        if exists and not self.append:
            raise FileExistsError(f"a dataset already exists at {self.root} (append=True adds episodes to it)")
        if self.root.exists() and not exists and any(self.root.iterdir()):
            raise FileExistsError(f"{self.root} exists and is not a dataset; choose a new output folder")
        self._staging = self.root.parent / f".{self.root.name}.partial-{uuid.uuid4().hex[:8]}"
        self._staging.parent.mkdir(parents=True, exist_ok=True)
        if self.append and exists:
            self._load_existing()
            # Hard links: new files are added and meta/ files replaced in the copy, the original stays intact.
            shutil.copytree(self.root, self._staging, copy_function=os.link)
        elif self.version not in SUPPORTED_WRITE_VERSIONS:
            raise ValueError(f"cannot write LeRobot {self.version!r}; choose one of {SUPPORTED_WRITE_VERSIONS}")
        (self._staging / "meta").mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> LeRobotDatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is not None:
            self.abort()

    def abort(self) -> None:
        """Drop everything written since the writer was made (the dataset at ``root`` is untouched)."""
        if self._data_writer is not None:
            self._data_writer.close()
            self._data_writer = None
        shutil.rmtree(self._staging, ignore_errors=True)

    def _load_existing(self) -> None:
        """Continue the episode, frame and task numbering (and the version) of the dataset at ``root``."""
        existing = LeRobotDataset(self.root, load_stats=False)
        features = existing.info["features"]
        expected = {STATE_KEY: self.state_dim, ACTION_KEY: self.action_dim}
        if existing.fps != self.fps:
            raise ValueError(f"cannot append at {self.fps} fps to {self.root}, recorded at {existing.fps} fps")
        if set(existing.camera_keys) != set(self.camera_keys):
            raise ValueError(
                f"cannot append cameras {sorted(self.camera_keys)} to {self.root}, "
                f"which has {sorted(existing.camera_keys)}"
            )
        if set(existing.vector_keys) != set(expected) or any(
            list(features[k]["shape"]) != [d] for k, d in expected.items()
        ):
            raise ValueError(
                f"cannot append to {self.root}: its vector columns {list(existing.vector_keys)} are not "
                f"state [{self.state_dim}] and action [{self.action_dim}] only"
            )
        self.version = existing.version if existing.version in SUPPORTED_WRITE_VERSIONS else "v2.1"
        self._episodes = [dict(episode) for episode in existing.episodes]
        self._tasks = {task: index for index, task in existing.tasks.items()}
        self._total_frames = int(existing.info["total_frames"])
        self._frame_shapes = {key: tuple(features[key]["shape"]) for key in self.camera_keys}
        self._existing_features = features

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def frame_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Camera key -> (H, W, 3) of the frames written so far (those of the dataset appended to)."""
        return dict(self._frame_shapes)

    def add_episode(
        self,
        frames: dict[str, np.ndarray],
        state: np.ndarray,
        action: np.ndarray,
        task: str,
    ) -> int:
        """Append one episode; returns its index.

        Args:
            frames: camera key -> uint8 [T, H, W, 3] RGB; keys must equal ``camera_keys``.
            state: [T, state_dim] joint positions.
            action: [T, action_dim] commanded joint targets.
            task: language instruction.
        """
        state = np.asarray(state, dtype=np.float32)
        action = np.asarray(action, dtype=np.float32)
        if state.ndim != 2 or state.shape[1] != self.state_dim:
            raise ValueError(f"state must be [T, {self.state_dim}], got {tuple(state.shape)}")
        if action.shape != (state.shape[0], self.action_dim):
            raise ValueError(f"action must be [{state.shape[0]}, {self.action_dim}], got {tuple(action.shape)}")
        length = state.shape[0]
        if length == 0:
            raise ValueError("an episode needs at least one frame")
        if set(frames) != set(self.camera_keys):
            raise ValueError(f"frames keys must be {sorted(self.camera_keys)}, got {sorted(frames)}")
        for key, clip in frames.items():
            clip = np.asarray(clip)
            if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[0] != length or clip.shape[-1] != 3:
                raise ValueError(
                    f"frames[{key!r}] must be uint8 [{length}, H, W, 3], got {clip.dtype} {tuple(clip.shape)}"
                )
            known = self._frame_shapes.setdefault(key, tuple(clip.shape[1:]))
            if known != tuple(clip.shape[1:]):
                raise ValueError(f"frames[{key!r}] size changed between episodes: {known} then {tuple(clip.shape[1:])}")

        episode_index = len(self._episodes)
        task_index = self._tasks.setdefault(task, len(self._tasks))
        frame_index = np.arange(length, dtype=np.int64)
        table = pa.table(
            {
                STATE_KEY: pa.array(list(state), type=pa.list_(pa.float32(), self.state_dim)),
                ACTION_KEY: pa.array(list(action), type=pa.list_(pa.float32(), self.action_dim)),
                "timestamp": pa.array((frame_index / self.fps).astype(np.float32)),
                "frame_index": pa.array(frame_index),
                "episode_index": pa.array(np.full(length, episode_index, dtype=np.int64)),
                "index": pa.array(self._total_frames + frame_index),
                "task_index": pa.array(np.full(length, task_index, dtype=np.int64)),
            }
        )
        stats = {STATE_KEY: episode_feature_stats(state), ACTION_KEY: episode_feature_stats(action)}
        for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            stats[name] = episode_feature_stats(_column_to_numpy(table[name]))
        for key, clip in frames.items():
            stats[key] = image_stats(np.asarray(clip))
        record: dict[str, Any] = {"episode_index": episode_index, "tasks": [task], "length": length}
        if self.version == "v3.0":
            record.update(self._write_v3_episode(table, frames, episode_index, length))
        else:
            chunk = _episode_chunk(episode_index)
            for key, clip in frames.items():
                write_video(
                    self._staging / VIDEO_PATH.format(episode_chunk=chunk, video_key=key, episode_index=episode_index),
                    clip,
                    fps=self.fps,
                )
            data_path = self._staging / DATA_PATH.format(episode_chunk=chunk, episode_index=episode_index)
            data_path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, data_path)
        record["stats"] = stats
        self._episodes.append(record)
        self._total_frames += length
        logger.debug("wrote episode %d (%d frames)", episode_index, length)
        return episode_index

    def _write_v3_episode(
        self, table: pa.Table, frames: dict[str, np.ndarray], episode_index: int, length: int
    ) -> dict[str, Any]:
        """Rows go into the open data file (a new one past DATA_FILE_SIZE_MB); each camera's clip is encoded
        on its own now and joined with its neighbours into the shared video file in ``finalize``."""
        if self._data_file is None:
            previous = [e for e in self._episodes if "data/chunk_index" in e]
            # appending never reopens an existing file: the new episodes start the next one
            self._data_file = (
                _next_file(int(previous[-1]["data/chunk_index"]), int(previous[-1]["data/file_index"]))
                if previous
                else (0, 0)
            )
        chunk_index, file_index = self._data_file
        path = self._staging / V3_DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
        if self._data_writer is not None and path.stat().st_size / 2**20 >= DATA_FILE_SIZE_MB:
            self._data_writer.close()
            self._data_writer = None
            chunk_index, file_index = self._data_file = _next_file(chunk_index, file_index)
            path = self._staging / V3_DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
        if self._data_writer is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(path, table.schema)
        self._data_writer.write_table(table)
        record: dict[str, Any] = {
            "data/chunk_index": chunk_index,
            "data/file_index": file_index,
            "dataset_from_index": self._total_frames,
            "dataset_to_index": self._total_frames + length,
        }
        for key, clip in frames.items():
            clip_path = self._staging / ".clips" / key / f"episode_{episode_index:06d}.mp4"
            write_video(clip_path, np.asarray(clip), fps=self.fps)
            self._pending_videos.setdefault(key, []).append((clip_path, episode_index))
        return record

    def _join_v3_videos(self) -> None:
        """Join each camera's new clips into video files (at most VIDEO_FILE_SIZE_MB each) and record where
        every episode lies in them."""
        by_index = {int(e["episode_index"]): e for e in self._episodes}
        for key, clips in self._pending_videos.items():
            previous = [e for e in self._episodes if f"videos/{key}/chunk_index" in e]
            location = (
                _next_file(
                    int(previous[-1][f"videos/{key}/chunk_index"]), int(previous[-1][f"videos/{key}/file_index"])
                )
                if previous
                else (0, 0)
            )
            group: list[tuple[Path, int]] = []
            size = 0.0

            def flush(location: tuple[int, int], group: list[tuple[Path, int]], key: str = key) -> None:
                target = self._staging / V3_VIDEO_PATH.format(
                    video_key=key, chunk_index=location[0], file_index=location[1]
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                if len(group) == 1:
                    os.replace(group[0][0], target)
                else:
                    concat_videos([path for path, _ in group], target)
                start = 0.0
                for _, episode_index in group:
                    episode = by_index[episode_index]
                    duration = int(episode["length"]) / self.fps
                    episode.update(
                        {
                            f"videos/{key}/chunk_index": location[0],
                            f"videos/{key}/file_index": location[1],
                            f"videos/{key}/from_timestamp": start,
                            f"videos/{key}/to_timestamp": start + duration,
                        }
                    )
                    start += duration

            for path, episode_index in clips:
                clip_size = path.stat().st_size / 2**20
                if group and size + clip_size >= VIDEO_FILE_SIZE_MB:
                    flush(location, group)
                    location, group, size = _next_file(*location), [], 0.0
                group.append((path, episode_index))
                size += clip_size
            flush(location, group)
        self._pending_videos = {}
        shutil.rmtree(self._staging / ".clips", ignore_errors=True)

    def _features(self) -> dict[str, Any]:
        features: dict[str, Any] = {
            STATE_KEY: {"dtype": "float32", "shape": [self.state_dim], "names": None},
            ACTION_KEY: {"dtype": "float32", "shape": [self.action_dim], "names": None},
        }
        for key in self.camera_keys:
            height, width, channels = self._frame_shapes[key]
            video_info = {"video.fps": self.fps, "video.codec": "h264", "video.pix_fmt": "yuv420p"}
            if self.version == "v3.0":
                video_info.update(
                    {
                        "video.height": height,
                        "video.width": width,
                        "video.channels": channels,
                        "video.is_depth_map": False,
                        "has_audio": False,
                    }
                )
            features[key] = {
                "dtype": "video",
                "shape": [height, width, channels],
                "names": ["height", "width", "channels"],
                "info": video_info,
            }
        features.update(
            {
                "timestamp": {"dtype": "float32", "shape": [1], "names": None},
                "frame_index": {"dtype": "int64", "shape": [1], "names": None},
                "episode_index": {"dtype": "int64", "shape": [1], "names": None},
                "index": {"dtype": "int64", "shape": [1], "names": None},
                "task_index": {"dtype": "int64", "shape": [1], "names": None},
            }
        )
        for key, value in self._existing_features.items():  # names and info of the dataset appended to
            if key in features and value.get("names"):
                features[key]["names"] = value["names"]
        return features

    def finalize(self) -> Path:
        """Write meta/ (info, episodes, tasks, stats over every row) and move the dataset into place."""
        if not self._episodes:
            raise ValueError("no episodes were added")
        if self._data_writer is not None:
            self._data_writer.close()
            self._data_writer = None
        if self.version == "v3.0":
            self._join_v3_videos()
        num_episodes = len(self._episodes)
        info: dict[str, Any] = {
            "codebase_version": self.version,
            "robot_type": self.robot_type,
            "total_episodes": num_episodes,
            "total_frames": self._total_frames,
            "total_tasks": len(self._tasks),
        }
        if self.version == "v3.0":
            info.update(
                {
                    "chunks_size": CHUNK_SIZE,
                    "data_files_size_in_mb": DATA_FILE_SIZE_MB,
                    "video_files_size_in_mb": VIDEO_FILE_SIZE_MB,
                    "fps": self.fps if self.fps != int(self.fps) else int(self.fps),
                    "splits": {"train": f"0:{num_episodes}"},
                    "data_path": V3_DATA_PATH,
                    "video_path": V3_VIDEO_PATH,
                    "features": self._features(),
                }
            )
        else:
            info.update(
                {
                    "total_videos": num_episodes * len(self.camera_keys),
                    "total_chunks": _episode_chunk(num_episodes - 1) + 1,
                    "chunks_size": CHUNK_SIZE,
                    "fps": self.fps if self.fps != int(self.fps) else int(self.fps),
                    "splits": {"train": f"0:{num_episodes}"},
                    "data_path": DATA_PATH,
                    "video_path": VIDEO_PATH,
                    "features": self._features(),
                }
            )
        meta = self._staging / "meta"
        _replace_text(meta / "info.json", json.dumps(info, indent=4))
        if self.version == "v3.0":
            self._write_v3_meta(meta)
        else:
            _replace_text(
                meta / "episodes.jsonl",
                "".join(
                    json.dumps({k: e[k] for k in ("episode_index", "tasks", "length")}) + "\n" for e in self._episodes
                ),
            )
            _replace_text(
                meta / "tasks.jsonl",
                "".join(json.dumps({"task_index": i, "task": t}) + "\n" for t, i in self._tasks.items()),
            )
            # v2.1 requires the per-episode stats (LeRobot 0.3 and its v2.1 -> v3.0 converter read them)
            _replace_text(
                meta / "episodes_stats.jsonl",
                "".join(
                    json.dumps({"episode_index": e["episode_index"], "stats": e["stats"]}) + "\n"
                    for e in self._episodes
                    if "stats" in e
                ),
            )
        write_stats(self._staging)
        self._move_into_place()
        logger.info(
            "finalized dataset %s (%s): %d episodes, %d frames",
            self.root,
            self.version,
            num_episodes,
            self._total_frames,
        )
        return Path(self.root)

    def _write_v3_meta(self, meta: Path) -> None:
        tasks = pd.DataFrame({"task_index": list(self._tasks.values())}, index=pd.Index(list(self._tasks), name="task"))
        temporary = meta / ".tasks.parquet.tmp"
        tasks.to_parquet(temporary)
        os.replace(temporary, meta / "tasks.parquet")
        rows = []
        for episode in self._episodes:
            row = {k: v for k, v in episode.items() if k != "stats"}
            for feature, stats in (episode.get("stats") or {}).items():
                for name, value in stats.items():
                    row[f"stats/{feature}/{name}"] = value
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            rows.append(row)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        missing = [c for c in columns if any(c not in row for row in rows)]
        if missing:
            # episodes appended to a dataset written without per-episode stats (or other columns)
            columns = [c for c in columns if c not in missing or not c.startswith("stats/")]
        table = pa.Table.from_pydict({c: [row.get(c) for row in rows] for c in columns})
        shutil.rmtree(meta / "episodes", ignore_errors=True)  # hard links: removing is safe, writing into is not
        _replace_table(self._staging / V3_EPISODES_PATH.format(chunk_index=0, file_index=0), table)

    def _move_into_place(self) -> None:
        """Rename the finished staging folder to ``root`` (the old dataset, when appending, goes last)."""
        old = None
        if self.root.exists():
            old = self.root.parent / f".{self.root.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.root, old)
        os.rename(self._staging, self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_stats(root: str | Path) -> dict[str, dict[str, list[float]]]:
    """(Re)compute meta/stats.json over every vector column (state, action, latent_action, ...); entries of
    other features already there (LeRobot's camera statistics) are kept."""
    root = Path(root)
    dataset = LeRobotDataset(root, load_stats=False)
    columns: dict[str, list[np.ndarray]] = {}
    for table in dataset.iter_tables():
        for name in dataset.vector_keys:
            if name in table.column_names:
                columns.setdefault(name, []).append(_column_to_numpy(table[name]))
    stats_path = root / "meta" / "stats.json"
    stats: dict[str, Any] = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    # other features (cameras): from the per-episode stats where the dataset has them (v2.1, v3.0)
    stats.update(dataset.aggregated_episode_stats(exclude=set(columns)))
    for name, parts in columns.items():
        values = np.concatenate(parts)
        stats[name] = {**episode_feature_stats(values), "count": [int(values.shape[0])]}
    _replace_text(stats_path, json.dumps(stats, indent=4))
    return stats


class LeRobotDataset:
    """Reads a LeRobot dataset folder (v2.0, v2.1 or v3.0) written by ``LeRobotDatasetWriter`` or LeRobot.

    Args:
        root: dataset folder.
        camera_keys: which video features to decode; default every video feature in info.json.
        video_cache_size: decoded (episode, camera) clips kept in memory (decoding is the slow part).
        video_cache_mb: also evict the oldest clips while the cache holds more than this many MB
            (None: no byte limit), so a training run can keep a whole small-resolution dataset decoded.
        load_stats: read meta/stats.json (or, without it, combine the per-episode stats of v2.1 / v3.0).
        max_frame_width: shrink decoded frames wider than this (training needs only the composite's
            resolution; None keeps the recorded size).
    """

    def __init__(
        self,
        root: str | Path,
        camera_keys: tuple[str, ...] | None = None,
        video_cache_size: int = 12,
        load_stats: bool = True,
        max_frame_width: int | None = None,
        video_cache_mb: float | None = None,
    ) -> None:
        self.root = Path(root)
        self.max_frame_width = max_frame_width
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"not a LeRobot dataset (no meta/info.json): {self.root}")
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        self.version = str(self.info.get("codebase_version", ""))
        if self.version not in ("v2.0", "v2.1", "v3.0"):
            raise ValueError(
                f"{self.root}: LeRobot codebase_version {self.version!r} is not supported (v2.0, v2.1 and v3.0 are)"
            )
        self.fps = float(self.info["fps"])
        features = self.info["features"]
        video_keys = tuple(k for k, v in features.items() if v["dtype"] == "video")
        image_keys = tuple(k for k, v in features.items() if v["dtype"] == "image")
        if camera_keys is None:
            camera_keys = video_keys
        in_parquet = [k for k in camera_keys if k in image_keys]
        if in_parquet:
            raise ValueError(
                f"cameras {in_parquet} are stored as images inside the parquet files; only mp4 video features are read"
            )
        missing = [k for k in camera_keys if k not in video_keys]
        if missing:
            raise ValueError(f"camera keys {missing} not in the dataset; it has {list(video_keys)}")
        self.camera_keys = tuple(camera_keys)
        self.vector_keys = tuple(
            k
            for k, v in features.items()
            if v["dtype"].startswith("float") and k not in _INDEX_COLUMNS and len(v.get("shape", [])) == 1
        )
        self._episode_stats: list[dict[str, Any]] = []
        if self.version == "v3.0":
            self._load_v3_meta()
        else:
            self.episodes = _read_jsonl(self.root / "meta" / "episodes.jsonl")
            self.tasks = {t["task_index"]: t["task"] for t in _read_jsonl(self.root / "meta" / "tasks.jsonl")}
            stats_path = self.root / "meta" / "episodes_stats.jsonl"
            if stats_path.is_file():
                self._episode_stats = [e["stats"] for e in _read_jsonl(stats_path)]
        self.stats: dict[str, dict[str, list[float]]] = {}
        if load_stats:
            stats_path = self.root / "meta" / "stats.json"
            if stats_path.is_file():
                self.stats = json.loads(stats_path.read_text())
            elif self._episode_stats:
                self.stats = self.aggregated_episode_stats()
            else:
                raise FileNotFoundError(
                    f"meta/stats.json missing in {self.root}; run `motus stats --dataset {self.root}`"
                )
        self._video_cache: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._video_cache_size = video_cache_size
        self._video_cache_bytes = None if video_cache_mb is None else int(video_cache_mb * 2**20)
        self._table_cache: tuple[Path, pa.Table] | None = None

    def _load_v3_meta(self) -> None:
        paths = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not paths:
            raise FileNotFoundError(f"{self.root}: v3.0 dataset without meta/episodes/chunk-*/file-*.parquet")
        table = pa.concat_tables([pq.read_table(path) for path in paths], promote_options="default")
        rows = table.to_pylist()
        rows.sort(key=lambda row: row["episode_index"])
        self.episodes = []
        for row in rows:
            episode: dict[str, Any] = {}
            stats: dict[str, dict[str, Any]] = {}
            for key, value in row.items():
                if key.startswith("stats/"):
                    feature, _, name = key[len("stats/") :].rpartition("/")
                    if value is not None:
                        stats.setdefault(feature, {})[name] = value
                else:
                    episode[key] = value
            self.episodes.append(episode)
            self._episode_stats.append(stats)
        if not all(self._episode_stats):
            self._episode_stats = []
        tasks = pd.read_parquet(self.root / "meta" / "tasks.parquet")
        self.tasks = {int(index): str(task) for task, index in zip(tasks.index, tasks["task_index"])}

    def aggregated_episode_stats(self, exclude: set[str] | None = None) -> dict[str, Any]:
        """The dataset's stats combined from the per-episode stats (v2.1 / v3.0), {} without them."""
        if not self._episode_stats:
            return {}
        features = set.intersection(*(set(stats) for stats in self._episode_stats)) - (exclude or set())
        return {
            feature: aggregate_stats([stats[feature] for stats in self._episode_stats]) for feature in sorted(features)
        }

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def episode_length(self, episode_index: int) -> int:
        return int(self.episodes[episode_index]["length"])

    def data_path(self, episode_index: int) -> Path:
        """The parquet file holding the episode's rows (in v3.0, shared with neighbouring episodes)."""
        self._check_episode(episode_index)
        if self.version == "v3.0":
            episode = self.episodes[episode_index]
            return self.root / self.info["data_path"].format(
                chunk_index=int(episode["data/chunk_index"]), file_index=int(episode["data/file_index"])
            )
        return self.root / self.info["data_path"].format(
            episode_chunk=_episode_chunk(episode_index), episode_index=episode_index
        )

    def video_path(self, episode_index: int, camera_key: str) -> Path:
        """The mp4 holding the episode's frames of one camera (in v3.0, shared with neighbouring episodes)."""
        self._check_episode(episode_index)
        if self.version == "v3.0":
            episode = self.episodes[episode_index]
            return self.root / self.info["video_path"].format(
                video_key=camera_key,
                chunk_index=int(episode[f"videos/{camera_key}/chunk_index"]),
                file_index=int(episode[f"videos/{camera_key}/file_index"]),
            )
        return self.root / self.info["video_path"].format(
            episode_chunk=_episode_chunk(episode_index), video_key=camera_key, episode_index=episode_index
        )

    def _file_table(self, path: Path) -> pa.Table:
        if self._table_cache is None or self._table_cache[0] != path:
            self._table_cache = (path, pq.read_table(path))
        return self._table_cache[1]

    def read_table(self, episode_index: int) -> pa.Table:
        """The episode's parquet rows as a pyarrow table."""
        path = self.data_path(episode_index)
        if self.version != "v3.0":
            return pq.read_table(path)
        table = self._file_table(path)
        mask = pa.compute.equal(
            table["episode_index"], pa.scalar(episode_index, table.schema.field("episode_index").type)
        )
        return table.filter(mask)

    def iter_tables(self) -> Any:
        """Every data file's rows, once each (one table per episode in v2.x, per file in v3.0)."""
        seen: set[Path] = set()
        for episode_index in range(self.num_episodes):
            path = self.data_path(episode_index)
            if path not in seen:
                seen.add(path)
                yield pq.read_table(path)

    def vectors(self, episode_index: int) -> dict[str, np.ndarray]:
        """Every float vector column of one episode: name -> float32 [T, D]."""
        table = self.read_table(episode_index)
        return {name: _column_to_numpy(table[name]) for name in self.vector_keys if name in table.column_names}

    def task(self, episode_index: int) -> str:
        """The episode's (first) instruction, from the episodes metadata."""
        self._check_episode(episode_index)
        tasks = self.episodes[episode_index].get("tasks") or []
        if not len(tasks):
            raise ValueError(f"episode {episode_index} of {self.root} lists no task")
        return str(tasks[0])

    def frames(self, episode_index: int, camera_key: str) -> np.ndarray:
        """Decoded frames of one camera, uint8 [T, H, W, 3] (cached)."""
        cache_key = (episode_index, camera_key)
        if cache_key in self._video_cache:
            self._video_cache.move_to_end(cache_key)
            return self._video_cache[cache_key]
        expected = self.episode_length(episode_index)
        path = self.video_path(episode_index, camera_key)
        if self.version == "v3.0":
            start = float(self.episodes[episode_index][f"videos/{camera_key}/from_timestamp"])
            clip = read_video(path, max_width=self.max_frame_width, start_time=start, num_frames=expected, fps=self.fps)
        else:
            clip = read_video(path, max_width=self.max_frame_width)
        if clip.shape[0] != expected:
            raise ValueError(
                f"{path} has {clip.shape[0]} frames for episode {episode_index}, the metadata says {expected}"
            )
        self._video_cache[cache_key] = clip
        while len(self._video_cache) > 1 and (
            len(self._video_cache) > self._video_cache_size
            or (
                self._video_cache_bytes is not None
                and sum(c.nbytes for c in self._video_cache.values()) > self._video_cache_bytes
            )
        ):
            self._video_cache.popitem(last=False)
        return clip

    def load_episode(self, episode_index: int) -> dict[str, Any]:
        """One whole episode: {"frames": {camera: [T,H,W,3]}, "state", "action" (+ other vectors), "task"}."""
        episode: dict[str, Any] = dict(self.vectors(episode_index))
        episode["state"] = episode.get(STATE_KEY)
        episode["frames"] = {key: self.frames(episode_index, key) for key in self.camera_keys}
        episode["task"] = self.task(episode_index)
        return episode

    def add_vector_column(self, name: str, values_per_episode: list[np.ndarray]) -> None:
        """Add (or replace) a float vector column, e.g. latent actions, in every episode; updates info and stats.

        Args:
            name: column name.
            values_per_episode: one float [T_e, D] array per episode.
        """
        if name in _INDEX_COLUMNS or name in (STATE_KEY, ACTION_KEY):
            raise ValueError(f"refusing to overwrite the core column {name!r}")
        if len(values_per_episode) != self.num_episodes:
            raise ValueError(f"need one array per episode ({self.num_episodes}), got {len(values_per_episode)}")
        dims = {np.asarray(v).shape[1] for v in values_per_episode}
        if len(dims) != 1:
            raise ValueError(f"{name} must have one width across episodes, got {sorted(dims)}")
        dim = dims.pop()
        checked = []
        for episode_index, values in enumerate(values_per_episode):
            values = np.asarray(values, dtype=np.float32)
            length = self.episode_length(episode_index)
            if values.shape != (length, dim):
                raise ValueError(
                    f"episode {episode_index}: {name} must be [{length}, {dim}], got {tuple(values.shape)}"
                )
            checked.append(values)
        # All of it happens in a hard-linked copy that replaces the dataset at the end: an interrupted run
        # leaves the dataset as it was (files are replaced in the copy, never written into: they are links).
        staging = self.root.parent / f".{self.root.name}.partial-{uuid.uuid4().hex[:8]}"
        shutil.copytree(self.root, staging, copy_function=os.link)
        try:
            info = self._write_vector_column(staging, name, dim, checked)
            old = self.root.parent / f".{self.root.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.root, old)
            os.rename(staging, self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        self.info = info
        self._table_cache = None
        if name not in self.vector_keys:
            self.vector_keys = self.vector_keys + (name,)
        self.stats = json.loads((self.root / "meta" / "stats.json").read_text())

    def _write_vector_column(self, root: Path, name: str, dim: int, checked: list[np.ndarray]) -> dict[str, Any]:
        """add_vector_column's writes, into the dataset copy at ``root``."""
        # Rewrite each data file once (v3.0 files hold many episodes), rows in the file's own episode order.
        by_file: dict[Path, list[int]] = {}
        for episode_index in range(self.num_episodes):
            by_file.setdefault(root / self.data_path(episode_index).relative_to(self.root), []).append(episode_index)
        for path in by_file:
            table = pq.read_table(path)
            episode_column = table["episode_index"].to_numpy()
            values = np.empty((table.num_rows, dim), dtype=np.float32)
            for episode_index in np.unique(episode_column):
                rows = np.flatnonzero(episode_column == episode_index)
                values[rows] = checked[int(episode_index)][table["frame_index"].to_numpy()[rows]]
            column = pa.array(list(values), type=pa.list_(pa.float32(), dim))
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, column)
            else:
                table = table.append_column(name, column)
            _replace_table(path, table)
        info = {
            **self.info,
            "features": {**self.info["features"], name: {"dtype": "float32", "shape": [dim], "names": None}},
        }
        _replace_text(root / "meta" / "info.json", json.dumps(info, indent=4))
        write_stats(root)
        return info

    def _check_episode(self, episode_index: int) -> None:
        if not 0 <= episode_index < self.num_episodes:
            raise IndexError(f"episode index {episode_index} out of range [0, {self.num_episodes})")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: not a complete LeRobot v2.x dataset")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
