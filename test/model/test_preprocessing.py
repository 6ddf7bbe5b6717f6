"""Camera composite layout and state/action normalisation (motus_model.preprocessing)."""

import json

import numpy as np
import pytest
import torch

from motus_model.config import MotusConfig
from motus_model.preprocessing import (
    CompositeLayout,
    Normalizer,
    compose_views,
    image_to_tensor,
    preprocess_images,
    resize_with_padding,
    split_composite,
    tensor_to_image,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def solid(height: int, width: int, colour: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (height, width, 3)).copy()


def aloha_views() -> dict[str, np.ndarray]:
    """480x640 views (the ALOHA cameras), one distinct colour each."""
    return {"high": solid(480, 640, RED), "left_wrist": solid(480, 640, GREEN), "right_wrist": solid(480, 640, BLUE)}


def test_published_layout_geometry():
    layout = CompositeLayout(384, 320)
    assert layout.canvas_size == (360, 320)
    assert layout.head_size == (240, 320)
    assert layout.wrist_size == (120, 160)
    box = layout.content_box
    assert (box.top, box.left, box.height, box.width) == (12, 0, 360, 320)


def test_composite_places_each_view_and_pads_black_centred():
    layout = CompositeLayout(384, 320)
    composite = compose_views(aloha_views(), layout)
    assert composite.shape == (384, 320, 3) and composite.dtype == np.uint8
    # 12 black rows on top and bottom (centred padding).
    assert (composite[:12] == 0).all() and (composite[-12:] == 0).all()
    # Head view: rows 12..252, full width.
    assert (composite[12:252] == RED).all()
    # Left wrist below on the left half, right wrist on the right half.
    assert (composite[252:372, :160] == GREEN).all()
    assert (composite[252:372, 160:] == BLUE).all()


def test_composite_tensor_range_and_padding_value():
    layout = CompositeLayout(384, 320)
    tensor = preprocess_images(aloha_views(), layout)
    assert tensor.shape == (3, 384, 320) and tensor.dtype == torch.float32
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert torch.all(tensor[:, 0] == -1.0)  # black padding -> -1
    assert torch.allclose(tensor[:, 100, 100], torch.tensor([1.0, -1.0, -1.0]))  # red head view


def test_small_layout_pads_width_when_canvas_is_taller():
    # 64x64 composite: canvas 72x64 is taller than the target, so it shrinks and pads the sides.
    layout = CompositeLayout(64, 64)
    composite = compose_views(aloha_views(), layout)
    box = layout.content_box
    assert box.height == 64 and box.width < 64 and box.left > 0
    assert (composite[:, : box.left] == 0).all() and (composite[:, box.left + box.width :] == 0).all()
    # Interior of the head region is red, bottom-left interior green, bottom-right interior blue.
    assert tuple(composite[10, 32]) == RED
    assert tuple(composite[58, box.left + 5]) == GREEN
    assert tuple(composite[58, box.left + box.width - 5]) == BLUE


def test_split_composite_inverts_compose():
    layout = CompositeLayout(384, 320)
    rng = np.random.default_rng(0)
    views = {
        "high": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
        "left_wrist": rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),
        "right_wrist": rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),
    }
    back = split_composite(compose_views(views, layout), layout)
    for role, view in views.items():
        np.testing.assert_array_equal(back[role], view)  # slot-sized views are copied verbatim


def test_tensor_image_round_trip():
    image = np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(tensor_to_image(image_to_tensor(image)), image)


def test_composite_input_is_resized_with_padding():
    layout = CompositeLayout(384, 320)
    canvas = solid(360, 320, RED)
    tensor = preprocess_images(canvas, layout)
    assert tensor.shape == (3, 384, 320)
    assert torch.all(tensor[:, :12] == -1.0) and torch.all(tensor[0, 12:372] == 1.0)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
        (np.zeros((10, 10), dtype=np.uint8), r"\[H, W, 3\]"),
        (np.zeros((10, 10, 4), dtype=np.uint8), "3 \\(RGB\\) channels"),
        ([[0]], "numpy"),
    ],
)
def test_bad_images_raise_clear_errors(bad, message):
    views = aloha_views()
    views["left_wrist"] = bad
    with pytest.raises(ValueError, match=message):
        compose_views(views, CompositeLayout(384, 320))


