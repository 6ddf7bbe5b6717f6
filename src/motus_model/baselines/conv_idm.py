"""A small convolutional inverse-dynamics model: the baseline for Motus's IDM mode.

Inputs are exactly what Motus sees in IDM mode, from the same ``MotusTrainingDataset`` samples:
the condition composite [3, H, W] and the F future composites [F, 3, H, W] (both in [-1, 1], the
model's composite layout), and the normalised joint state [S]. Output: the normalised action chunk
[chunk, A]. Trained with MSE on the normalised actions (AdamW).

Architecture (about 1.7 M parameters at the motus-small composite, 96 x 80, 4 future frames):

    per frame  x_t (and x_t - x_0, the change since the condition frame, when frame_difference)
      -> shared encoder: conv 5x5/2 -> conv 3x3/2 -> conv 3x3/2 -> conv 3x3/2 (GroupNorm, SiLU),
         1x1 conv to ``feature_channels`` -> flatten (a small spatial map, 6 x 5 at 96 x 80: where
         things moved matters for IDM, so no global pooling)
    concat(frame features over the 1 + F frames, state) -> MLP (2 hidden layers) -> chunk x A

Folder written by ``save_pretrained`` (like a Motus checkpoint)::

    config.json         ConvIDMConfig (with the Motus preset's composite size and temporal layout)
    model.safetensors   the weights
    stats.json          Normalizer.to_dict() ({"mode", "eps", "stats": {"state", "action"}})
    training_config.json, metrics.jsonl   (from train_conv_idm)

Training (``train_conv_idm``, ``motus train-conv-idm``) reuses Motus's data path unchanged:
``trainer.build_training_data`` (same LeRobot decoding, composites, mixture sampler, per-dataset
mean/std normalisation) and ``MixtureSampler.keys_for_step`` (the batch of step n is a function of
(seed, n)). The learning rate warms up linearly, then follows a cosine down to ``min_lr_factor`` over
the run's progress = max(step / steps, elapsed / max_minutes), so a wall-clock-bounded run ends at
a low learning rate whatever its speed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from motus_model.modeling_utils import CONFIG_NAME, STATS_NAME, WEIGHTS_NAME, PretrainedMixin, load_stats  # noqa: F401
from motus_model.preprocessing import CompositeLayout, Normalizer, preprocess_images

logger = logging.getLogger(__name__)

TRAINING_CONFIG_NAME = "training_config.json"
METRICS_NAME = "metrics.jsonl"
MODEL_TYPE = "conv_idm"


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class ConvIDMConfig:
    """Shape of a ConvIDM. The composite size and temporal layout come from a Motus preset
    (``from_preset``) so the baseline and Motus see the same samples."""

    preset: str = "motus-small-aloha"
    image_height: int = 96
    image_width: int = 80
    num_future_frames: int = 4
    action_chunk: int = 16
    downsample_rate: int = 2
    video_action_ratio: int = 4
    state_dim: int = 14
    action_dim: int = 14
    channels: tuple[int, ...] = (16, 32, 64, 64)  # stride-2 conv widths (the first is 5x5, the rest 3x3)
    feature_channels: int = 16  # 1x1 conv before the spatial flatten
    hidden_dim: int = 512
    dropout: float = 0.1
    frame_difference: bool = True  # also feed x_t - x_0 to the encoder (6 input channels)
    model_type: str = MODEL_TYPE

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"not a ConvIDM config: model_type {self.model_type!r} (expected {MODEL_TYPE!r})")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive widths, got {self.channels}")
        for name in (
            "image_height",
            "image_width",
            "num_future_frames",
            "action_chunk",
            "downsample_rate",
            "video_action_ratio",
            "state_dim",
            "action_dim",
            "feature_channels",
            "hidden_dim",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.action_chunk != self.num_future_frames * self.video_action_ratio:
            raise ValueError(
                f"action_chunk ({self.action_chunk}) must equal num_future_frames * video_action_ratio "
                f"({self.num_future_frames} * {self.video_action_ratio})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> ConvIDMConfig:
        """Composite size, temporal layout and widths of the Motus preset ``preset``."""
        from motus_model.config import MotusConfig

        motus = MotusConfig.preset(preset)
        temporal = motus.temporal
        values = dict(
            preset=preset,
            image_height=int(motus.latents.image_height),
            image_width=int(motus.latents.image_width),
            num_future_frames=int(temporal.num_video_frames),
            action_chunk=int(temporal.action_chunk),
            downsample_rate=int(temporal.downsample_rate),
            video_action_ratio=int(temporal.video_action_ratio),
            state_dim=int(motus.action.state_dim),
            action_dim=int(motus.action.action_dim),
        )
        values.update(overrides)
        return cls(**values)

    @property
    def num_frames(self) -> int:
        return 1 + self.num_future_frames

    def layout_signature(self) -> dict[str, int]:
        """What must agree with a Motus config for both to see the same samples (see ``motus_signature``)."""
        return {
            "image_height": self.image_height,
            "image_width": self.image_width,
            "num_future_frames": self.num_future_frames,
            "action_chunk": self.action_chunk,
            "downsample_rate": self.downsample_rate,
            "video_action_ratio": self.video_action_ratio,
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
        }

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConvIDMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ConvIDM config keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ConvIDMConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def motus_signature(config: Any) -> dict[str, int]:
    """``ConvIDMConfig.layout_signature`` of a ``MotusConfig``."""
    temporal = config.temporal
    return {
        "image_height": int(config.latents.image_height),
        "image_width": int(config.latents.image_width),
        "num_future_frames": int(temporal.num_video_frames),
        "action_chunk": int(temporal.action_chunk),
        "downsample_rate": int(temporal.downsample_rate),
        "video_action_ratio": int(temporal.video_action_ratio),
        "state_dim": int(config.action.state_dim),
        "action_dim": int(config.action.action_dim),
    }


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def _conv_out(size: int, kernel: int, stride: int = 2) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class ConvIDM(PretrainedMixin, nn.Module):
    """(condition composite, future composites, normalised state) -> normalised action chunk."""

    config_class = ConvIDMConfig
    model_type = MODEL_TYPE

    def __init__(self, config: ConvIDMConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels = 6 if config.frame_difference else 3
        height, width = config.image_height, config.image_width
        for index, out_channels in enumerate(config.channels):
            kernel = 5 if index == 0 else 3
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel, stride=2, padding=kernel // 2),
                nn.GroupNorm(min(8, out_channels), out_channels),
                nn.SiLU(),
            ]
            height, width = _conv_out(height, kernel), _conv_out(width, kernel)
            in_channels = out_channels
        layers.append(nn.Conv2d(in_channels, config.feature_channels, 1))
        self.encoder = nn.Sequential(*layers)
        self.feature_shape = (config.feature_channels, height, width)
        frame_dim = config.feature_channels * height * width
        self.head = nn.Sequential(
            nn.Linear(config.num_frames * frame_dim + config.state_dim, config.hidden_dim),
            nn.SiLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, config.hidden_dim),
            nn.SiLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, config.action_chunk * config.action_dim),
        )

    def count_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, condition_image: torch.Tensor, future_images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """condition_image [B, 3, H, W], future_images [B, F, 3, H, W] (in [-1, 1]), state [B, S]
        (normalised) -> actions [B, chunk, A] (normalised)."""
        config = self.config
        expected = (config.num_future_frames, 3, config.image_height, config.image_width)
        if condition_image.ndim != 4 or tuple(condition_image.shape[1:]) != expected[1:]:
            raise ValueError(
                f"condition_image: expected [B, {', '.join(map(str, expected[1:]))}], "
                f"got {tuple(condition_image.shape)}"
            )
        if future_images.ndim != 5 or tuple(future_images.shape[1:]) != expected:
            raise ValueError(
                f"future_images: expected [B, {', '.join(map(str, expected))}], got {tuple(future_images.shape)}"
            )
        if state.ndim != 2 or state.shape[1] != config.state_dim:
            raise ValueError(f"state: expected [B, {config.state_dim}], got {tuple(state.shape)}")
        batch = condition_image.shape[0]
        frames = torch.cat([condition_image[:, None], future_images], dim=1)  # [B, T, 3, H, W]
        if config.frame_difference:
            frames = torch.cat([frames, frames - frames[:, :1]], dim=2)  # [B, T, 6, H, W]
        features = self.encoder(frames.flatten(0, 1))  # [B*T, C, h, w]
        features = features.reshape(batch, -1)  # [B, T*C*h*w], frame-major
        out = self.head(torch.cat([features, state], dim=1))
        return out.view(batch, config.action_chunk, config.action_dim)

    # Folder I/O (config.json + model.safetensors + stats.json): modeling_utils.PretrainedMixin.


class ConvIDMPredictor:
    """A trained ConvIDM in robot units, with the inputs of ``MotusRequest(mode="idm")``.

    ``predict(images, future_frames, state)``: images = camera role -> uint8 [H, W, 3] (or one composed
    image), future_frames = ``num_future_frames`` of those, state = raw [S]; returns raw actions [chunk, A].
    The composite is built with ``preprocessing`` exactly as for Motus.
    """

    def __init__(self, model: ConvIDM, normalizer: Normalizer, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.normalizer = normalizer
        self.layout = CompositeLayout(self.config.image_height, self.config.image_width)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu") -> ConvIDMPredictor:
        model, stats = ConvIDM.from_pretrained(directory, device=device), load_stats(directory)
        if stats is None:
            logger.warning("ConvIDM folder %s has no stats.json: state and actions are in raw units", directory)
        normalizer = Normalizer.from_dict(stats) if stats else Normalizer.identity()
        return cls(model, normalizer, device=device)

    def _pad(self, values: np.ndarray, width: int, what: str) -> np.ndarray:
        if values.shape[-1] > width:
            raise ValueError(f"{what} has {values.shape[-1]} dims, the model takes at most {width}")
        return np.concatenate([values, np.zeros(values.shape[:-1] + (width - values.shape[-1],), np.float32)], -1)

    def inputs(
        self,
        images: Mapping[str, np.ndarray] | np.ndarray,
        future_frames: Sequence[Mapping[str, np.ndarray] | np.ndarray],
        state: np.ndarray,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model inputs (batch of one) from robot inputs."""
        if len(future_frames) != self.config.num_future_frames:
            raise ValueError(
                f"future_frames: expected {self.config.num_future_frames} observations, got {len(future_frames)}"
            )
        condition = preprocess_images(images, self.layout)
        future = torch.stack([preprocess_images(frame, self.layout) for frame in future_frames])
        normalised = self.normalizer.normalize("state", np.asarray(state, dtype=np.float32))
        normalised = self._pad(np.asarray(normalised, dtype=np.float32), self.config.state_dim, "state")
        return (
            condition[None].to(self.device),
            future[None].to(self.device),
            torch.from_numpy(normalised)[None].to(self.device),
        )

    @torch.no_grad()
    def predict_normalized(self, images, future_frames, state) -> np.ndarray:
        """Normalised actions [chunk, A]."""
        return self.model(*self.inputs(images, future_frames, state))[0].float().cpu().numpy()

    def predict(self, images, future_frames, state) -> np.ndarray:
        """Raw actions [chunk, A'] (A' = the stats' action width, at most A)."""
        normalised = self.predict_normalized(images, future_frames, state)
        if self.normalizer.mode == "identity":
            return normalised
        width = self.normalizer.stats["action"]["mean" if self.normalizer.mode == "mean_std" else "min"].shape[0]
        return np.asarray(self.normalizer.unnormalize("action", normalised[:, :width]), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class ConvIDMTrainConfig:
    """One ``motus train-conv-idm`` run."""

    dataset: str = ""
    preset: str = "motus-small-aloha"
    output: str = "runs/conv_idm"
    steps: int | None = 1000  # None: until max_minutes
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr_factor: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 25
    video_cache_mb: int = 2048
    model: dict[str, Any] = field(default_factory=dict)  # ConvIDMConfig overrides (channels, hidden_dim, ...)

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ValueError("train-conv-idm needs --dataset")
        if self.steps is None and not self.max_minutes:
            raise ValueError("give --steps and/or --max-minutes (a run needs an end)")
        if (self.steps is not None and self.steps < 1) or self.batch_size < 1:
            raise ValueError(f"need steps >= 1 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if self.max_minutes < 0 or self.learning_rate <= 0 or self.warmup_steps < 0:
            raise ValueError(
                f"need max_minutes >= 0, lr > 0, warmup_steps >= 0; "
                f"got {self.max_minutes}, {self.learning_rate}, {self.warmup_steps}"
            )
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data


def lr_factor(step: int, progress: float, warmup_steps: int, min_factor: float) -> float:
    """Linear warm-up over ``warmup_steps``, then a cosine from 1 to ``min_factor`` over ``progress`` in [0, 1]."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def batch_tensors(samples: Mapping[str, Any], device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """(condition_image, future_images, state, actions) of collated ``MotusTrainingDataset`` samples."""
    names = ("condition_image", "future_images", "state", "actions")
    return tuple(samples[name].to(device) for name in names)


def train_step(
    model: ConvIDM, optimizer: torch.optim.Optimizer, batch: Sequence[torch.Tensor], grad_clip: float = 1.0
) -> dict[str, float]:
    """One AdamW step on the MSE of the normalised actions."""
    condition, future, state, actions = batch
    model.train()
    prediction = model(condition, future, state)
    loss = torch.nn.functional.mse_loss(prediction, actions)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip else torch.tensor(0.0)
    optimizer.step()
    return {"loss": float(loss.detach()), "grad_norm": float(grad_norm)}


def build_data(config: ConvIDMTrainConfig, model_config: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Motus's own training data for ``config.dataset``: (MotusTrainingDataset, MixtureSampler, stats dict)."""
    from motus_model.data.mixture import MixtureConfig
    from motus_model.training.config import TrainingConfig
    from motus_model.training.trainer import build_training_data, checkpoint_stats

    root = Path(config.dataset)
    if not root.is_dir():
        raise FileNotFoundError(f"--dataset {root} does not exist")
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"--dataset {root} is not a LeRobot dataset (no meta/info.json)")
    # the stage-3 preset is what `motus train --stage 3` uses: same action column and normalisation mode
    motus_training = TrainingConfig.for_stage(
        3,
        dataset=str(root),
        preset=config.preset,
        output=config.output,
        video_cache_mb=config.video_cache_mb,
    )
    if motus_training.action_key is None:
        raise ValueError("the stage-3 training preset has no action column")
    mixture = MixtureConfig.single(root, motus_training.action_key)
    dataset, sampler, normalizers = build_training_data(motus_training, model_config, mixture, config.seed)
    return dataset, sampler, checkpoint_stats(normalizers[0], motus_training.action_key)


def train_conv_idm(config: ConvIDMTrainConfig, show_progress: bool = True) -> dict[str, Any]:
    """Train a ConvIDM on Motus's samples and save it to ``config.output``; returns the summary
    {"steps", "final_loss" (mean of the last 50 steps), "last_loss", "wall_clock_s", "stopped_by",
    "parameters", "output"}."""
    from tqdm import tqdm

    from motus_model.config import MotusConfig
    from motus_model.data.torch_dataset import collate_samples

    motus_config = MotusConfig.preset(config.preset)  # unknown presets raise here, with a hint
    model_config = ConvIDMConfig.from_preset(config.preset, **config.model)
    output = Path(config.output)
    dataset, sampler, stats = build_data(config, motus_config)
    output.mkdir(parents=True, exist_ok=True)
    (output / TRAINING_CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    metrics_path = output / METRICS_NAME
    metrics_path.write_text("")

    torch.manual_seed(config.seed)
    model = ConvIDM(model_config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, betas=tuple(config.betas), weight_decay=config.weight_decay
    )
    logger.info(
        "ConvIDM: %d parameters, preset %s, dataset %s", model.count_parameters(), config.preset, config.dataset
    )
    budget_s = 60.0 * config.max_minutes
    started = time.perf_counter()
    losses: list[float] = []
    stopped_by = "steps"
    step = 0
    progress = tqdm(total=config.steps, desc="conv idm", disable=not show_progress)
    with metrics_path.open("a") as metrics:
        while config.steps is None or step < config.steps:
            elapsed = time.perf_counter() - started
            if budget_s and elapsed >= budget_s:
                stopped_by = "max_minutes"
                break
            fraction = max(step / config.steps if config.steps else 0.0, elapsed / budget_s if budget_s else 0.0)
            lr = config.learning_rate * lr_factor(step, fraction, config.warmup_steps, config.min_lr_factor)
            for group in optimizer.param_groups:
                group["lr"] = lr
            samples = collate_samples([dataset[key] for key in sampler.keys_for_step(step, config.batch_size)])
            result = train_step(model, optimizer, batch_tensors(samples), config.grad_clip)
            if not math.isfinite(result["loss"]):
                raise FloatingPointError(f"loss is {result['loss']} at step {step}")
            step += 1
            losses.append(result["loss"])
            progress.update(1)
            progress.set_postfix(loss=f"{result['loss']:.4f}", lr=f"{lr:.2e}")
            if step % config.log_every == 0 or step == config.steps:
                record = {"step": step, "lr": lr, "elapsed_s": round(time.perf_counter() - started, 2), **result}
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
    progress.close()
    wall = time.perf_counter() - started
    model.save_pretrained(output, stats=stats)
    tail = losses[-50:]
    return {
        "steps": step,
        "final_loss": float(np.mean(tail)) if tail else None,
        "last_loss": losses[-1] if losses else None,
        "wall_clock_s": round(wall, 1),
        "stopped_by": stopped_by,
        "parameters": model.count_parameters(),
        "output": str(output),
    }
