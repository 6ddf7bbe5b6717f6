"""Optical flow estimation and the Middlebury flow-image coding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from motus_model.latent_actions.flow import (
    OpenCVFlowEstimator,
    PTLFlowEstimator,
    RAFTFlowEstimator,
    flow_to_image,
    make_flow_estimator,
)


def textured_pair(dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """A blurred-noise image and the same content moved by (dx, dy) pixels."""
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur((rng.random((120, 160, 3)) * 255).astype(np.uint8), (5, 5), 1.5)
    top, left = 20, 20
    frame0 = big[top : top + 64, left : left + 96]
    frame1 = big[top - dy : top - dy + 64, left - dx : left - dx + 96]
    return np.ascontiguousarray(frame0), np.ascontiguousarray(frame1)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_opencv_recovers_known_translation(method):
    frame0, frame1 = textured_pair(dx=3, dy=-2)
    flow = OpenCVFlowEstimator(method).estimate(frame0, frame1)
    assert flow.shape == (64, 96, 2) and flow.dtype == np.float32
    interior = flow[8:-8, 8:-8].reshape(-1, 2)
    np.testing.assert_allclose(np.median(interior, axis=0), [3.0, -2.0], atol=0.25)


def test_estimator_rejects_bad_frames():
    frame0, frame1 = textured_pair(1, 1)
    with pytest.raises(ValueError, match="same size"):
        OpenCVFlowEstimator().estimate(frame0, frame1[:32])
    with pytest.raises(ValueError, match="uint8 RGB"):
        OpenCVFlowEstimator().estimate(frame0.astype(np.float32), frame1)


def _hue_degrees(rgb: np.ndarray) -> float:
    hsv = cv2.cvtColor(rgb.reshape(1, 1, 3), cv2.COLOR_RGB2HSV_FULL)[0, 0]
    return float(hsv[0]) * 360.0 / 256.0


def test_colour_wheel_directions_and_scale():
    # Middlebury wheel: +x (right) is red, +y (down, image coordinates) is yellow-orange,
    # -x is cyan-blue, -y is blue-magenta; hue runs through the wheel's six segments.
    expected_hues = {(1.0, 0.0): 0.0, (0.0, 1.0): 53.0, (-1.0, 0.0): 191.0, (0.0, -1.0): 260.0}
    for (u, v), hue in expected_hues.items():
        flow = np.tile(np.array([u, v]) * 5.0, (4, 4, 1))
        coded = flow_to_image(flow, max_radius=5.0)
        assert coded.max_radius == 5.0
        assert abs(_hue_degrees(coded.image[0, 0]) - hue) < 6.0, (u, v, _hue_degrees(coded.image[0, 0]))
        assert coded.image[0, 0].max() == 255 and coded.image[0, 0].min() < 5  # fully saturated at max radius
    np.testing.assert_array_equal(flow_to_image(np.tile([1.0, 0.0], (2, 2, 1))).image[0, 0], [255, 0, 0])


def test_scale_is_recorded_and_drives_saturation():
    flow = np.zeros((4, 4, 2))
    flow[0, 0] = [4.0, 0.0]
    flow[1, 1] = [2.0, 0.0]
    coded = flow_to_image(flow)
    assert coded.max_radius == pytest.approx(4.0)
    assert coded.image[2, 2].tolist() == [255, 255, 255]  # zero motion is white
    half, full = coded.image[1, 1].astype(int), coded.image[0, 0].astype(int)
    assert full[1] < half[1] < 255  # half the magnitude, half the saturation
    # beyond max_radius the colour is darkened, not wrapped
    assert flow_to_image(flow, max_radius=2.0).image[0, 0].max() < 255


def test_learned_adapters_fail_clearly():
    with pytest.raises((ImportError, ValueError)) as raft_error:
        RAFTFlowEstimator(None)
    assert "torchvision" in str(raft_error.value) or "weights" in str(raft_error.value)
    with pytest.raises((ImportError, ValueError)) as ptl_error:
        PTLFlowEstimator(None)
    assert "ptlflow" in str(ptl_error.value) or "weights" in str(ptl_error.value)
    with pytest.raises(ValueError, match="unknown flow estimator"):
        make_flow_estimator("nope")
