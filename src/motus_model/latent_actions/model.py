"""The latent-action VAE: flow image -> DC-AE tokens -> 14-d Gaussian latent action -> flow image.

Paper (arXiv 2512.13030, "Latent Actions", Figure 3): a deep-compression autoencoder (DC-AE) encodes
the optical-flow image into four 512-d tokens; a light encoder projects the concatenated tokens to a
14-d latent action. The reference release (thu-ml/Motus) has no code for it, so the
choices here are ours and are stated:

- DC-AE is diffusers' ``AutoencoderDC``. At the published size (``LatentActionVAEConfig.published()``)
  a 64x64 flow image goes through 6 stages (32x down) to a 2x2x512 latent = 4 tokens x 512.
- Light encoder: LayerNorm + MLP on the flattened tokens -> (mean, logvar), 14-d each.
- Decoder: an MLP maps the 14-d latent back to the DC-AE latent (4 x 512), then the DC-AE decoder
  produces the flow image; **the reconstruction loss is on the flow image** (the paper's "reconstructs
  optical flow"), so the whole autoencoder trains end to end.
- Losses: L = MSE(flow image) + alignment_weight * masked MSE(mean, normalised alignment target)
  + kl_weight * KL(q(z|x) || N(0, I)). The target is what flow can see: the action change over the flow
  pair's stride (``alignment_target``), not the absolute joint target. Alignment counts only the
  labelled samples of a batch (about 10 % by default, the paper's 90/10 mix).
- Images are RGB in [-1, 1] at the model input ([0, 255] uint8 -> x/127.5 - 1).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderDC
from torch import nn

from motus_model.data.torch_dataset import ALOHA_CAMERA_MAP, COMPOSITE_ROLE
from motus_model.modeling_utils import PretrainedMixin

logger = logging.getLogger(__name__)

ALIGNMENT_TARGETS = ("action_delta", "state_delta", "action")
# A camera role names its ALOHA dataset key (the training data's camera map); "composite" composes the three.
CAMERA_ROLE_KEYS = ALOHA_CAMERA_MAP
COMPOSITE_CAMERA = COMPOSITE_ROLE


def _tiny_dcae() -> dict[str, Any]:
    return {
        "in_channels": 3,
        "latent_channels": 16,
        "attention_head_dim": 8,
        "encoder_block_types": "ResBlock",
        "decoder_block_types": "ResBlock",
        "encoder_block_out_channels": [8, 16, 32],
        "decoder_block_out_channels": [8, 16, 32],
        "encoder_layers_per_block": [1, 1, 1],
        "decoder_layers_per_block": [1, 1, 1],
        "encoder_qkv_multiscales": [[], [], []],
        "decoder_qkv_multiscales": [[], [], []],
        "decoder_norm_types": "rms_norm",
    }


@dataclass
class LatentActionVAEConfig:
    """Configuration of the latent-action VAE (saved as config.json).

    Args:
        image_size: flow images are resized to image_size x image_size.
        dcae: ``AutoencoderDC`` keyword arguments (lists for tuples, so it round-trips through JSON).
        latent_dim: latent action width (14: the ALOHA action width, as the paper).
        hidden_dim: width of the light encoder and decoder MLPs.
        flow_max_radius: flow magnitude (pixels, at ``flow_width``) coded at full saturation; fixed so
            colours mean the same speed in every clip. Training replaces it with the
            ``flow_scale_percentile``-th percentile of the training data's flow magnitudes (then saved here).
        flow_scale_percentile: percentile of the training flows' magnitudes that maps to the edge of the
            colour wheel; None keeps ``flow_max_radius`` as given. At one-frame strides ALOHA flow is a
            fraction of a pixel, so any fixed radius of several pixels codes nearly every pixel white.
        flow_estimator: estimator name for labelling ("opencv", "raft", "dpflow"; see flow.py).
        camera_key: the view whose flow defines the latent action: a dataset camera key, a camera role
            ("high", "left_wrist", "right_wrist": the ALOHA keys) or "composite" (the three views composed
            as the model sees them). Roles are stored as their dataset keys.
        frame_stride: rows between the two frames of a flow pair (latent action at row r comes from
            frames (r - stride, r)); match the training downsample rate.
        flow_width: frames (or the composite) are resized to this width before flow is computed, so that
            pixels mean the same thing for every dataset; None: set from the training data.
        fps: frame rate of the training data (a stride is a number of frames: a dataset at another rate
            would mean another motion); None: set from the training data.
        alignment_target: what the latent mean is pulled towards on labelled rows: "action_delta"
            (action[r] - action[r - stride], the commanded motion over the flow pair: default),
            "state_delta" (the measured motion), or "action" (absolute targets, the earlier behaviour).
        reconstruction_weight, alignment_weight, kl_weight: loss weights.
        labelled_fraction: share of a training batch drawn from action-labelled data.
    """

    image_size: int = 16
    dcae: dict[str, Any] = field(default_factory=_tiny_dcae)
    latent_dim: int = 14
    hidden_dim: int = 64
    flow_max_radius: float = 8.0
    flow_scale_percentile: float | None = 99.0
    flow_estimator: str = "opencv"
    camera_key: str = "observation.images.cam_high"
    frame_stride: int = 4
    flow_width: int | None = None
    fps: float | None = None
    alignment_target: str = "action_delta"
    reconstruction_weight: float = 1.0
    alignment_weight: float = 1.0
    kl_weight: float = 1e-3
    labelled_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.labelled_fraction <= 1.0:
            raise ValueError(f"labelled_fraction must be in [0, 1], got {self.labelled_fraction}")
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {self.frame_stride}")
        if self.alignment_target not in ALIGNMENT_TARGETS:
            raise ValueError(f"alignment_target must be one of {ALIGNMENT_TARGETS}, got {self.alignment_target!r}")
        if self.flow_scale_percentile is not None and not 0 < self.flow_scale_percentile <= 100:
            raise ValueError(f"flow_scale_percentile must be in (0, 100], got {self.flow_scale_percentile}")
        if self.flow_max_radius <= 0:
            raise ValueError(f"flow_max_radius must be positive, got {self.flow_max_radius}")
        if self.flow_width is not None and self.flow_width < 8:
            raise ValueError(f"flow_width must be at least 8 pixels, got {self.flow_width}")
        self.camera_key = CAMERA_ROLE_KEYS.get(self.camera_key, self.camera_key)
        if min(self.reconstruction_weight, self.alignment_weight, self.kl_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        downsample = self.image_size // self.latent_grid
        if self.image_size % downsample or self.latent_grid < 1:
            raise ValueError(f"image_size {self.image_size} must be divisible by the DC-AE downsampling {downsample}")

    @classmethod
    def published(cls) -> LatentActionVAEConfig:
        """The paper's shape: 64x64 flow image -> DC-AE f32 (diffusers defaults) -> 2x2x512 = 4 tokens x 512 -> 14."""
        return cls(
            image_size=64,
            dcae={"latent_channels": 512},
            hidden_dim=1024,
            flow_max_radius=20.0,
        )

    @property
    def latent_grid(self) -> int:
        """Side of the DC-AE latent grid: one 2x downsampling per encoder stage after the first
        (AutoencoderDC's default has 6 stages, i.e. 32x)."""
        num_stages = len(self.dcae.get("encoder_block_out_channels", [0] * 6))
        return self.image_size // 2 ** (num_stages - 1)

    @property
    def num_tokens(self) -> int:
        return self.latent_grid**2

    @property
    def token_dim(self) -> int:
        return int(self.dcae.get("latent_channels", 32))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatentActionVAEConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LatentActionVAEConfig keys {unknown}")
        return cls(**data)


