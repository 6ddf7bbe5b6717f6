"""LeRobot dataset format (v2.x layout): a writer and a reader.

Layout on disk (one chunk per 1000 episodes, as LeRobot does)::

    root/
      meta/info.json            fps, features, path templates, totals
      meta/episodes.jsonl       {"episode_index", "tasks", "length"} per line
      meta/tasks.jsonl          {"task_index", "task"} per line
      meta/stats.json           {feature: {"mean", "std", "min", "max"}} for state/action(-like) columns
      data/chunk-000/episode_000000.parquet
            observation.state [D] float32, action [D] float32, timestamp, frame_index,
            episode_index, index, task_index (+ optional extra float vector columns such as latent_action)
      videos/chunk-000/<camera key>/episode_000000.mp4

Frames are H.264 mp4 (see ``video.py``), so they come back close to, not equal to, what was written;
parquet columns come back exactly.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from motus_model.data.video import read_video, write_video

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v2.1"
CHUNK_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
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


def _episode_chunk(episode_index: int) -> int:
    return episode_index // CHUNK_SIZE


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


@dataclass
class LeRobotDatasetWriter:
    """Writes episodes into a new LeRobot-format dataset folder, or appends them to one it wrote.

    Args:
        root: dataset folder (must not already hold a dataset unless ``append``).
        fps: control rate in Hz (frames and state/action rows share it).
        camera_keys: video feature names, e.g. ``observation.images.cam_high``.
        robot_type: free text recorded in info.json.
        state_dim, action_dim: vector sizes (14 for the bimanual ALOHA).
        append: add episodes after those already in ``root`` (same fps, cameras, sizes and columns);
            ``finalize`` then rewrites meta/ and the statistics over old and new rows together.
    """

    root: str | Path
    fps: float
    camera_keys: tuple[str, ...] = ALOHA_CAMERA_KEYS
    robot_type: str = "aloha"
    state_dim: int = 14
    action_dim: int = 14
    append: bool = False
    _tasks: dict[str, int] = field(default_factory=dict, init=False)
    _episodes: list[dict[str, Any]] = field(default_factory=list, init=False)
    _total_frames: int = field(default=0, init=False)
    _frame_shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        self.camera_keys = tuple(self.camera_keys)
        exists = (self.root / "meta" / "info.json").exists()
        if exists and not self.append:
            raise FileExistsError(f"a dataset already exists at {self.root} (append=True adds episodes to it)")
        if self.append and exists:
            self._load_existing()
        (self.root / "meta").mkdir(parents=True, exist_ok=True)

    def _load_existing(self) -> None:
        """Continue the episode, frame and task numbering of the dataset at ``root``."""
        existing = LeRobotDataset(self.root, load_stats=False)
        features = existing.info["features"]
        expected = {STATE_KEY: self.state_dim, ACTION_KEY: self.action_dim}
        if existing.fps != self.fps:
            raise ValueError(f"cannot append at {self.fps} fps to {self.root}, recorded at {existing.fps} fps")
        if set(existing.camera_keys) != set(self.camera_keys):
            raise ValueError(f"cannot append cameras {sorted(self.camera_keys)} to {self.root}, which has {sorted(existing.camera_keys)}")
        if set(existing.vector_keys) != set(expected) or any(features[k]["shape"] != [d] for k, d in expected.items()):
            raise ValueError(f"cannot append to {self.root}: its vector columns {list(existing.vector_keys)} are not state [{self.state_dim}] and action [{self.action_dim}] only")
        self._episodes = [dict(episode) for episode in existing.episodes]
        self._tasks = {task: index for index, task in existing.tasks.items()}
        self._total_frames = int(existing.info["total_frames"])
        self._frame_shapes = {key: tuple(features[key]["shape"]) for key in self.camera_keys}

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
                raise ValueError(f"frames[{key!r}] must be uint8 [{length}, H, W, 3], got {clip.dtype} {tuple(clip.shape)}")
            known = self._frame_shapes.setdefault(key, tuple(clip.shape[1:]))
            if known != tuple(clip.shape[1:]):
                raise ValueError(f"frames[{key!r}] size changed between episodes: {known} then {tuple(clip.shape[1:])}")

        episode_index = len(self._episodes)
        task_index = self._tasks.setdefault(task, len(self._tasks))
        chunk = _episode_chunk(episode_index)
        for key, clip in frames.items():
            write_video(
                self.root / VIDEO_PATH.format(episode_chunk=chunk, video_key=key, episode_index=episode_index),
                clip,
                fps=self.fps,
            )
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
        data_path = self.root / DATA_PATH.format(episode_chunk=chunk, episode_index=episode_index)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, data_path)
        self._episodes.append({"episode_index": episode_index, "tasks": [task], "length": length})
        self._total_frames += length
        logger.debug("wrote episode %d (%d frames)", episode_index, length)
        return episode_index

    def finalize(self) -> Path:
        """Write meta/ (info, episodes, tasks, stats computed over every row); returns the root."""
        if not self._episodes:
            raise ValueError("no episodes were added")
        features: dict[str, Any] = {
            STATE_KEY: {"dtype": "float32", "shape": [self.state_dim], "names": None},
            ACTION_KEY: {"dtype": "float32", "shape": [self.action_dim], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        }
        for key in self.camera_keys:
            height, width, channels = self._frame_shapes[key]
            features[key] = {
                "dtype": "video",
                "shape": [height, width, channels],
                "names": ["height", "width", "channels"],
                "info": {"video.fps": self.fps, "video.codec": "h264", "video.pix_fmt": "yuv420p"},
            }
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episodes),
            "total_frames": self._total_frames,
            "total_tasks": len(self._tasks),
            "total_videos": len(self._episodes) * len(self.camera_keys),
            "total_chunks": _episode_chunk(len(self._episodes) - 1) + 1,
            "chunks_size": CHUNK_SIZE,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self._episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": features,
        }
        meta = self.root / "meta"
        (meta / "info.json").write_text(json.dumps(info, indent=2))
        (meta / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in self._episodes))
        (meta / "tasks.jsonl").write_text(
            "".join(json.dumps({"task_index": i, "task": t}) + "\n" for t, i in self._tasks.items())
        )
        write_stats(self.root)
        logger.info("finalized dataset %s: %d episodes, %d frames", self.root, len(self._episodes), self._total_frames)
        return Path(self.root)


def write_stats(root: str | Path) -> dict[str, dict[str, list[float]]]:
    """(Re)compute meta/stats.json over every vector column (state, action, latent_action, ...)."""
    dataset = LeRobotDataset(root, load_stats=False)
    columns: dict[str, list[np.ndarray]] = {}
    for episode_index in range(dataset.num_episodes):
        table = dataset.read_table(episode_index)
        for name in dataset.vector_keys:
            columns.setdefault(name, []).append(np.stack(table[name].to_numpy(zero_copy_only=False)))
    stats = {name: feature_stats(np.concatenate(parts)) for name, parts in columns.items()}
    (Path(root) / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


class LeRobotDataset:
    """Reads a LeRobot-format dataset folder written by ``LeRobotDatasetWriter`` or LeRobot (v2.x).

    Args:
        root: dataset folder.
        camera_keys: which video features to decode; default every video feature in info.json.
        video_cache_size: decoded (episode, camera) clips kept in memory (decoding is the slow part).
        video_cache_mb: also evict the oldest clips while the cache holds more than this many MB
            (None: no byte limit), so a training run can keep a whole small-resolution dataset decoded.
        load_stats: read meta/stats.json (must exist).
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
        version = str(self.info.get("codebase_version", ""))
        if not version.startswith("v2"):
            raise ValueError(f"only the LeRobot v2.x layout is supported, got codebase_version={version!r}")
        self.fps = float(self.info["fps"])
        features = self.info["features"]
        video_keys = tuple(k for k, v in features.items() if v["dtype"] == "video")
        image_keys = tuple(k for k, v in features.items() if v["dtype"] == "image")
        if camera_keys is None:
            camera_keys = video_keys
        in_parquet = [k for k in camera_keys if k in image_keys]
        if in_parquet:
            raise ValueError(f"cameras {in_parquet} are stored as images inside the parquet files; only mp4 video features are read")
        missing = [k for k in camera_keys if k not in video_keys]
        if missing:
            raise ValueError(f"camera keys {missing} not in the dataset; it has {list(video_keys)}")
        self.camera_keys = tuple(camera_keys)
        self.vector_keys = tuple(
            k for k, v in features.items() if v["dtype"].startswith("float") and k not in _INDEX_COLUMNS
        )
        self.episodes = [json.loads(line) for line in (self.root / "meta" / "episodes.jsonl").read_text().splitlines() if line]
        self.tasks = {
            t["task_index"]: t["task"]
            for t in (json.loads(line) for line in (self.root / "meta" / "tasks.jsonl").read_text().splitlines() if line)
        }
        self.stats: dict[str, dict[str, list[float]]] = {}
        if load_stats:
            stats_path = self.root / "meta" / "stats.json"
            if not stats_path.is_file():
                raise FileNotFoundError(f"meta/stats.json missing in {self.root}; run write_stats(root)")
            self.stats = json.loads(stats_path.read_text())
        self._video_cache: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._video_cache_size = video_cache_size
        self._video_cache_bytes = None if video_cache_mb is None else int(video_cache_mb * 2**20)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def episode_length(self, episode_index: int) -> int:
        return int(self.episodes[episode_index]["length"])

    def data_path(self, episode_index: int) -> Path:
        self._check_episode(episode_index)
        return self.root / self.info["data_path"].format(
            episode_chunk=_episode_chunk(episode_index), episode_index=episode_index
        )

    def video_path(self, episode_index: int, camera_key: str) -> Path:
        self._check_episode(episode_index)
        return self.root / self.info["video_path"].format(
            episode_chunk=_episode_chunk(episode_index), video_key=camera_key, episode_index=episode_index
        )

    def read_table(self, episode_index: int) -> pa.Table:
        """The episode's parquet rows as a pyarrow table."""
        return pq.read_table(self.data_path(episode_index))

    def vectors(self, episode_index: int) -> dict[str, np.ndarray]:
        """Every float vector column of one episode: name -> float32 [T, D]."""
        table = self.read_table(episode_index)
        return {
            name: np.stack(table[name].to_numpy(zero_copy_only=False)).astype(np.float32)
            for name in self.vector_keys
            if name in table.column_names
        }

    def task(self, episode_index: int) -> str:
        """The episode's (first) instruction, from meta/episodes.jsonl."""
        self._check_episode(episode_index)
        tasks = self.episodes[episode_index].get("tasks") or []
        if not tasks:
            raise ValueError(f"episode {episode_index} of {self.root} lists no task")
        return str(tasks[0])

    def frames(self, episode_index: int, camera_key: str) -> np.ndarray:
        """Decoded frames of one camera, uint8 [T, H, W, 3] (cached)."""
        cache_key = (episode_index, camera_key)
        if cache_key in self._video_cache:
            self._video_cache.move_to_end(cache_key)
            return self._video_cache[cache_key]
        clip = read_video(self.video_path(episode_index, camera_key), max_width=self.max_frame_width)
        expected = self.episode_length(episode_index)
        if clip.shape[0] != expected:
            raise ValueError(f"{self.video_path(episode_index, camera_key)} has {clip.shape[0]} frames, episodes.jsonl says {expected}")
        self._video_cache[cache_key] = clip
        while len(self._video_cache) > 1 and (
            len(self._video_cache) > self._video_cache_size
            or (self._video_cache_bytes is not None
                and sum(c.nbytes for c in self._video_cache.values()) > self._video_cache_bytes)
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
        for episode_index, values in enumerate(values_per_episode):
            values = np.asarray(values, dtype=np.float32)
            length = self.episode_length(episode_index)
            if values.shape != (length, dim):
                raise ValueError(f"episode {episode_index}: {name} must be [{length}, {dim}], got {tuple(values.shape)}")
            table = self.read_table(episode_index)
            column = pa.array(list(values), type=pa.list_(pa.float32(), dim))
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, column)
            else:
                table = table.append_column(name, column)
            pq.write_table(table, self.data_path(episode_index))
        self.info["features"][name] = {"dtype": "float32", "shape": [dim], "names": None}
        (self.root / "meta" / "info.json").write_text(json.dumps(self.info, indent=2))
        if name not in self.vector_keys:
            self.vector_keys = self.vector_keys + (name,)
        self.stats = write_stats(self.root)

    def _check_episode(self, episode_index: int) -> None:
        if not 0 <= episode_index < self.num_episodes:
            raise IndexError(f"episode index {episode_index} out of range [0, {self.num_episodes})")
