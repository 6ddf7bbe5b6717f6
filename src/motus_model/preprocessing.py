"""Pre- and post-processing shared by training and serving.

This module owns the two transforms that must be identical on both sides (the
reference release drifted here: its offline example resizes without padding, training pads):

1. The **camera composite**: one to four camera views packed into one image (`CompositeLayout`; the roles
   and tiling come from the checkpoint's `config.cameras`). The default, and every checkpoint saved
   without a camera section, is exactly the thu-ml/Motus layout (its LeRobot loader builds the same): the
   head camera ("high") on the top two thirds, the left and right wrist cameras side by side below, then
   `resize_with_padding` to the model's composite size. For the published
   384x320 composite this is: head 240x320 on top, wrists 120x160 each below,
   a 360x320 canvas, padded to 384x320.
2. The **state/action normalisation** (`Normalizer`), whose statistics are saved
   in the checkpoint folder.

Choices the reference leaves open (its `resize_with_padding` is not public):
- Pad colour: black (0 in uint8, which is -1 after the x2-1 image scaling).
- Placement: centred; an odd number of padding pixels puts the extra one at the
  bottom / right.
- Interpolation: `cv2.INTER_AREA` when shrinking (no aliasing), `cv2.INTER_LINEAR`
  when enlarging.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import torch

from motus_model.config import DEFAULT_CAMERA_ROLES, CameraConfig

logger = logging.getLogger(__name__)

# The default camera roles in composite order (ALOHA naming: cam_high, cam_left_wrist, cam_right_wrist): the
# layout of checkpoints saved without a "cameras" config section. A checkpoint's own roles: config.cameras.roles.
CAMERA_ROLES: tuple[str, ...] = DEFAULT_CAMERA_ROLES

PAD_VALUE_UINT8 = 0  # black; see the module docstring


# --------------------------------------------------------------------------------------
# Image validation and resizing
# --------------------------------------------------------------------------------------


def validate_image(image: Any, name: str = "image") -> np.ndarray:
    """Check that `image` is a uint8 RGB array of shape [H, W, 3] and return it.

    Raises:
        ValueError: wrong type, dtype, rank or channel count (message says expected vs got).
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: expected a numpy uint8 array [H, W, 3], got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {image.dtype}")
    if image.ndim != 3:
        raise ValueError(f"{name}: expected shape [H, W, 3], got {tuple(image.shape)}")
    if image.shape[2] != 3:
        raise ValueError(f"{name}: expected 3 (RGB) channels, got {image.shape[2]} (shape {tuple(image.shape)})")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: expected a non-empty image, got shape {tuple(image.shape)}")
    return image


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 [H, W, 3] image to [height, width, 3] (no aspect preservation)."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    return np.ascontiguousarray(resized)


@dataclass(frozen=True)
class PaddingBox:
    """Where the resized content sits inside a padded image (pixels)."""

    top: int
    left: int
    height: int
    width: int


def padding_box(source_hw: tuple[int, int], target_hw: tuple[int, int]) -> PaddingBox:
    """The content box `resize_with_padding` uses for a source of `source_hw` into `target_hw`.

    The content keeps its aspect ratio, fills the target in one dimension and is
    centred in the other (extra pixel bottom/right).
    """
    source_height, source_width = source_hw
    target_height, target_width = target_hw
    scale = min(target_height / source_height, target_width / source_width)
    content_height = max(1, min(target_height, int(round(source_height * scale))))
    content_width = max(1, min(target_width, int(round(source_width * scale))))
    top = (target_height - content_height) // 2
    left = (target_width - content_width) // 2
    return PaddingBox(top=top, left=left, height=content_height, width=content_width)


