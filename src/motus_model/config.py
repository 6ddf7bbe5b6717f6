"""Motus configuration: one dataclass tree, saved as ``config.json`` beside the weights.

The published shape (``motus-8b``) follows the public thu-ml/Motus release (paper arXiv 2512.13030):
a Wan2.2-TI2V-5B video expert (3072 wide,
24 heads of 128, 30 layers), a 1024-wide action expert and a 512-wide understanding
expert fed by Qwen3-VL-2B hidden states, running in lock-step with one joint attention
per layer in the video expert's head space.

Small presets (``motus-tiny`` for unit tests, ``motus-small`` for CPU training and the
simulated robot) replace the Wan VAE by ``pixel_patch`` latents: a latent frame is a
space-to-depth rearrangement of RGB pixels, no learned encoder.

Usage::

    config = MotusConfig.preset("motus-small")
    config.save("config.json")
    same = MotusConfig.load("config.json")
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAINING_MODES = ("finetune", "pretrain")
# How the camera views share the composite (geometry in preprocessing.CompositeLayout):
#   "grid":     equal cells filling the model's image, row by row: 1 view fills it, 2 are stacked top and
#               bottom, 3 or 4 share a 2x2 grid (a 3-view grid leaves the last cell black);
#   "head_row": the first view on top (the full width, 3/4 of it tall: a 4:3 slot), the others side by side in
#               one row below (half the head's height), the canvas then resized with padding to the model's
#               image. With high, left_wrist, right_wrist this is the thu-ml/Motus composite.
CAMERA_TILINGS = ("grid", "head_row")
MAX_CAMERAS = 4
# The reference release's three ALOHA views, in composite order (cam_high, cam_left_wrist, cam_right_wrist): the
# layout of every checkpoint whose config.json has no "cameras" section.
DEFAULT_CAMERA_ROLES: tuple[str, ...] = ("high", "left_wrist", "right_wrist")
LATENT_KINDS = ("wan_vae", "pixel_patch", "patch_pca")
INFERENCE_SIGMA_GRIDS = ("linear", "shifted")


def _require_positive(owner: str, **values: int | float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{owner}.{name} must be > 0, got {value}")


@dataclass
class VideoExpertConfig:
    """The Wan DiT video expert (original Wan ``WanModel`` hyper-parameters)."""

    dim: int = 3072
    ffn_dim: int = 14336
    num_heads: int = 24
    head_dim: int = 128
    # (t, h, w) patch of the DiT's Conv3d patch embedding; Wan2.2-TI2V-5B uses (1, 2, 2).
    patch_size: tuple[int, int, int] = (1, 2, 2)
    # Input and output channels of the DiT (= latent channels; 48 for the Wan2.2 VAE).
    latent_channels: int = 48
    # umT5-XXL hidden size and the padded text length (Wan uses 512 tokens).
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    eps: float = 1e-6
    cross_attn_norm: bool = True
    rope_theta: float = 1e4

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(p) for p in self.patch_size)  # JSON gives lists
        if len(self.patch_size) != 3:
            raise ValueError(f"video.patch_size must have 3 entries (t, h, w), got {self.patch_size}")
        _require_positive(
            "video",
            dim=self.dim,
            ffn_dim=self.ffn_dim,
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            latent_channels=self.latent_channels,
            text_dim=self.text_dim,
            text_len=self.text_len,
            freq_dim=self.freq_dim,
            eps=self.eps,
            rope_theta=self.rope_theta,
            patch_t=self.patch_size[0],
            patch_h=self.patch_size[1],
            patch_w=self.patch_size[2],
        )
        if self.num_heads * self.head_dim != self.dim:
            raise ValueError(
                f"video.num_heads * video.head_dim must equal video.dim: "
                f"{self.num_heads} * {self.head_dim} = {self.num_heads * self.head_dim} != {self.dim}"
            )
        # Wan's 3-D RoPE splits the head's complex pairs into t/h/w parts of
        # head_dim - 4*(head_dim//6), 2*(head_dim//6), 2*(head_dim//6) real dims.
        if self.head_dim % 2 != 0 or self.head_dim < 6:
            raise ValueError(f"video.head_dim must be even and >= 6 for the 3-D RoPE, got {self.head_dim}")
        if self.freq_dim % 2 != 0:
            raise ValueError(f"video.freq_dim must be even, got {self.freq_dim}")


@dataclass
class ActionExpertConfig:
    """The action expert (new in Motus): 1024 wide, FFN 4096, eps 1e-5 in the release."""

    dim: int = 1024
    ffn_dim: int = 4096
    action_dim: int = 14
    state_dim: int = 14
    # Learned register tokens appended after the actions (finetune mode only).
    num_registers: int = 4
    eps: float = 1e-5

    def __post_init__(self) -> None:
        _require_positive(
            "action",
            dim=self.dim,
            ffn_dim=self.ffn_dim,
            action_dim=self.action_dim,
            state_dim=self.state_dim,
            eps=self.eps,
        )
        if self.num_registers < 0:
            raise ValueError(f"action.num_registers must be >= 0, got {self.num_registers}")
        if self.dim % 2 != 0:
            raise ValueError(f"action.dim must be even for the sin-cos positions, got {self.dim}")


@dataclass
class UnderstandingExpertConfig:
    """The understanding expert (new in Motus), fed by the VLM's last hidden state."""

    dim: int = 512
    ffn_dim: int = 2048
    # Hidden size of the frozen VLM (2048 for Qwen3-VL-2B-Instruct).
    vlm_dim: int = 2048
    eps: float = 1e-5
    # The reference release's understanding LayerNorms have no parameters; ours (and the shipped
    # checkpoint's) are affine. False builds parameter-free norms, as needed to load a release file.
    norm_affine: bool = True

    def __post_init__(self) -> None:
        _require_positive("understanding", dim=self.dim, ffn_dim=self.ffn_dim, vlm_dim=self.vlm_dim, eps=self.eps)