def _dcae_kwargs(dcae: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples AutoencoderDC expects."""
    kwargs = {}
    for key, value in dcae.items():
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[key] = value
    return kwargs


class LatentActionVAE(PretrainedMixin, nn.Module):
    """See the module docstring. Inputs are flow images [B, 3, S, S] in [-1, 1]."""

    config_class = LatentActionVAEConfig

    def __init__(self, config: LatentActionVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.dcae = AutoencoderDC(**_dcae_kwargs(config.dcae))
        flat = config.num_tokens * config.token_dim
        self.encoder = nn.Sequential(
            nn.LayerNorm(flat),
            nn.Linear(flat, config.hidden_dim),
            nn.SiLU(),
            nn.Linear(config.hidden_dim, 2 * config.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden_dim),
            nn.SiLU(),
            nn.Linear(config.hidden_dim, flat),
        )

    def _check_images(self, flow_images: torch.Tensor) -> None:
        size = self.config.image_size
        if flow_images.ndim != 4 or tuple(flow_images.shape[1:]) != (3, size, size):
            raise ValueError(f"flow images must be [B, 3, {size}, {size}], got {tuple(flow_images.shape)}")

    def tokens(self, flow_images: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> DC-AE tokens [B, num_tokens, token_dim]."""
        self._check_images(flow_images)
        latent = self.dcae.encode(flow_images).latent  # [B, C, g, g]
        return latent.flatten(2).transpose(1, 2)

    def encode(self, flow_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, S, S] -> (mean, logvar), each [B, latent_dim]."""
        tokens = self.tokens(flow_images)
        mean, logvar = self.encoder(tokens.flatten(1)).chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, latent_actions: torch.Tensor) -> torch.Tensor:
        """[B, latent_dim] -> reconstructed flow image [B, 3, S, S]."""
        grid, channels = self.config.latent_grid, self.config.token_dim
        tokens = self.decoder(latent_actions).view(-1, grid * grid, channels)
        latent = tokens.transpose(1, 2).reshape(-1, channels, grid, grid)
        return self.dcae.decode(latent).sample

    def forward(
        self,
        flow_images: torch.Tensor,
        actions: torch.Tensor | None = None,
        labelled: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses for one batch.

        Args:
            flow_images: [B, 3, S, S] in [-1, 1].
            actions: [B, latent_dim] normalised real actions (any value where not labelled).
            labelled: bool [B], which samples carry a real action.
            generator: for the reparameterisation noise.
        Returns:
            {"loss", "reconstruction", "alignment", "kl", "mean" [B, latent_dim]}.
        """
        mean, logvar = self.encode(flow_images)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        sample = mean + torch.exp(0.5 * logvar) * noise
        reconstruction = self.decode(sample)
        reconstruction_loss = torch.mean((reconstruction - flow_images) ** 2)
        kl = torch.mean(-0.5 * (1 + logvar - mean**2 - logvar.exp()))
        alignment = mean.new_zeros(())
        if actions is not None and labelled is not None:
            if actions.shape != mean.shape:
                raise ValueError(f"actions must be [B, {self.config.latent_dim}], got {tuple(actions.shape)}")
            weights = labelled.to(mean.dtype)
            per_sample = ((mean - actions) ** 2).mean(dim=-1)
            # mean over the labelled samples only; a batch without labels contributes 0
            alignment = (per_sample * weights).sum() / weights.sum().clamp(min=1.0)
        config = self.config
        loss = (
            config.reconstruction_weight * reconstruction_loss
            + config.alignment_weight * alignment
            + config.kl_weight * kl
        )
        return {"loss": loss, "reconstruction": reconstruction_loss, "alignment": alignment, "kl": kl, "mean": mean}

    # Folder I/O (config.json + model.safetensors): modeling_utils.PretrainedMixin.