def test_missing_and_unknown_camera_roles():
    views = aloha_views()
    del views["right_wrist"]
    with pytest.raises(
        ValueError, match=r"missing camera \['right_wrist'\]\): expected roles \['high', 'left_wrist', 'right_wrist'\]"
    ):
        compose_views(views, CompositeLayout(384, 320))
    views = aloha_views()
    views["front"] = views["high"]
    with pytest.raises(ValueError, match=r"unknown camera \['front'\]\): expected roles"):
        compose_views(views, CompositeLayout(384, 320))


def test_resize_with_padding_keeps_aspect():
    wide = solid(10, 40, GREEN)
    out = resize_with_padding(wide, 40, 40)
    assert (out[:15] == 0).all() and (out[25:] == 0).all() and (out[15:25] == GREEN).all()


STATS = {
    "action": {"mean": [0.5, -1.0, 2.0], "std": [2.0, 0.5, 0.0], "min": [-1.0, -3.0, 2.0], "max": [2.0, 1.0, 2.0]},
    "state": {"mean": [0.0, 1.0, 0.0], "std": [1.0, 1.0, 1.0], "min": [-1.0, 0.0, -2.0], "max": [1.0, 2.0, 2.0]},
}


@pytest.mark.parametrize("mode", ["mean_std", "min_max", "identity"])
def test_normalizer_round_trip_numpy_and_torch(mode):
    normalizer = Normalizer(STATS, mode=mode)
    raw = np.array([[1.0, -2.0, 2.0], [-0.5, 0.5, 2.0]], dtype=np.float32)
    normalized = normalizer.normalize("action", raw)
    np.testing.assert_allclose(normalizer.unnormalize("action", normalized), raw, atol=1e-5)
    raw_t = torch.from_numpy(raw)
    normalized_t = normalizer.normalize("action", raw_t)
    assert isinstance(normalized_t, torch.Tensor)
    torch.testing.assert_close(normalizer.unnormalize("action", normalized_t), raw_t, atol=1e-5, rtol=0)
    np.testing.assert_allclose(normalized_t.numpy(), normalized, atol=1e-5)
    assert np.isfinite(normalized).all()  # zero std / zero range dimension stays finite


def test_normalizer_values():
    mean_std = Normalizer(STATS, mode="mean_std")
    np.testing.assert_allclose(mean_std.normalize("action", np.array([2.5, -1.0, 2.0])), [1.0, 0.0, 0.0], atol=1e-5)
    min_max = Normalizer(STATS, mode="min_max")
    np.testing.assert_allclose(min_max.normalize("action", np.array([-1.0, 1.0, 2.0])), [-1.0, 1.0, -1.0], atol=1e-5)
    identity = Normalizer.identity()
    raw = np.array([3.0, 4.0])
    assert identity.normalize("action", raw) is raw


def test_normalizer_dict_round_trip_and_errors():
    normalizer = Normalizer(STATS, mode="min_max", eps=1e-4)
    restored = Normalizer.from_dict(json.loads(json.dumps(normalizer.to_dict())))
    assert restored.mode == "min_max" and restored.eps == 1e-4
    x = np.array([0.3, -0.2, 2.0])
    np.testing.assert_allclose(restored.normalize("action", x), normalizer.normalize("action", x))
    with pytest.raises(ValueError, match="expected last dimension 3"):
        normalizer.normalize("action", np.zeros(4))
    with pytest.raises(ValueError, match="no normalisation stats for 'gripper'"):
        normalizer.normalize("gripper", np.zeros(3))
    with pytest.raises(ValueError, match="expected one of"):
        Normalizer(STATS, mode="zscore")
    with pytest.raises(ValueError, match="missing \\['min', 'max'\\]"):
        Normalizer({"action": {"mean": [0.0], "std": [1.0]}}, mode="min_max")


# --------------------------------------------------------------------------------------
# Camera layouts: one to four views (config.cameras -> CompositeLayout)
# --------------------------------------------------------------------------------------