@dataclass
class VideoLatentConfig:
    """How composite RGB frames become DiT input latents.

    ``wan_vae``: the Wan2.2 VAE (48 channels, 16x spatial, 4x temporal, causal first frame).
    ``pixel_patch``: a learned-free space-to-depth of the RGB pixels in [-1, 1]:
    each latent frame holds ``spatial_compression**2 * temporal_compression * 3`` channels.
    ``patch_pca``: the same patches projected onto their top ``channels`` principal components
    (``video_latents.PatchPCACodec``, fitted on the task's frames, saved in the checkpoint's ``vae/``),
    so a DiT token (channels x patch) can be no wider than the video expert.
    Like the causal Wan VAE, the first (conditioning) pixel frame forms latent frame 0 on
    its own; the following frames are grouped by ``temporal_compression``. So for ``n``
    pixel frames both kinds give ``1 + (n - 1) // temporal_compression`` latent frames.
    """

    kind: str = "wan_vae"
    channels: int = 48
    spatial_compression: int = 16
    temporal_compression: int = 4
    # The composite image (all cameras in one frame): 384 H x 320 W in the release.
    image_height: int = 384
    image_width: int = 320

    def __post_init__(self) -> None:
        if self.kind not in LATENT_KINDS:
            raise ValueError(f"latents.kind must be one of {LATENT_KINDS}, got {self.kind!r}")
        _require_positive(
            "latents",
            channels=self.channels,
            spatial_compression=self.spatial_compression,
            temporal_compression=self.temporal_compression,
            image_height=self.image_height,
            image_width=self.image_width,
        )
        if self.image_height % self.spatial_compression or self.image_width % self.spatial_compression:
            raise ValueError(
                f"latents.image_height x image_width ({self.image_height}x{self.image_width}) must be "
                f"divisible by spatial_compression={self.spatial_compression}"
            )
        if self.kind == "pixel_patch":
            expected = 3 * self.spatial_compression**2 * self.temporal_compression
            if self.channels != expected:
                raise ValueError(
                    f"pixel_patch latents have 3 * spatial_compression^2 * temporal_compression = "
                    f"{expected} channels, got latents.channels={self.channels}"
                )
        if self.kind == "patch_pca":
            widest = 3 * self.spatial_compression**2
            if self.temporal_compression != 1 or self.channels > widest:
                raise ValueError(
                    f"patch_pca latents need temporal_compression 1 and at most 3 * spatial_compression^2 = "
                    f"{widest} channels, got {self.temporal_compression} and {self.channels}"
                )

    def latent_grid(self, num_pixel_frames: int) -> tuple[int, int, int]:
        """(frames, height, width) of the latent for ``num_pixel_frames`` frames (first one causal)."""
        if num_pixel_frames < 1 or (num_pixel_frames - 1) % self.temporal_compression:
            raise ValueError(
                f"num_pixel_frames must be 1 + k * temporal_compression ({self.temporal_compression}), "
                f"got {num_pixel_frames}"
            )
        frames = 1 + (num_pixel_frames - 1) // self.temporal_compression
        return frames, self.image_height // self.spatial_compression, self.image_width // self.spatial_compression


