"""Optical flow between frames, and the flow -> RGB image coding the latent-action VAE reconstructs.

The paper computes flow with DPFlow and turns it into an RGB image (arXiv 2512.13030, "Optical
Flow-Based Representation"). Here:

- ``FlowEstimator.estimate(frame0, frame1) -> flow [H, W, 2]`` (float32 pixels, (dx, dy): where each
  pixel of frame0 moves to in frame1).
- ``OpenCVFlowEstimator`` (DIS or Farneback) is the default: offline, on the CPU, no weights.
- ``RAFTFlowEstimator`` (torchvision RAFT) and ``PTLFlowEstimator`` (DPFlow and others through
  ptlflow) are adapters for the learned estimators. Neither library is installed here and no weights
  can be downloaded at run time: they import lazily and need a local weights file.
- ``flow_to_image`` is the standard Middlebury colour coding (Baker et al., "A Database and
  Evaluation Methodology for Optical Flow", the colour wheel of their computeColor.m): hue is the
  direction, saturation the magnitude relative to a max radius, which is returned so the coding can
  be inverted (``image_to_flow``) and kept fixed across a dataset.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

logger = logging.getLogger(__name__)


def _check_pair(frame0: np.ndarray, frame1: np.ndarray) -> None:
    for name, frame in (("frame0", frame0), ("frame1", frame1)):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            shape = getattr(frame, "shape", None)
            raise ValueError(
                f"{name} must be a uint8 RGB array [H, W, 3], got {getattr(frame, 'dtype', type(frame))} {shape}"
            )
    if frame0.shape != frame1.shape:
        raise ValueError(f"frames must have the same size, got {frame0.shape} and {frame1.shape}")


class FlowEstimator(ABC):
    """Dense optical flow between two RGB frames."""

    @abstractmethod
    def estimate(self, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] x 2 -> float32 flow [H, W, 2] in pixels (dx, dy) from frame0 to frame1."""