def coloured(roles, colours=(RED, GREEN, BLUE, (255, 255, 0))) -> dict[str, np.ndarray]:
    return {role: solid(480, 640, colour) for role, colour in zip(roles, colours)}


def test_default_layout_is_the_reference_three_view_geometry():
    # The layout of a checkpoint without a camera section: the same boxes as the reference composite.
    layout = CompositeLayout(384, 320)
    assert layout.roles == ("high", "left_wrist", "right_wrist") and layout.tiling == "head_row"
    assert layout.view_boxes() == {
        "high": (0, 0, 240, 320),
        "left_wrist": (240, 0, 120, 160),
        "right_wrist": (240, 160, 120, 160),
    }
    assert CompositeLayout.from_config(MotusConfig.preset("motus-8b")) == layout


def test_one_view_fills_the_whole_composite():
    layout = CompositeLayout(96, 80, ("high",))
    assert layout.tiling == "grid" and layout.canvas_size == (96, 80)
    composite = compose_views({"high": solid(480, 640, RED)}, layout)
    assert composite.shape == (96, 80, 3) and (composite == RED).all()  # no padding anywhere


def test_two_views_are_stacked_top_and_bottom():
    layout = CompositeLayout(96, 80, ("high", "low"))
    composite = compose_views(coloured(("high", "low")), layout)
    assert (composite[:48] == RED).all() and (composite[48:] == GREEN).all()


def test_four_views_head_row_puts_three_below_the_head():
    roles = ("high", "low", "left_wrist", "right_wrist")
    layout = CompositeLayout(384, 320, roles)
    assert layout.tiling == "head_row" and layout.canvas_size == (360, 320)
    composite = compose_views(coloured(roles), layout)
    assert (composite[12:252] == RED).all()
    # three slots of 106, 106, 108 columns below the head; padding rows stay black
    assert (composite[252:372, :106] == GREEN).all() and (composite[252:372, 106:212] == BLUE).all()
    assert (composite[252:372, 212:] == (255, 255, 0)).all()
    assert (composite[:12] == 0).all() and (composite[372:] == 0).all()


def test_four_views_grid_and_three_views_grid_leave_the_last_cell_black():
    roles = ("a", "b", "c", "d")
    composite = compose_views(coloured(roles), CompositeLayout(64, 64, roles, "grid"))
    assert (composite[:32, :32] == RED).all() and (composite[:32, 32:] == GREEN).all()
    assert (composite[32:, :32] == BLUE).all() and (composite[32:, 32:] == (255, 255, 0)).all()
    three = compose_views(coloured(roles[:3]), CompositeLayout(64, 64, roles[:3], "grid"))
    assert (three[32:, 32:] == 0).all() and (three[32:, :32] == BLUE).all()


@pytest.mark.parametrize(
    "roles, tiling",
    [(("high",), "grid"), (("high", "low"), "grid"), (("high", "low", "left_wrist", "right_wrist"), "head_row")],
)
def test_split_composite_inverts_every_tiling(roles, tiling):
    layout = CompositeLayout(96, 80, roles, tiling)
    rng = np.random.default_rng(3)
    views = {
        role: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for role, (_, _, h, w) in layout.view_boxes().items()
    }
    back = split_composite(compose_views(views, layout), layout)
    assert list(back) == list(roles)
    for role, view in views.items():
        np.testing.assert_array_equal(back[role], view)


@pytest.mark.parametrize(
    "roles, tiling, message",
    [
        ((), "", "1 to 4 cameras"),
        (("a", "b", "c", "d", "e"), "", "1 to 4 cameras"),
        (("high", "high"), "", "unique"),
        (("high",), "head_row", "needs 2 to 4"),
        (("high", "low"), "mosaic", "tiling must be one of"),
        (("composite",), "", "not 'composite'"),
        (("left wrist",), "", "letters, digits"),
    ],
)
def test_bad_camera_layouts_are_refused_with_the_rule(roles, tiling, message):
    with pytest.raises(ValueError, match=message):
        CompositeLayout(96, 80, roles, tiling)