@dataclass
class TemporalConfig:
    """Action-dense, video-sparse timing of one training/inference sample.

    One conditioning frame plus ``num_video_frames`` future frames; ``action_chunk``
    future actions; future frame j shows the state after action (j+1)*ratio - 1.
    RoboTwin: 8 frames, chunk 16, ratio 2, downsample 3. AC-One: 8 / 48 / 6 / 1.
    """

    num_video_frames: int = 8
    action_chunk: int = 16
    video_action_ratio: int = 2
    # Raw control steps between two consecutive actions of a chunk.
    downsample_rate: int = 3
    # Rate of the robot's raw control loop (not published for RoboTwin; ALOHA runs at 50 Hz).
    control_rate_hz: float = 50.0

    def __post_init__(self) -> None:
        _require_positive(
            "temporal",
            num_video_frames=self.num_video_frames,
            action_chunk=self.action_chunk,
            video_action_ratio=self.video_action_ratio,
            downsample_rate=self.downsample_rate,
            control_rate_hz=self.control_rate_hz,
        )
        if self.action_chunk != self.num_video_frames * self.video_action_ratio:
            raise ValueError(
                f"temporal.action_chunk must equal num_video_frames * video_action_ratio: "
                f"{self.num_video_frames} * {self.video_action_ratio} = "
                f"{self.num_video_frames * self.video_action_ratio} != {self.action_chunk}"
            )

    @property
    def num_pixel_frames(self) -> int:
        """Conditioning frame + future frames."""
        return 1 + self.num_video_frames


@dataclass
class ScheduleConfig:
    """Rectified-flow noise schedule (DiffSynth ``FlowMatchScheduler`` semantics in the release)."""

    shift: float = 5.0
    num_train_timesteps: int = 1000
    inference_steps: int = 10
    # "linear": unshifted linspace(1, 0, N+1) as the reference; "shifted": same shift as training.
    inference_sigmas: str = "linear"

    def __post_init__(self) -> None:
        _require_positive(
            "schedule",
            shift=self.shift,
            num_train_timesteps=self.num_train_timesteps,
            inference_steps=self.inference_steps,
        )
        if self.inference_sigmas not in INFERENCE_SIGMA_GRIDS:
            raise ValueError(
                f"schedule.inference_sigmas must be one of {INFERENCE_SIGMA_GRIDS}, got {self.inference_sigmas!r}"
            )


@dataclass
class LossConfig:
    """Weights of the two flow-matching losses (1.0 and 1.0 in the release)."""

    video_weight: float = 1.0
    action_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.video_weight < 0 or self.action_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got video={self.video_weight}, action={self.action_weight}")


def default_tiling(num_views: int) -> str:
    """The tiling used when none is named: one or two views fill a grid, three or four put the head on top."""
    return "grid" if num_views <= 2 else "head_row"


