"""Camera images <-> uint8 RGB arrays: the one decoder (and encoder) of the project, raw and compressed.

Serving (motus_ros.conversions, sensor_msgs/Image from a live camera) and training (the bag converter,
sensor_msgs/Image recorded in a bag) both decode through `decode_image`, so a camera that works in one
works in the other; compressed cameras (sensor_msgs/CompressedImage, jpeg/png, as image_transport's
`compressed` plugin publishes on `<topic>/compressed`) go through `decode_compressed_image` in both. No ROS,
no torch: numpy, and OpenCV for the codecs (imported only when a compressed image is (de)coded, so profile
validation stays cheap).

The wire layout is sensor_msgs/Image's (REP 118 / sensor_msgs/image_encodings.hpp): `height` rows of
`step` bytes each; a row holds `width` pixels of `channels` bytes followed by optional padding. All the
supported encodings are 8 bits per channel, so `is_bigendian` does not matter.
"""

from __future__ import annotations

import numpy as np

# Bytes per pixel of every supported encoding. Alpha is dropped on decode; mono8 is repeated to grey RGB.
CHANNELS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
IMAGE_ENCODINGS: tuple[str, ...] = tuple(CHANNELS)
# Codecs of sensor_msgs/CompressedImage we read and write (image_transport's compressed plugin: jpeg, png).
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")


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


# --------------------------------------------------------------------------------------------------
# sensor_msgs/CompressedImage payloads (image_transport's `compressed` plugin)
def compressed_codec(fmt: str) -> str:
    """The codec ("jpeg" or "png") named by a CompressedImage `format`; ValueError for any other.

    image_transport writes e.g. "jpeg", "png" or "rgb8; jpeg compressed bgr8" (source encoding; codec and the
    encoding of the compressed pixels); the codec is what matters. compressedDepth (16-bit depth) is refused.
    """
    text = str(fmt).lower()
    if "compresseddepth" not in text:
        if "png" in text:
            return "png"
        if "jpeg" in text or "jpg" in text:
            return "jpeg"
    raise ValueError(
        f"CompressedImage format {fmt!r} is not supported (jpeg and png colour images are); publish or record the "
        "camera with image_transport's 'compressed' plugin (jpeg/png) or as raw sensor_msgs/Image"
    )


def decode_compressed_image(
    data: bytes | bytearray | memoryview | np.ndarray, fmt: str, expected_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """A CompressedImage payload (jpeg or png) -> a new uint8 RGB array [H, W, 3].

    The codecs store colour in its true order (OpenCV hands back BGR, reordered here), so the result does not
    depend on the "bgr8"/"rgb8" words of `fmt`; grey images come back as three equal channels.
    expected_shape (height, width): a decoded image of any other size is a ValueError (a camera that changed
    resolution must not feed the model silently). Undecodable bytes are a ValueError too.
    """
    import cv2  # lazily: importing OpenCV costs more than everything else here

    codec = compressed_codec(fmt)
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if buffer.dtype != np.uint8:
        buffer = buffer.astype(np.uint8)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    except cv2.error:  # OpenCV raises (rather than returning None) for some malformed headers
        image = None
    if image is None:
        raise ValueError(f"a {codec} CompressedImage ({buffer.size} bytes) does not decode: the image data is damaged")
    if expected_shape is not None and tuple(image.shape[:2]) != tuple(expected_shape):
        raise ValueError(
            f"image size: expected {expected_shape[0]}x{expected_shape[1]}, got {image.shape[0]}x{image.shape[1]} "
            f"({codec})"
        )
    return np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB (a copy)


def encode_compressed_image(rgb: np.ndarray, codec: str = "jpeg", jpeg_quality: int = 90) -> tuple[bytes, str]:
    """A uint8 RGB array [H, W, 3] -> (payload, format) as image_transport's compressed plugin publishes it.

    The format string is the plugin's ("rgb8; jpeg compressed bgr8"), so ROS tools (rqt_image_view, rviz,
    image_transport republish) decode it to the colours given here. decode_compressed_image inverts it (png
    exactly, jpeg within its loss).
    """
    import cv2

    if codec not in COMPRESSED_FORMATS:
        raise ValueError(f"compressed codec must be one of {COMPRESSED_FORMATS}, got {codec!r}")
    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image array must be uint8 RGB [H, W, 3], got {array.dtype} {array.shape}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if codec == "jpeg" else []
    ok, payload = cv2.imencode(".jpg" if codec == "jpeg" else ".png", np.ascontiguousarray(array[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {array.shape} image as {codec}")
    return payload.tobytes(), f"rgb8; {codec} compressed bgr8"
