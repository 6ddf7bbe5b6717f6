"""Episode video files: write and read uint8 RGB clips through the ffmpeg bundled with imageio-ffmpeg.

LeRobot stores one mp4 per camera per episode; we encode H.264 (libx264) with yuv420p so any player
and LeRobot's own decoders read the files. Frame sizes must be even for yuv420p.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

logger = logging.getLogger(__name__)


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    codec: str = "libx264",
    pixel_format: str = "yuv420p",
    crf: int = 18,
) -> None:
    """Encode frames into a video file.

    Args:
        path: output file (.mp4).
        frames: uint8 array [T, H, W, 3] in RGB; H and W must be even (yuv420p subsamples chroma by 2).
        fps: frame rate written into the container.
        codec: ffmpeg encoder name.
        pixel_format: output pixel format.
        crf: constant rate factor (lower is closer to lossless); 18 is visually lossless for x264.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    num_frames, height, width, _ = frames.shape
    if num_frames == 0:
        raise ValueError("frames must hold at least one frame, got 0")
    if pixel_format == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(f"yuv420p needs even frame sizes, got H={height} W={width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec=codec,
        pix_fmt_in="rgb24",
        pix_fmt_out=pixel_format,
        macro_block_size=1,
        # keyframe every 2 frames, as LeRobot encodes its datasets (cheap seeking for frame access)
        output_params=["-crf", str(crf), "-g", "2"],
        ffmpeg_log_level="error",
    )
    writer.send(None)  # start the generator
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def read_video(
    path: str | Path,
    max_width: int | None = None,
    start_time: float | None = None,
    num_frames: int | None = None,
    fps: float | None = None,
) -> np.ndarray:
    """Decode a video file, whole or one stretch of it (LeRobot v3.0 keeps many episodes per file).

    Args:
        path: the video.
        max_width: shrink wider frames to this width as they are decoded (aspect kept, cv2.INTER_AREA),
            so a long 640x480 episode needed at model resolution never sits in memory at full size.
        start_time: first frame's timestamp in seconds (None: the file's start).
        num_frames: decode at most this many frames.
        fps: the video's frame rate; with ``start_time``, the seek lands half a frame early so a frame
            stamped exactly at ``start_time`` is never lost to rounding.
    Returns:
        uint8 array [T, H, W, 3] in RGB.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    input_params, output_params = [], []
    if start_time:
        # -ss before -i with decoding is frame-accurate: ffmpeg decodes from the previous keyframe and
        # drops the frames before the target.
        seek = max(0.0, start_time - (0.5 / fps if fps else 0.0))
        input_params = ["-ss", f"{seek:.6f}"]
    if num_frames is not None:
        output_params = ["-frames:v", str(int(num_frames))]
    reader = imageio_ffmpeg.read_frames(
        str(path), pix_fmt="rgb24", input_params=input_params, output_params=output_params
    )
    meta = next(reader)
    width, height = meta["size"]
    target = None
    if max_width is not None and width > max_width:
        target = (int(max_width), max(1, int(round(height * max_width / width))))  # cv2 takes (W, H)
    frames = []
    for buffer in reader:
        frame = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
        frames.append(cv2.resize(frame, target, interpolation=cv2.INTER_AREA) if target else frame)
    if not frames:
        raise ValueError(f"video file holds no frames: {path}")
    return np.stack(frames)


def concat_videos(paths: list[Path], output: str | Path) -> None:
    """Join videos of identical encoding into one file without re-encoding (ffmpeg's concat demuxer).

    LeRobot v3.0 stores consecutive episodes of a camera in one mp4; each episode is addressed by its
    start and end timestamps in meta/episodes.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    listing = output.with_name(output.name + ".concat.txt")
    listing.write_text("".join(f"file '{Path(p).resolve()}'\n" for p in paths))
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        str(listing),
        "-c",
        "copy",
        str(output),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    listing.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not join {len(paths)} videos into {output}: {result.stderr.strip()}")


def video_duration(path: str | Path) -> float:
    """Container duration in seconds (what LeRobot stores as an episode's to_timestamp - from_timestamp)."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    reader.close()
    return float(meta["duration"])
