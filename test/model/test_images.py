"""motus_model.images: the one image decoder of serving and training, checked per encoding against hand-built bytes."""

import numpy as np
import pytest

from motus_model.images import IMAGE_ENCODINGS, decode_image, encode_image

pytestmark = pytest.mark.timeout(60)

# Two rows of two pixels, written out by hand: red, green / blue, white.
RGB = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
# The same pixels as each encoding lays them out on the wire (alpha 7 to show it is dropped), one row each.
WIRE = {
    "rgb8": [[255, 0, 0, 0, 255, 0], [0, 0, 255, 255, 255, 255]],
    "bgr8": [[0, 0, 255, 0, 255, 0], [255, 0, 0, 255, 255, 255]],
    "rgba8": [[255, 0, 0, 7, 0, 255, 0, 7], [0, 0, 255, 7, 255, 255, 255, 7]],
    "bgra8": [[0, 0, 255, 7, 0, 255, 0, 7], [255, 0, 0, 7, 255, 255, 255, 7]],
}


@pytest.mark.parametrize("encoding", sorted(WIRE))
def test_colour_encodings_decode_to_the_hand_built_rgb(encoding: str):
    rows = WIRE[encoding]
    data = bytes(np.array(rows, dtype=np.uint8).reshape(-1))
    out = decode_image(data, encoding, height=2, width=2, step=len(rows[0]))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out.tolist() == RGB.tolist()


def test_mono8_repeats_the_grey_level_into_three_channels():
    out = decode_image(bytes([0, 128, 255, 9]), "mono8", height=2, width=2, step=2)
    assert out.tolist() == [[[0, 0, 0], [128, 128, 128]], [[255, 255, 255], [9, 9, 9]]]


@pytest.mark.parametrize("encoding", sorted(WIRE))
def test_row_padding_is_dropped(encoding: str):
    rows = [row + [99, 99, 99] for row in WIRE[encoding]]  # 3 padding bytes per row
    data = bytes(np.array(rows, dtype=np.uint8).reshape(-1))
    out = decode_image(data, encoding, height=2, width=2, step=len(rows[0]))
    assert out.tolist() == RGB.tolist()


def test_the_result_is_a_copy_not_a_view_of_the_buffer():
    buffer = bytearray(np.array(WIRE["rgb8"], dtype=np.uint8).reshape(-1).tobytes())
    out = decode_image(buffer, "rgb8", 2, 2, 6)
    buffer[0] = 1
    assert out[0, 0, 0] == 255 and out.flags.c_contiguous and out.flags.writeable


@pytest.mark.parametrize("encoding", [e for e in IMAGE_ENCODINGS if e != "mono8"])
def test_encode_is_the_inverse_of_decode(encoding: str):
    image = np.random.default_rng(0).integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
    data, step = encode_image(image, encoding)
    assert step == 5 * (4 if encoding.endswith("a8") else 3)
    assert np.array_equal(decode_image(data, encoding, 3, 5, step), image)


def test_encode_writes_the_hand_built_wire_bytes():
    for encoding in ("rgb8", "bgr8"):
        data, step = encode_image(RGB, encoding)
        assert list(data) == [v for row in WIRE[encoding] for v in row] and step == 6
    data, _ = encode_image(RGB, "bgra8")
    assert list(data) == [v if i % 4 != 3 else 255 for i, v in enumerate(b for row in WIRE["bgra8"] for b in row)]


@pytest.mark.parametrize(
    "encoding, height, width, step, size, message",
    [
        ("yuv422", 2, 2, 4, 8, "encoding must be one of"),
        ("rgb8", 0, 2, 6, 0, "size must be positive"),
        ("rgb8", 2, 2, 5, 10, "step must be >= width \\* channels = 6"),
        ("rgba8", 2, 2, 8, 15, "must hold step \\* height = 8 \\* 2 = 16 bytes"),
    ],
)
def test_bad_layouts_are_rejected_with_expected_vs_got(encoding, height, width, step, size, message):
    with pytest.raises(ValueError, match=message):
        decode_image(bytes(size), encoding, height, width, step)


