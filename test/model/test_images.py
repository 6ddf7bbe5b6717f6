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
