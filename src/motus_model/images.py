"""Raw camera images <-> uint8 RGB arrays: the one decoder (and encoder) of the project.

Serving (motus_ros.conversions, sensor_msgs/Image from a live camera) and training (the bag converter,
sensor_msgs/Image recorded in a bag) both decode through `decode_image`, so a camera that works in one
works in the other. Everything here is numpy only (no ROS, no torch) so that profile validation and the
bag converter import it cheaply.

The wire layout is sensor_msgs/Image's (REP 118 / sensor_msgs/image_encodings.hpp): `height` rows of
`step` bytes each; a row holds `width` pixels of `channels` bytes followed by optional padding. All the
supported encodings are 8 bits per channel, so `is_bigendian` does not matter.
"""

from __future__ import annotations

import numpy as np

# Bytes per pixel of every supported encoding. Alpha is dropped on decode; mono8 is repeated to grey RGB.
CHANNELS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
IMAGE_ENCODINGS: tuple[str, ...] = tuple(CHANNELS)


def check_encoding(encoding: str) -> int:
    """The channel count of `encoding`; ValueError naming the supported set for any other."""
    if encoding not in CHANNELS:
        raise ValueError(f"image encoding must be one of {IMAGE_ENCODINGS}, got {encoding!r}")
    return CHANNELS[encoding]


def check_image_layout(encoding: str, height: int, width: int, step: int, num_bytes: int) -> int:
    """Validate a raw image's header against its data size; returns the channel count.

    Raises ValueError saying what was expected and what came (unknown encoding, empty size, a step shorter
    than a row of pixels, a buffer that is not step * height bytes).
    """
    channels = check_encoding(encoding)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if step < width * channels:
        raise ValueError(
            f"image step must be >= width * channels = {width * channels} for {width} px of {encoding}, got {step}"
        )
    if num_bytes != step * height:
        raise ValueError(
            f"image data must hold step * height = {step} * {height} = {step * height} bytes for a "
            f"{height}x{width} {encoding} image, got {num_bytes}"
        )
    return channels


def decode_image(
    data: bytes | bytearray | memoryview | np.ndarray, encoding: str, height: int, width: int, step: int
) -> np.ndarray:
    """Raw image bytes -> a new uint8 RGB array [height, width, 3].

    Row padding (step > width * channels) is dropped, BGR(A) is reordered to RGB, alpha is dropped and
    mono8 is repeated into three equal channels. The result never aliases `data`.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    height, width, step = int(height), int(width), int(step)
    channels = check_image_layout(encoding, height, width, step, int(buffer.size))
    pixels = buffer.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)  # np.repeat copies
    if encoding in ("bgr8", "bgra8"):
        pixels = pixels[..., 2::-1]  # B, G, R -> R, G, B (alpha dropped)
    else:
        pixels = pixels[..., :3]
    return np.array(pixels, dtype=np.uint8, order="C")  # a copy: never aliases the caller's buffer


def encode_image(rgb: np.ndarray, encoding: str = "rgb8") -> tuple[bytes, int]:
    """A uint8 RGB array [H, W, 3] (or [H, W] / [H, W, 1] grey for mono8) -> (data, step) in `encoding`.

    The inverse of decode_image: decode_image(*encode_image(rgb, e), e, H, W, step) == rgb for every
    encoding but mono8 (which needs a grey input). rgba8/bgra8 get an opaque alpha (255).
    """
    check_encoding(encoding)
    array = np.asarray(rgb)
    if array.dtype != np.uint8:
        raise ValueError(f"image array must be uint8, got {array.dtype}")
    if encoding == "mono8":
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.ndim != 2:
            raise ValueError(f"a mono8 image must be [H, W] or [H, W, 1], got {array.shape}")
        return np.ascontiguousarray(array).tobytes(), int(array.shape[1])
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"an {encoding} image must be an RGB array [H, W, 3], got {array.shape}")
    if encoding in ("bgr8", "bgra8"):
        array = array[..., ::-1]
    if encoding in ("rgba8", "bgra8"):
        alpha = np.full(array.shape[:2] + (1,), 255, dtype=np.uint8)
        array = np.concatenate([array, alpha], axis=2)
    array = np.ascontiguousarray(array)
    return array.tobytes(), int(array.shape[1] * array.shape[2])