@dataclass
class CameraConfig:
    """Which camera views the model sees, in composite order, and how they are tiled (``CAMERA_TILINGS``).

    Saved in config.json, so training and serving build the same composite; a checkpoint without this section
    (trained before it existed, like the shipped one) has the reference's three ALOHA views. Roles are the
    robot profile's camera roles (``CameraSpec.role``) and the LeRobot keys ``observation.images[.cam_]<role>``.
    An empty ``tiling`` takes ``default_tiling(len(roles))``.
    """

    roles: list[str] = field(default_factory=lambda: list(DEFAULT_CAMERA_ROLES))
    tiling: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.roles, str) or not all(isinstance(role, str) for role in self.roles):
            raise ValueError(f"cameras.roles must be a list of camera role names, got {self.roles!r}")
        self.roles = list(self.roles)
        if not 1 <= len(self.roles) <= MAX_CAMERAS:
            raise ValueError(f"cameras.roles must name 1 to {MAX_CAMERAS} cameras, got {len(self.roles)}: {self.roles}")
        bad = [role for role in self.roles if not role or not role.replace("_", "").isalnum() or role == "composite"]
        if bad:
            raise ValueError(
                f"cameras.roles must be names of letters, digits and '_' (not 'composite'), got {bad} in {self.roles}"
            )
        if len(set(self.roles)) != len(self.roles):
            raise ValueError(f"cameras.roles must be unique, got {self.roles}")
        self.tiling = self.tiling or default_tiling(len(self.roles))
        if self.tiling not in CAMERA_TILINGS:
            raise ValueError(f"cameras.tiling must be one of {CAMERA_TILINGS}, got {self.tiling!r}")
        if self.tiling == "head_row" and len(self.roles) < 2:
            raise ValueError(f"cameras.tiling 'head_row' needs 2 to {MAX_CAMERAS} cameras, got {self.roles}")

    def mismatch(self, roles: Iterable[str]) -> str:
        """Why the camera roles `roles` cannot feed this layout ("" when they are exactly its roles)."""
        given = list(roles)
        missing = [role for role in self.roles if role not in given]
        extra = sorted(set(given) - set(self.roles))
        if not missing and not extra:
            return ""
        parts = ([f"missing camera {missing}"] if missing else []) + ([f"unknown camera {extra}"] if extra else [])
        return (
            f"cameras {sorted(given)} do not match the checkpoint's camera layout ({', '.join(parts)}): "
            f"expected roles {self.roles}"
        )

    def check_roles(self, roles: Iterable[str], what: str) -> None:
        """Raise ValueError("<what>: cameras [...] do not match ... expected roles [...]") unless `roles` are
        exactly this layout's roles (any order)."""
        problem = self.mismatch(roles)
        if problem:
            raise ValueError(f"{what}: {problem}")


_SECTIONS: dict[str, type] = {
    "video": VideoExpertConfig,
    "action": ActionExpertConfig,
    "understanding": UnderstandingExpertConfig,
    "latents": VideoLatentConfig,
    "temporal": TemporalConfig,
    "schedule": ScheduleConfig,
    "loss": LossConfig,
    "cameras": CameraConfig,
}


