"""Training configuration: one dataclass, loaded from a stage preset YAML plus command-line overrides,
saved as ``training_config.json`` in the output folder.

Optimiser defaults are the reference's (thu-ml/Motus release configs): AdamW betas (0.9, 0.95), weight decay
0.01, lr 5e-5, warm-up 200 steps, then a linear decay of the lr factor from f_max 0.99 to f_min 0.4
over the cycle, gradient clip 0.5, bf16 autocast (only where a GPU is present).

The three stages (paper arXiv 2512.13030 "Model Training"; the stage table of the thu-ml/Motus README):
  1. video dynamics: the video expert learns on video only; action and understanding experts frozen,
     action loss off (training_mode "pretrain": no state token).
  2. latent-action pretraining: every expert trains; actions are the latent actions of the
     latent-action VAE (``latent_action`` column); training_mode "pretrain".
  3. embodiment fine-tuning: real actions, training_mode "finetune"; the action expert's input
     encoder and decoder (head) are re-initialised and the state encoder / registers are new, as the
     reference does going from stage 2 to 3.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from motus_model.flow_matching import DEFAULT_MODE_MIX, check_mode_mix

logger = logging.getLogger(__name__)


def stage_preset_dir() -> Path:
    """config/training/ of the source tree, else of the installed package (share/motus_ros/config/training
    under the install prefix, found from this file's location, sys.prefix or AMENT_PREFIX_PATH)."""
    here = Path(__file__).resolve()
    candidates = [here.parents[3] / "config" / "training"]
    prefixes = [here.parents[k] for k in range(3, min(7, len(here.parents)))] + [Path(sys.prefix)]
    prefixes += [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates += [prefix / "share" / "motus_ros" / "config" / "training" for prefix in prefixes]
    for candidate in candidates:
        if (candidate / "stage3.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"stage presets (stage1-3.yaml) not found; looked in {[str(c) for c in candidates]}")


@dataclass
class TrainingConfig:
    """Everything a training run needs (see the module docstring for the stages)."""

    # --- what to train
    stage: int = 3
    # model preset name (MotusConfig.preset) when starting from scratch, or ignored when init_from is set
    preset: str = "motus-tiny"
    # checkpoint of the previous stage to start from ("" = random init from the preset)
    init_from: str = ""
    # model keys NOT taken from init_from (re-initialised); stage 3 resets the action encoder and decoder
    reinit_prefixes: list[str] = field(default_factory=list)
    # submodules whose parameters are frozen (requires_grad False)
    frozen_modules: list[str] = field(default_factory=list)
    # Train only MotusModel.video_output_parameter_names (the video head, the last layer's video side after the
    # joint attention, a clean-only action path): the policy, IDM and joint actions stay bit-identical to
    # init_from's, so a world-model fine-tune cannot cost the policy anything.
    train_video_outputs_only: bool = False
    training_mode: str = "finetune"  # "finetune" | "pretrain"
    # loss weights override the model config's when not None (stage 1 turns the action loss off)
    video_loss_weight: float | None = None
    action_loss_weight: float | None = None
    # UniDiffuser-style mode mixing: the share of each of the five modes among the training samples
    # (flow_matching.training_sigmas: a given modality at sigma 0 with no loss, a marginalised one at
    # sigma 1). None: independent shifted sigmas only (stage 1, video only; and the runs before this field).
    mode_mix: dict[str, float] | None = field(default_factory=lambda: dict(DEFAULT_MODE_MIX))
    # Train through MotusModel.forward_video_only (stage 1): the video expert alone, the action and
    # understanding experts neither run nor trained (they must be frozen).
    video_only: bool = False
    # Switch on MotusConfig.action_modulation (the actions modulate their future frames' video tokens, beside the
    # joint attention). A model or init_from checkpoint that has the path keeps it; switched on over an
    # init_from checkpoint without it, the path starts at zero (the checkpoint's outputs, unchanged at step 0).
    action_modulation: bool = False
    # ... only where the actions are given clean (MotusConfig.action_modulation_clean_only; switches the path on).
    # Kept from a checkpoint that has it, as the path is.
    action_modulation_clean_only: bool = False

    # --- data
    dataset: str = ""  # one LeRobot dataset folder (or use mixture)
    mixture: str = ""  # a mixture YAML (data pyramid); overrides dataset
    # column used as actions: "action" (commanded targets), "latent_action" (stage 2),
    # "observation.state" (future qpos, as the reference's loaders); None = video only
    action_key: str | None = "action"
    eval_dataset: str = ""  # held-out LeRobot dataset for the evaluation loss ("" = none)
    # The composite's camera roles, in order (1 to 4; saved in the checkpoint's config.json as config.cameras).
    # Empty: the first dataset's camera_map roles, else its cameras (observation.images[.cam_]<role>, the head
    # first). Every dataset must have these roles.
    cameras: list[str] = field(default_factory=list)
    camera_tiling: str = ""  # "grid" | "head_row" | "" (grid for 1-2 cameras, head_row for 3-4)
    normalization: str = "mean_std"  # Normalizer mode for state and actions
    # Where a mixture's statistics come from (the checkpoint saves one set, the first dataset's normaliser):
    # "per_dataset": each dataset its own meta/stats.json (one robot per dataset, as the reference's
    # per-embodiment stat.json); "pooled": one set over every dataset (one robot, several tasks);
    # "init": the init_from checkpoint's stats.json (a fine-tune keeps what its action expert learned under).
    normalization_stats: str = "per_dataset"
    num_workers: int = 0  # data-loader worker processes preparing whole steps ahead (video decoding)
    # decoded clips kept in memory per process (and per worker); decoding dominates the data time, so a
    # small-resolution dataset that fits is decoded once
    video_cache_mb: int = 2048
    truncate_instructions: bool = False
    # Proprioception augmentation (finetune only). Without it a small policy learns to read where the
    # target is from the arm's own heading in the state, ignores the camera, and drives every episode
    # towards the average object pose (docs/results.md, "The policy ignored the camera").
    # state_noise_std: Gaussian noise added to the normalised state, in units of the state's std.
    # state_dropout: fraction of samples whose state is replaced by the mean state (0 after normalising).
    state_noise_std: float = 0.0
    state_dropout: float = 0.0
    # Draw this fraction of the samples from the first episode_start_rows rows of an episode (MixtureSampler):
    # at the start only the camera tells where the object is.
    episode_start_fraction: float = 0.0
    episode_start_rows: int = 64

    # --- conditioning encoders (frozen); "" builds tiny real encoders for the small presets
    text_encoder_path: str = ""
    vlm_path: str = ""
    video_vae_path: str = ""  # Wan VAE folder for latents.kind "wan_vae"

    # --- optimisation (reference defaults)
    steps: int = 1000
    # stop (and save) once this many minutes of training have passed in this invocation, even before
    # `steps` (0 = no limit): ablations compared at equal wall-clock
    max_minutes: float = 0.0
    batch_size: int = 8  # global batch (all processes, all accumulation micro-batches)
    gradient_accumulation: int = 1
    learning_rate: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    warmup_steps: int = 200
    lr_f_start: float = 1e-6
    lr_f_max: float = 0.99
    lr_f_min: float = 0.4
    lr_cycle_steps: int = 1_000_000
    grad_clip: float = 0.5
    mixed_precision: str = "auto"  # "auto" (bf16 autocast on GPU, fp32 on CPU) | "bf16" | "no"
    gradient_checkpointing: bool = False
    distributed_strategy: str = "ddp"  # "ddp" | "fsdp"
    seed: int = 0

    # --- bookkeeping
    output: str = "runs/motus"
    log_every: int = 10
    eval_every: int = 0  # 0 = only at the end (if eval_dataset is set)
    eval_batches: int = 2
    checkpoint_every: int = 500
    keep_checkpoints: int = 3

    def __post_init__(self) -> None:
        self.action_modulation = self.action_modulation or self.action_modulation_clean_only  # it restricts the path
        if self.state_noise_std < 0 or not 0 <= self.state_dropout < 1:
            raise ValueError(
                f"state_noise_std must be >= 0 and state_dropout in [0, 1), "
                f"got {self.state_noise_std}, {self.state_dropout}"
            )
        if not 0 <= self.episode_start_fraction <= 1 or self.episode_start_rows < 1:
            raise ValueError(
                f"episode_start_fraction must be in [0, 1] and episode_start_rows >= 1, got "
                f"{self.episode_start_fraction}, {self.episode_start_rows}"
            )
        if self.stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {self.stage}")
        if self.training_mode not in ("finetune", "pretrain"):
            raise ValueError(f"training_mode must be 'finetune' or 'pretrain', got {self.training_mode!r}")
        if self.steps < 0 or self.batch_size < 1 or self.gradient_accumulation < 1:
            raise ValueError(
                f"need steps >= 0, batch_size >= 1, gradient_accumulation >= 1; got {self.steps}, "
                f"{self.batch_size}, {self.gradient_accumulation}"
            )
        if self.max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0 (0 = no limit), got {self.max_minutes}")
        if self.normalization_stats not in ("per_dataset", "pooled", "init"):
            raise ValueError(
                f"normalization_stats must be 'per_dataset', 'pooled' or 'init', got {self.normalization_stats!r}"
            )
        if self.normalization_stats == "init" and not self.init_from:
            raise ValueError("normalization_stats 'init' takes the statistics of init_from: set --init-from")
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ValueError(f"mixed_precision must be 'auto', 'bf16' or 'no', got {self.mixed_precision!r}")
        if self.distributed_strategy not in ("ddp", "fsdp"):
            raise ValueError(f"distributed_strategy must be 'ddp' or 'fsdp', got {self.distributed_strategy!r}")
        if not 0 <= self.lr_f_min <= self.lr_f_max:
            raise ValueError(f"need 0 <= lr_f_min <= lr_f_max, got {self.lr_f_min}, {self.lr_f_max}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if isinstance(self.cameras, str):  # "high,left_wrist" from a YAML scalar
            self.cameras = [role.strip() for role in self.cameras.split(",") if role.strip()]
        if self.video_only and self.mode_mix is not None:
            raise ValueError("video_only training has no actions to mix modes with: set mode_mix to null")
        if self.mode_mix == {}:  # `--mode-mix off` (an override of None would be ignored)
            self.mode_mix = None
        if self.mode_mix is not None:
            if not isinstance(self.mode_mix, dict):
                raise ValueError(f"mode_mix must be a mapping mode -> share or null, got {self.mode_mix!r}")
            check_mode_mix(self.mode_mix)

    # --- serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TrainingConfig:
        path = Path(path)
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return cls.from_dict(data or {})

    @classmethod
    def for_stage(cls, stage: int, preset_dir: str | Path | None = None, **overrides: Any) -> TrainingConfig:
        """The stage preset (config/training/stage{N}.yaml) with ``overrides`` (None values are ignored)."""
        directory = Path(preset_dir) if preset_dir is not None else stage_preset_dir()
        path = directory / f"stage{stage}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"stage preset not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        data.update({key: value for key, value in overrides.items() if value is not None})
        return cls.from_dict(data)