class OpenCVFlowEstimator(FlowEstimator):
    """OpenCV's DIS (default) or Farneback flow on grayscale frames; CPU only, no weights.

    Args:
        method: "dis" or "farneback".
        dis_preset: cv2.DISOPTICAL_FLOW_PRESET_{ULTRAFAST,FAST,MEDIUM}.
    """

    def __init__(self, method: str = "dis", dis_preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> None:
        if method not in ("dis", "farneback"):
            raise ValueError(f"method must be 'dis' or 'farneback', got {method!r}")
        self.method = method
        self._dis = cv2.DISOpticalFlow_create(dis_preset) if method == "dis" else None

    def estimate(self, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        _check_pair(frame0, frame1)
        gray0 = cv2.cvtColor(frame0, cv2.COLOR_RGB2GRAY)
        gray1 = cv2.cvtColor(frame1, cv2.COLOR_RGB2GRAY)
        if self.method == "dis":
            flow = self._dis.calc(gray0, gray1, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(gray0, gray1, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        return flow.astype(np.float32)


def _require_weights(weights_path: str | Path | None, what: str) -> Path:
    if weights_path is None or str(weights_path) == "":
        raise ValueError(f"{what} needs a local weights file (weights_path); nothing is downloaded at run time")
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found at {path}")
    return path


class RAFTFlowEstimator(FlowEstimator):
    """torchvision's RAFT (``raft_large`` or ``raft_small``) from a local state-dict file.

    Args:
        weights_path: a torchvision RAFT state dict (e.g. raft_large_C_T_SKHT_V2-ff5fadd5.pth, fetched beforehand).
        variant: "large" or "small".
        device: torch device.
        num_flow_updates: RAFT refinement iterations.
    """

    def __init__(
        self, weights_path: str | Path | None, variant: str = "large", device: str = "cpu", num_flow_updates: int = 12
    ) -> None:
        try:
            from torchvision.models.optical_flow import raft_large, raft_small
        except ImportError as error:
            raise ImportError(
                "RAFTFlowEstimator needs torchvision (pip install torchvision matching torch), which is not installed; "
                "use OpenCVFlowEstimator otherwise"
            ) from error
        if variant not in ("large", "small"):
            raise ValueError(f"variant must be 'large' or 'small', got {variant!r}")
        path = _require_weights(weights_path, "RAFTFlowEstimator")
        self.model = (raft_large if variant == "large" else raft_small)(weights=None, progress=False)
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model.eval().to(device)
        self.device = device
        self.num_flow_updates = num_flow_updates

    @torch.no_grad()
    def estimate(self, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        _check_pair(frame0, frame1)
        height, width = frame0.shape[:2]
        if height % 8 or width % 8:
            raise ValueError(f"RAFT needs frame sizes divisible by 8, got {height}x{width}")

        def to_tensor(frame: np.ndarray) -> torch.Tensor:  # RAFT expects [-1, 1]
            return torch.from_numpy(frame).permute(2, 0, 1)[None].float().div(127.5).sub(1.0).to(self.device)

        flows = self.model(to_tensor(frame0), to_tensor(frame1), num_flow_updates=self.num_flow_updates)
        return flows[-1][0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


class PTLFlowEstimator(FlowEstimator):
    """Any ptlflow model (the paper uses DPFlow: ``model_name="dpflow"``) from a local checkpoint.

    Args:
        weights_path: a ptlflow checkpoint file for that model.
        model_name: ptlflow model name.
        device: torch device.
    """

    def __init__(self, weights_path: str | Path | None, model_name: str = "dpflow", device: str = "cpu") -> None:
        try:
            import ptlflow
        except ImportError as error:
            raise ImportError(
                "PTLFlowEstimator needs the ptlflow package (pip install ptlflow), which is not installed; "
                "use OpenCVFlowEstimator otherwise"
            ) from error
        path = _require_weights(weights_path, f"PTLFlowEstimator({model_name})")
        self.model = ptlflow.get_model(model_name, ckpt_path=str(path)).eval().to(device)
        self.device = device

    @torch.no_grad()
    def estimate(self, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        _check_pair(frame0, frame1)
        images = torch.from_numpy(np.stack([frame0, frame1])).permute(0, 3, 1, 2).float().div(255.0)
        outputs = self.model({"images": images[None].to(self.device)})  # [1, 2, 3, H, W] in [0, 1]
        return outputs["flows"][0, 0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


def make_flow_estimator(
    name: str = "opencv", weights_path: str | Path | None = None, device: str = "cpu"
) -> FlowEstimator:
    """Build an estimator by name: "opencv" (DIS), "opencv-farneback", "raft", "raft-small", "dpflow"."""
    if name == "opencv":
        return OpenCVFlowEstimator("dis")
    if name == "opencv-farneback":
        return OpenCVFlowEstimator("farneback")
    if name in ("raft", "raft-small"):
        return RAFTFlowEstimator(weights_path, "small" if name == "raft-small" else "large", device)
    if name == "dpflow":
        return PTLFlowEstimator(weights_path, "dpflow", device)
    raise ValueError(f"unknown flow estimator {name!r}; expected opencv, opencv-farneback, raft, raft-small or dpflow")


# ---------------------------------------------------------------------------------------------
# Middlebury colour coding
# ---------------------------------------------------------------------------------------------


def make_color_wheel() -> np.ndarray:
    """The 55-colour Middlebury wheel [55, 3] in [0, 255]: red-yellow 15, yellow-green 6, green-cyan 4,
    cyan-blue 11, blue-magenta 13, magenta-red 6 (Baker et al.)."""
    segments = [
        (15, (255, 0, 0), (255, 255, 0)),
        (6, (255, 255, 0), (0, 255, 0)),
        (4, (0, 255, 0), (0, 255, 255)),
        (11, (0, 255, 255), (0, 0, 255)),
        (13, (0, 0, 255), (255, 0, 255)),
        (6, (255, 0, 255), (255, 0, 0)),
    ]
    colors = []
    for count, start, end in segments:
        fractions = np.arange(count) / count
        colors.append(np.array(start)[None] + fractions[:, None] * (np.array(end) - np.array(start))[None])
    return np.concatenate(colors).astype(np.float64)


_COLOR_WHEEL = make_color_wheel()


@dataclass(frozen=True)
class FlowImage:
    """A flow coded as an RGB image, with the magnitude that maps to full saturation."""

    image: np.ndarray  # uint8 [H, W, 3]
    max_radius: float  # pixels of flow at the edge of the wheel


def flow_to_image(flow: np.ndarray, max_radius: float | None = None, eps: float = 1e-5) -> FlowImage:
    """Middlebury coding of a flow field.

    Args:
        flow: float [H, W, 2] (dx, dy) in pixels.
        max_radius: flow magnitude (pixels) shown at full saturation; None uses this flow's largest
            magnitude. Use a fixed value across a dataset so colours mean the same speed everywhere.
            Larger magnitudes are drawn darkened (x0.75), as in the reference code.
    Returns:
        FlowImage(uint8 [H, W, 3], the max radius used).
    """
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be [H, W, 2], got {tuple(flow.shape)}")
    if not np.all(np.isfinite(flow)):
        raise ValueError("flow holds NaN or inf values")
    radius_map = np.hypot(flow[..., 0], flow[..., 1])
    if max_radius is None:
        max_radius = float(radius_map.max())
    if max_radius < 0:
        raise ValueError(f"max_radius must be >= 0, got {max_radius}")
    u = flow[..., 0] / (max_radius + eps)
    v = flow[..., 1] / (max_radius + eps)
    radius = np.hypot(u, v)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    num_colors = _COLOR_WHEEL.shape[0]
    position = (angle + 1) / 2 * (num_colors - 1)
    lower = np.floor(position).astype(np.int64)
    upper = (lower + 1) % num_colors
    fraction = (position - lower)[..., None]
    color = ((1 - fraction) * _COLOR_WHEEL[lower] + fraction * _COLOR_WHEEL[upper]) / 255.0
    inside = (radius <= 1)[..., None]
    color = np.where(inside, 1 - radius[..., None] * (1 - color), color * 0.75)
    return FlowImage(image=np.floor(255 * color).astype(np.uint8), max_radius=float(max_radius))