def resize_with_padding(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize keeping the aspect ratio, then pad with black, centred, to [height, width, 3].

    Args:
        image: uint8 [H, W, 3].
    Returns:
        uint8 [height, width, 3].
    """
    validate_image(image)
    box = padding_box(image.shape[:2], (height, width))
    content = _resize(image, box.height, box.width)
    padded = np.full((height, width, 3), PAD_VALUE_UINT8, dtype=np.uint8)
    padded[box.top : box.top + box.height, box.left : box.left + box.width] = content
    return padded


# --------------------------------------------------------------------------------------
# Camera composite
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompositeLayout:
    """Geometry of the camera composite for a given model image size: which views, where (see
    `config.CAMERA_TILINGS`).

    `roles` are the views in composite order, `tiling` how they share the image:

    - "head_row" (the default for 3 and 4 views): the unpadded canvas is `width` wide; the first view fills its
      top (`width` x 3/4 `width`, a 4:3 slot), the others share one row below, side by side, half the head's
      height tall (each `width // k` wide, the last one takes the remainder). The canvas is then resized with
      padding to (height, width). With the three ALOHA views this is the reference's composite: for 384x320,
      head 240x320, wrists 120x160, a 360x320 canvas with 12 black rows on top and bottom.
    - "grid" (the default for 1 and 2 views): equal cells filling the whole (height, width) image, row by row,
      no padding: 1 view fills it, 2 are stacked top and bottom, 3 or 4 share a 2x2 grid (3 leave the bottom
      right cell black).

    Each view is resized (no padding, aspect not kept) to its slot, as the reference does: the same in
    training and serving, so the model learns whatever stretch the slot implies.
    """

    height: int
    width: int
    roles: tuple[str, ...] = CAMERA_ROLES
    tiling: str = ""  # "" = config.default_tiling(len(roles))

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"composite size must be at least 8x8, got {self.height}x{self.width}")
        cameras = CameraConfig(list(self.roles), self.tiling)  # the one validation of roles and tiling
        object.__setattr__(self, "roles", tuple(cameras.roles))
        object.__setattr__(self, "tiling", cameras.tiling)

    @classmethod
    def from_config(cls, config: Any) -> CompositeLayout:
        """Layout for a `MotusConfig`: `config.latents.image_height/image_width` and `config.cameras`."""
        latents, cameras = config.latents, config.cameras
        return cls(int(latents.image_height), int(latents.image_width), tuple(cameras.roles), cameras.tiling)

    @property
    def cameras(self) -> CameraConfig:
        """The roles and tiling as saved in config.json (with the role checks)."""
        return CameraConfig(list(self.roles), self.tiling)

    def check_roles(self, roles: Any, what: str) -> None:
        """Raise ValueError naming the expected roles unless `roles` are exactly this layout's."""
        self.cameras.check_roles(roles, what)

    @property
    def canvas_size(self) -> tuple[int, int]:
        """(height, width) of the unpadded composite."""
        if self.tiling == "grid":
            return self.height, self.width
        head_height, _ = self.head_size
        below_height, _ = self.wrist_size
        return head_height + below_height, self.width

    @property
    def head_size(self) -> tuple[int, int]:
        """Tiling "head_row": (height, width) of the first view, 3/4 of the width tall (a 4:3 slot)."""
        return int(round(self.width * 3 / 4)), self.width

    @property
    def wrist_size(self) -> tuple[int, int]:
        """Tiling "head_row": (height, width) of the first view below the head (half the head's height; the last view
        of the row takes the width's remainder)."""
        head_height, _ = self.head_size
        return head_height // 2, self.width // max(1, len(self.roles) - 1)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Tiling "grid": (rows, columns): 1 view 1x1, 2 views 2x1, 3 or 4 views 2x2."""
        columns = 1 if len(self.roles) <= 2 else 2
        return -(-len(self.roles) // columns), columns

    @property
    def content_box(self) -> PaddingBox:
        """Where the canvas lands inside the padded composite."""
        return padding_box(self.canvas_size, (self.height, self.width))

    def view_boxes(self) -> dict[str, tuple[int, int, int, int]]:
        """Per role, in composite order, (top, left, height, width) of the view inside the unpadded canvas."""
        if self.tiling == "grid":
            rows, columns = self.grid_shape
            boxes = {}
            for index, role in enumerate(self.roles):
                row, column = divmod(index, columns)
                top, bottom = row * self.height // rows, (row + 1) * self.height // rows
                left, right = column * self.width // columns, (column + 1) * self.width // columns
                boxes[role] = (top, left, bottom - top, right - left)
            return boxes
        head_height, head_width = self.head_size
        below_height, below_width = self.wrist_size
        boxes = {self.roles[0]: (0, 0, head_height, head_width)}
        below = self.roles[1:]
        for index, role in enumerate(below):
            left = index * below_width
            width = self.width - left if index == len(below) - 1 else below_width
            boxes[role] = (head_height, left, below_height, width)
        return boxes


def compose_views(images: Mapping[str, np.ndarray], layout: CompositeLayout) -> np.ndarray:
    """Build the padded uint8 composite [layout.height, layout.width, 3] from the layout's camera views.

    Args:
        images: camera role (exactly `layout.roles`, e.g. "high", "left_wrist", "right_wrist") -> uint8 RGB
            [H, W, 3]. Each view is resized (no padding) to its slot, as the reference does.
    Raises:
        ValueError: a role is missing or an image is malformed. Extra roles are an error
            too, so a mis-named camera is not silently dropped.
    """
    if not isinstance(images, Mapping):
        raise ValueError(f"images: expected a dict camera role -> uint8 [H, W, 3], got {type(images).__name__}")
    layout.check_roles(images, "images")

    canvas_height, canvas_width = layout.canvas_size
    canvas = np.zeros((canvas_height, canvas_width, 3), dtype=np.uint8)
    for role, (top, left, height, width) in layout.view_boxes().items():
        view = validate_image(images[role], name=f"images[{role!r}]")
        canvas[top : top + height, left : left + width] = _resize(view, height, width)
    return resize_with_padding(canvas, layout.height, layout.width)


def fit_composite(composite: np.ndarray, layout: CompositeLayout) -> np.ndarray:
    """Bring an already composed uint8 image to the model size (resize with padding).

    An image of the unpadded canvas size (e.g. 360x320) gets padded; one of the
    model size passes through unchanged.
    """
    validate_image(composite, name="composite")
    return resize_with_padding(composite, layout.height, layout.width)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 tensor [3, H, W] in [-1, 1] (x/255 * 2 - 1, as the reference)."""
    validate_image(image)
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    return tensor / 127.5 - 1.0


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """float tensor [3, H, W] (or [..., 3, H, W]) in [-1, 1] -> uint8 [H, W, 3] (or [..., H, W, 3]).

    Values outside [-1, 1] are clipped (decoded video can overshoot slightly).
    """
    if not isinstance(tensor, torch.Tensor) or tensor.ndim < 3 or tensor.shape[-3] != 3:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"expected a float tensor [..., 3, H, W], got {shape}")
    pixels = ((tensor.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.movedim(-3, -1).cpu().numpy()


def preprocess_images(images: Mapping[str, np.ndarray] | np.ndarray, layout: CompositeLayout) -> torch.Tensor:
    """Camera views (dict by role) or one composed image -> model input [3, H, W] in [-1, 1]."""
    if isinstance(images, np.ndarray):
        composite = fit_composite(images, layout)
    else:
        composite = compose_views(images, layout)
    return image_to_tensor(composite)


def split_composite(composite: np.ndarray, layout: CompositeLayout) -> dict[str, np.ndarray]:
    """Inverse of `compose_views`: cut a padded uint8 composite back into the layout's views.

    Args:
        composite: uint8 [layout.height, layout.width, 3] (e.g. an imagined frame).
    Returns:
        role -> uint8 view at its slot size in the canvas (head 240x320, wrists 120x160 for
        the published layout); the padding is removed first.
    """
    validate_image(composite, name="composite")
    if composite.shape[:2] != (layout.height, layout.width):
        raise ValueError(
            f"composite: expected shape ({layout.height}, {layout.width}, 3), got {tuple(composite.shape)}"
        )
    box = layout.content_box
    content = composite[box.top : box.top + box.height, box.left : box.left + box.width]
    canvas_height, canvas_width = layout.canvas_size
    canvas = _resize(np.ascontiguousarray(content), canvas_height, canvas_width)
    views = {}
    for role, (top, left, height, width) in layout.view_boxes().items():
        views[role] = np.ascontiguousarray(canvas[top : top + height, left : left + width])
    return views


# --------------------------------------------------------------------------------------
# State / action normalisation
# --------------------------------------------------------------------------------------

NormalizationMode = Literal["mean_std", "min_max", "identity"]
NORMALIZATION_MODES: tuple[str, ...] = ("mean_std", "min_max", "identity")
STAT_KEYS: tuple[str, ...] = ("mean", "std", "min", "max")


class Normalizer:
    """Normalises and un-normalises robot state and actions with per-dimension statistics.

    Modes:
        "mean_std": (x - mean) / (std + eps).
        "min_max":  maps [min, max] to **[-1, 1]**: 2 (x - min) / (max - min + eps) - 1.
                    We choose [-1, 1] (not the LeRobot loader's [0, 1]) so the clean
                    actions are centred like the N(0, I) noise they are interpolated with.
        "identity": raw units (the released RoboTwin checkpoints use raw qpos).

    `eps` keeps a constant dimension (zero std / zero range) finite; such a dimension
    maps to 0 (mean_std) or -1 (min_max) and un-normalises back to its constant.

    Stats layout (as saved in the checkpoint and the dataset's meta/stats.json):
        {"action": {"mean": [...], "std": [...], "min": [...], "max": [...]}, "state": {...}}
    Only the statistics the mode needs are required.
    """

    def __init__(
        self,
        stats: Mapping[str, Mapping[str, Sequence[float]]] | None,
        mode: NormalizationMode = "mean_std",
        eps: float = 1e-6,
    ) -> None:
        if mode not in NORMALIZATION_MODES:
            raise ValueError(f"normalization mode: expected one of {list(NORMALIZATION_MODES)}, got {mode!r}")
        self.mode: str = mode
        self.eps = float(eps)
        self.stats: dict[str, dict[str, np.ndarray]] = {}
        for key, key_stats in (stats or {}).items():
            self.stats[key] = {
                name: np.asarray(values, dtype=np.float64) for name, values in key_stats.items() if name in STAT_KEYS
            }
        if mode != "identity":
            needed = ("mean", "std") if mode == "mean_std" else ("min", "max")
            for key, key_stats in self.stats.items():
                absent = [name for name in needed if name not in key_stats]
                if absent:
                    raise ValueError(f"stats[{key!r}]: mode {mode!r} needs {list(needed)}, missing {absent}")
                if key_stats[needed[0]].shape != key_stats[needed[1]].shape:
                    raise ValueError(
                        f"stats[{key!r}]: {needed[0]} and {needed[1]} must have the same shape, got "
                        f"{key_stats[needed[0]].shape} and {key_stats[needed[1]].shape}"
                    )

    @classmethod
    def identity(cls) -> Normalizer:
        """A normaliser that passes raw units through."""
        return cls(None, mode="identity")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: {"mode", "eps", "stats": {key: {stat: list}}}."""
        return {
            "mode": self.mode,
            "eps": self.eps,
            "stats": {key: {name: values.tolist() for name, values in s.items()} for key, s in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalizer:
        """Inverse of `to_dict`. A bare stats dict ({"action": {...}, ...}) is read as mean_std."""
        if "stats" in data or "mode" in data:
            return cls(data.get("stats"), mode=data.get("mode", "mean_std"), eps=data.get("eps", 1e-6))
        return cls(data, mode="mean_std")

    def _params(self, key: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) with normalised = (x - offset) / scale (before the min_max shift)."""
        if key not in self.stats:
            raise ValueError(f"no normalisation stats for {key!r}; have {sorted(self.stats)}")
        s = self.stats[key]
        if self.mode == "mean_std":
            offset, scale = s["mean"], s["std"] + self.eps
        else:
            offset, scale = s["min"], (s["max"] - s["min"] + self.eps) / 2.0
        if offset.shape != (dim,):
            raise ValueError(f"{key}: expected last dimension {offset.shape[0]} (from stats), got {dim}")
        return offset, scale

    def normalize(self, key: str, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Raw units -> normalised, for `key` in {"action", "state", ...}; [..., dim] numpy or torch."""
        return self._affine(key, values, lambda x, offset, scale, shift: (x - offset) / scale - shift)

    def unnormalize(self, key: str, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalised -> raw units; inverse of `normalize`."""
        return self._affine(key, values, lambda x, offset, scale, shift: (x + shift) * scale + offset)

    def _affine(
        self,
        key: str,
        values: np.ndarray | torch.Tensor,
        formula: Callable[[Any, Any, Any, float], Any],
    ) -> np.ndarray | torch.Tensor:
        """``formula(x, offset, scale, shift)`` with `key`'s stats: torch in the values' dtype and
        device, numpy in float64 then float32. Identity mode returns the values as given."""
        if self.mode == "identity":
            return values
        offset, scale = self._params(key, values.shape[-1])
        shift = 1.0 if self.mode == "min_max" else 0.0
        if isinstance(values, torch.Tensor):
            offset_t = torch.as_tensor(offset, dtype=values.dtype, device=values.device)
            scale_t = torch.as_tensor(scale, dtype=values.dtype, device=values.device)
            return formula(values, offset_t, scale_t, shift)
        return formula(np.asarray(values, dtype=np.float64), offset, scale, shift).astype(np.float32)

    def __repr__(self) -> str:
        return f"Normalizer(mode={self.mode!r}, keys={sorted(self.stats)})"