# --------------------------------------------------------------------------------------------------
# Compressed images (sensor_msgs/CompressedImage payloads), checked against decoders/encoders other than OpenCV:
# a PNG written byte by byte here, and Pillow for jpeg.
def _hand_built_png(rgb: np.ndarray) -> bytes:
    """A PNG of `rgb` (8-bit truecolour, filter 0 on every row), written per the PNG spec without any codec."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    height, width, _ = rgb.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# 16x16 blocks: red, green / blue, white. jpeg keeps the middle of a flat block close (its edges ring, and chroma
# is subsampled), so jpeg comparisons look at the middle 8x8 of each block.
BLOCKS = np.kron(RGB, np.ones((16, 16, 1), dtype=np.uint8))
MIDDLES = np.kron(np.ones((2, 2), dtype=bool), np.pad(np.ones((8, 8), dtype=bool), 4))


def _jpeg_error(decoded: np.ndarray) -> int:
    return int(np.abs(decoded.astype(int) - BLOCKS.astype(int))[MIDDLES].max())


@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", "bgr8; png compressed bgr8"])
def test_a_hand_built_png_decodes_to_its_rgb_pixels(fmt: str):
    from motus_model.images import decode_compressed_image

    out = decode_compressed_image(_hand_built_png(BLOCKS), fmt)
    assert out.dtype == np.uint8 and out.shape == BLOCKS.shape
    assert out.tolist() == BLOCKS.tolist()  # red stays red: no BGR/RGB swap, whatever the format words say


def test_a_pillow_jpeg_decodes_to_its_colours():
    import io

    from PIL import Image

    from motus_model.images import decode_compressed_image

    buffer = io.BytesIO()
    Image.fromarray(BLOCKS).save(buffer, format="JPEG", quality=95)
    out = decode_compressed_image(buffer.getvalue(), "rgb8; jpeg compressed bgr8", expected_shape=(32, 32))
    assert _jpeg_error(out) <= 24  # jpeg loss; a red/blue swap is off by 255
    assert out[8, 8].argmax() == 0 and out[8, 24].argmax() == 1 and out[24, 8].argmax() == 2


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_encode_compressed_is_read_back_by_pillow_in_rgb_order(codec: str):
    import io

    from PIL import Image

    from motus_model.images import decode_compressed_image, encode_compressed_image

    data, fmt = encode_compressed_image(BLOCKS, codec, jpeg_quality=95)
    assert fmt == f"rgb8; {codec} compressed bgr8"  # image_transport's compressed plugin's format string
    read = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    ours = decode_compressed_image(data, fmt)
    if codec == "png":
        assert read.tolist() == BLOCKS.tolist() and ours.tolist() == BLOCKS.tolist()
    else:
        assert _jpeg_error(read) <= 24 and _jpeg_error(ours) <= 24


@pytest.mark.parametrize(
    "data, fmt, shape, message",
    [
        (b"\x00garbage bytes, not an image", "jpeg", None, "does not decode"),
        (b"", "png", None, "does not decode"),
        (_hand_built_png(BLOCKS)[:40], "png", None, "does not decode"),  # truncated inside the header
        (_hand_built_png(BLOCKS), "tiff", None, "format 'tiff' is not supported"),
        (_hand_built_png(BLOCKS), "16UC1; compressedDepth png", None, "is not supported"),
        (_hand_built_png(BLOCKS), "png", (48, 64), "expected 48x64, got 32x32"),
    ],
)
def test_bad_compressed_images_are_value_errors(data, fmt, shape, message):
    from motus_model.images import decode_compressed_image

    with pytest.raises(ValueError, match=message):
        decode_compressed_image(data, fmt, expected_shape=shape)