@dataclass
class MotusConfig:
    """The whole model: three experts in lock-step, latents, timing, schedule, loss.

    ``training_mode``: ``finetune`` (real actions; action tokens are
    [state | actions | registers]) or ``pretrain`` (latent actions; no state token,
    no registers). The joint attention runs in the video expert's head space
    (``num_heads`` x ``head_dim``; 24 x 128 = 3072 in the published shape).
    """

    video: VideoExpertConfig = field(default_factory=VideoExpertConfig)
    action: ActionExpertConfig = field(default_factory=ActionExpertConfig)
    understanding: UnderstandingExpertConfig = field(default_factory=UnderstandingExpertConfig)
    latents: VideoLatentConfig = field(default_factory=VideoLatentConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # The camera views of the composite (absent in older config.json files: the three ALOHA views).
    cameras: CameraConfig = field(default_factory=CameraConfig)
    training_mode: str = "finetune"
    # Shared depth: every expert has one block per layer (30 in the release).
    num_layers: int = 30
    # Give the clean conditioning latent frame's tokens t = 0 (as stock Wan2.2 TI2V does).
    # Deviation from the Motus release, which gives every video token the sample's sigma
    # even though frame 0 is clean; set False to reproduce the release exactly.
    clean_condition_timestep: bool = True
    # Each future latent frame's time embedding also gets an embedding of the actions that lead to it
    # (``modeling_motus.ActionFrameEmbedding``): a conditioning path the video expert cannot average away, beside
    # the joint attention. Deviation from the Motus release (joint attention only; keep False to reproduce it):
    # through the attention alone the small models predicted as well with another episode's actions as with the
    # true ones (docs/results.md, "The action gap").
    action_modulation: bool = False
    # With action_modulation: modulate only where the actions are given clean (sigma 0: the world model), so the
    # modes that denoise or marginalise the actions (VLA, joint, IDM, video generation) compute as without the
    # path; in the VLA mode the noisy actions would otherwise reshape the video tokens the action expert reads.
    action_modulation_clean_only: bool = False

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise ValueError(f"MotusConfig.{name} must be a {cls.__name__}, got {type(value).__name__}")
        if self.training_mode not in TRAINING_MODES:
            raise ValueError(f"training_mode must be one of {TRAINING_MODES}, got {self.training_mode!r}")
        _require_positive("MotusConfig", num_layers=self.num_layers)
        if self.video.latent_channels != self.latents.channels:
            raise ValueError(
                f"video.latent_channels ({self.video.latent_channels}) must equal "
                f"latents.channels ({self.latents.channels})"
            )
        _, latent_h, latent_w = self.latents.latent_grid(1)
        _, patch_h, patch_w = self.video.patch_size
        if latent_h % patch_h or latent_w % patch_w:
            raise ValueError(
                f"latent grid {latent_h}x{latent_w} must be divisible by the DiT patch {patch_h}x{patch_w}"
            )
        if self.temporal.num_video_frames % self.latents.temporal_compression:
            raise ValueError(
                f"temporal.num_video_frames ({self.temporal.num_video_frames}) must be a multiple of "
                f"latents.temporal_compression ({self.latents.temporal_compression})"
            )
        if self.video.patch_size[0] != 1:
            # Frame 0 is the clean conditioning frame; a temporal patch would mix it with noisy frames.
            raise ValueError(f"video.patch_size[0] must be 1, got {self.video.patch_size[0]}")
        if self.action_modulation_clean_only and not self.action_modulation:
            raise ValueError("action_modulation_clean_only needs action_modulation: true (it restricts that path)")

    # -- joint attention space -------------------------------------------------
    @property
    def num_heads(self) -> int:
        return self.video.num_heads

    @property
    def head_dim(self) -> int:
        return self.video.head_dim

    @property
    def attention_dim(self) -> int:
        """Width of the joint attention (num_heads * head_dim)."""
        return self.video.num_heads * self.video.head_dim

    @property
    def uses_state(self) -> bool:
        """Finetune mode has a state token and registers; pretrain (latent actions) has neither."""
        return self.training_mode == "finetune"

    # -- token counts ------------------------------------------------------------
    def latent_grid(self) -> tuple[int, int, int]:
        """(frames, h, w) of the video latent for one sample (conditioning + future frames)."""
        return self.latents.latent_grid(self.temporal.num_pixel_frames)

    def token_grid(self) -> tuple[int, int, int]:
        """(frames, h, w) of the video tokens after the DiT patch embedding."""
        frames, height, width = self.latent_grid()
        patch_t, patch_h, patch_w = self.video.patch_size
        return frames // patch_t, height // patch_h, width // patch_w

    @property
    def video_token_dim(self) -> int:
        """Latent values per video token (patch volume x latent channels): 192 < 3072 in the release. Where it
        exceeds ``video.dim`` the patch embedding and the head are a bottleneck: the velocity the model can
        output spans only ``video.dim`` of these directions. The sampler projects its initial noise onto them
        (``flow_matching.reachable_video_basis``), so frames are not left noisy, but what lies outside is lost
        (pixel_patch presets; ``patch_pca`` latents fit the token to the expert; see docs/results.md)."""
        patch_t, patch_h, patch_w = self.video.patch_size
        return patch_t * patch_h * patch_w * self.latents.channels

    def num_video_tokens(self) -> int:
        frames, height, width = self.token_grid()
        return frames * height * width

    def num_action_tokens(self) -> int:
        """[state | actions | registers] in finetune mode, [actions] in pretrain mode."""
        extra = 1 + self.action.num_registers if self.uses_state else 0
        return self.temporal.action_chunk + extra

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["video"]["patch_size"] = list(self.video.patch_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MotusConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MotusConfig keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            section = _SECTIONS.get(key)
            if section is None:
                kwargs[key] = value
                continue
            if not isinstance(value, dict):
                raise ValueError(f"MotusConfig.{key} must be a dict in JSON, got {type(value).__name__}")
            section_fields = {f.name for f in dataclasses.fields(section)}
            bad = set(value) - section_fields
            if bad:
                raise ValueError(f"unknown keys {sorted(bad)} in MotusConfig.{key}; expected {sorted(section_fields)}")
            kwargs[key] = section(**value)
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> MotusConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # -- presets --------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> MotusConfig:
        """A named configuration; unknown names raise with a "did you mean" hint."""
        factory = _PRESETS.get(name)
        if factory is None:
            close = difflib.get_close_matches(name, list(_PRESETS), n=3, cutoff=0.4)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown Motus preset {name!r}; available: {sorted(_PRESETS)}.{hint}")
        return factory()

    @staticmethod
    def preset_names() -> list[str]:
        return sorted(_PRESETS)


def _motus_8b() -> MotusConfig:
    """The published RoboTwin shape (thu-ml/Motus ``robotwin.yaml``): ~5.0B + 641.5M + 253.5M."""
    return MotusConfig(
        video=VideoExpertConfig(),
        action=ActionExpertConfig(),
        understanding=UnderstandingExpertConfig(),
        latents=VideoLatentConfig(),
        temporal=TemporalConfig(num_video_frames=8, action_chunk=16, video_action_ratio=2, downsample_rate=3),
        num_layers=30,
    )


def _motus_8b_ac_one() -> MotusConfig:
    """The published AC-One shape (thu-ml/Motus ``ac_one.yaml``): chunk 48, ratio 6, rate 1."""
    config = _motus_8b()
    config.temporal = TemporalConfig(num_video_frames=8, action_chunk=48, video_action_ratio=6, downsample_rate=1)
    return config


def _motus_tiny() -> MotusConfig:
    """Unit tests: 2 layers, 2 heads of 16, 32x32 composite -> 3 latent frames of 8x8 -> 48 tokens."""
    return MotusConfig(
        video=VideoExpertConfig(
            dim=32,
            ffn_dim=64,
            num_heads=2,
            head_dim=16,
            patch_size=(1, 2, 2),
            latent_channels=48,
            text_dim=24,
            text_len=8,
            freq_dim=32,
        ),
        action=ActionExpertConfig(dim=32, ffn_dim=64, action_dim=14, state_dim=14, num_registers=4),
        understanding=UnderstandingExpertConfig(dim=32, ffn_dim=64, vlm_dim=24),
        latents=VideoLatentConfig(
            kind="pixel_patch",
            channels=48,
            spatial_compression=4,
            temporal_compression=1,
            image_height=32,
            image_width=32,
        ),
        temporal=TemporalConfig(num_video_frames=2, action_chunk=4, video_action_ratio=2, downsample_rate=1),
        schedule=ScheduleConfig(inference_steps=4),
        num_layers=2,
    )


def _motus_small() -> MotusConfig:
    """CPU training and the simulated ALOHA: 4 layers, video 256 wide (4 heads of 64).

    Composite 96 H x 80 W, pixel_patch 8x spatial, 1x temporal -> 5 latent frames of
    12x10 (192 channels) -> 5 x 6 x 5 = 150 video tokens; chunk 16 with 4 future frames
    (ratio 4). Action and understanding experts 128 wide; small text/VLM feature dims
    (256) for tiny or projected encoders.
    """
    return MotusConfig(
        video=VideoExpertConfig(
            dim=256,
            ffn_dim=1024,
            num_heads=4,
            head_dim=64,
            patch_size=(1, 2, 2),
            latent_channels=192,
            text_dim=256,
            text_len=32,
            freq_dim=256,
        ),
        action=ActionExpertConfig(dim=128, ffn_dim=512, action_dim=14, state_dim=14, num_registers=4),
        understanding=UnderstandingExpertConfig(dim=128, ffn_dim=512, vlm_dim=256),
        latents=VideoLatentConfig(
            kind="pixel_patch",
            channels=192,
            spatial_compression=8,
            temporal_compression=1,
            image_height=96,
            image_width=80,
        ),
        temporal=TemporalConfig(num_video_frames=4, action_chunk=16, video_action_ratio=4, downsample_rate=1),
        schedule=ScheduleConfig(inference_steps=10),
        num_layers=4,
    )


def _motus_small_aloha() -> MotusConfig:
    """``motus-small`` timed for the simulated ALOHA (50 Hz): the 16-action chunk takes every second
    control step, so a chunk spans 0.64 s (a CPU inference fits inside it) and the 4 future frames are
    0.16 s apart. The embedded default of ``make demo`` trained on it until 2026-12-06, then moved to
    ``motus-small-aloha-pca`` (``models/motus-small-aloha-transfer-cube/README.md``)."""
    config = _motus_small()
    config.temporal = TemporalConfig(num_video_frames=4, action_chunk=16, video_action_ratio=4, downsample_rate=2)
    config.video.text_len = 48  # the demonstrations' instructions, byte-tokenised by the tiny umT5
    return config


def _motus_small_aloha_pca() -> MotusConfig:
    """``motus-small-aloha`` on ``patch_pca`` latents: 8x8 patches reduced to 64 components, so a DiT token
    (64 x 2 x 2 = 256 values) is as wide as the 256-wide video expert and every direction of the noise can be
    denoised (pixel_patch: 768 values per token, two thirds of them out of the head's reach). Same token grid,
    so the same cost per step. Needs a fitted codec (``python -m motus_model.video_latents fit-pca``). The embedded
    default ``models/motus-small-aloha-transfer-cube`` is this preset (its codec is its ``vae/``)."""
    config = _motus_small_aloha()
    config.video.latent_channels = 64
    config.latents = VideoLatentConfig(
        kind="patch_pca", channels=64, spatial_compression=8, temporal_compression=1, image_height=96, image_width=80
    )
    config.__post_init__()
    return config


def _motus_small_wan_vae() -> MotusConfig:
    """``motus-small`` experts on real Wan2.2-VAE latents (48 ch, 16x/4x) of a 192x160 composite."""
    config = _motus_small()
    config.video.latent_channels = 48
    config.latents = VideoLatentConfig(
        kind="wan_vae",
        channels=48,
        spatial_compression=16,
        temporal_compression=4,
        image_height=192,
        image_width=160,
    )
    config.temporal = TemporalConfig(num_video_frames=4, action_chunk=16, video_action_ratio=4, downsample_rate=1)
    config.__post_init__()
    return config


_PRESETS: dict[str, Callable[[], MotusConfig]] = {
    "motus-8b": _motus_8b,
    "motus-8b-ac-one": _motus_8b_ac_one,
    "motus-tiny": _motus_tiny,
    "motus-small": _motus_small,
    "motus-small-aloha": _motus_small_aloha,
    "motus-small-aloha-pca": _motus_small_aloha_pca,
    "motus-small-wan-vae": _motus_small_wan_vae,
}
