"""The training loop behind ``motus train``: stages 1-3, single process or distributed, exact resume.

Order of work (nanoGPT's train.py order, with typed config and safetensors checkpoints):
setup (accelerate) -> model (preset or previous stage, re-initialised parts, frozen parts) ->
data (mixture sampler, per-dataset normalisation) -> frozen encoders -> optimiser and lr schedule ->
resume -> loop (loss, clip, step, log, eval, checkpoint).

Distributed: ``accelerate.Accelerator`` wraps the objective, so the same code runs as one process,
under ``torchrun`` / ``accelerate launch`` with DDP (tested here with two CPU processes over gloo),
or with accelerate's FSDP / DeepSpeed plugins from config/training/*.yaml (GPU only, untested here).

Randomness is arranged so that results do not depend on how the global batch is spread:
- the *global* batch of sample keys of step n is a pure function of (seed, n) (``keys_for_step``), the
  same on every rank, so data-loader workers can prepare batches ahead;
- the global batch is cut into ``world_size * gradient_accumulation`` shards; shard s goes to rank
  s // accumulation, micro-step s % accumulation, and draws its sigmas and noise from a generator
  seeded by (seed, step, s).
So 2 processes x 1 micro-batch and 1 process x 2 micro-batches compute the same gradient (up to
float summation order), and a resumed run continues bit-exactly: the only state is the step, the
model, the optimiser and the lr schedule, all saved in the checkpoint.

Checkpoint folder (loadable by ``MotusModel.from_pretrained`` / ``MotusEngine.from_pretrained``)::

    output/
      training_config.json
      metrics.jsonl                 one JSON object per logged step / evaluation
      tensorboard/                  when tensorboard is importable
      checkpoints/step_0000100/
        config.json  model.safetensors  stats.json      (core's save_pretrained)
        text_encoder/  vlm/                            frozen encoders used in training
        training_state/
          optimizer.pt  scheduler.pt  rng.pt           (torch.save, weights_only-loadable)
          trainer_state.json                           step, stage, world size
      latest                        name of the newest checkpoint folder
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from motus_model.config import CameraConfig, MotusConfig
from motus_model.data.lerobot import ACTION_KEY, STATE_KEY, LeRobotDataset, aggregate_stats
from motus_model.data.mixture import MixtureConfig, MixtureSampler
from motus_model.data.torch_dataset import (
    COMPOSITE_ROLE,
    DatasetSource,
    MotusTrainingDataset,
    SamplingConfig,
    camera_map_for,
    collate_samples,
    dataset_camera_roles,
)
from motus_model.flow_matching import (
    FlowMatchSchedule,
    check_mode_mix,
    dataset_mode_shares,
    flow_matching_loss,
    modality_probabilities,
)
from motus_model.modeling_motus import MotusModel
from motus_model.modeling_utils import STATS_NAME
from motus_model.preprocessing import CompositeLayout, Normalizer
from motus_model.training.config import TrainingConfig
from motus_model.training.evaluation import evaluate_modes
from motus_model.training.features import TEXT_ENCODER_DIR, VAE_DIR, VLM_DIR, ConditioningEncoders, build_encoders
from motus_model.training.schedule import LinearWarmupDecay, make_scheduler

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
TRAINING_STATE_DIR = "training_state"
LATEST_FILE = "latest"


class FlowMatchingObjective(nn.Module):
    """Wraps the model so the distributed wrapper sees the whole loss computation in ``forward``."""

    def __init__(
        self,
        model: MotusModel,
        loss_config: MotusConfig,
        mode_mix: dict[str, float] | None = None,
        video_only: bool = False,
        dataset_mode_shares: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_config = loss_config
        self.schedule = FlowMatchSchedule(loss_config.schedule)
        self.mode_mix = mode_mix
        self.video_only = video_only
        self.dataset_mode_shares = dataset_mode_shares  # [datasets, 5], where a mixture entry has its own mix

    def forward(self, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        return flow_matching_loss(
            self.model,
            batch,
            self.loss_config,
            generator,
            self.schedule,
            self.mode_mix,
            self.video_only,
            self.dataset_mode_shares,
        )


@dataclass
class TrainResult:
    """What a run produced."""

    step: int
    output: Path
    last_checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    eval_history: list[dict[str, Any]] = field(default_factory=list)


def shard_seed(seed: int, step: int, shard: int) -> int:
    """Seed of the noise generator of one shard of one step (independent of the process layout)."""
    return (seed * 1_000_003 + step * 10_007 + shard) % (2**63 - 1)


_STATE_AUGMENTATION_STREAM = 0x5EED  # mixed into the shard seed for the state augmentation's generator


def perturb_state(state: torch.Tensor, noise_std: float, dropout: float, generator: torch.Generator) -> torch.Tensor:
    """Training-time augmentation of the normalised state [B, S] (``TrainingConfig.state_noise_std``,
    ``state_dropout``): Gaussian noise of ``noise_std`` state stds, then a ``dropout`` fraction of the rows
    set to 0 (the mean state under mean_std normalisation). Draws from ``generator`` so a resumed run repeats it
    exactly."""
    if noise_std > 0:
        noise = torch.randn(state.shape, generator=generator, device=generator.device, dtype=torch.float32)
        state = state + noise_std * noise.to(state.device, state.dtype)
    if dropout > 0:
        keep = torch.rand(state.shape[0], generator=generator, device=generator.device) >= dropout
        state = state * keep.to(state.device, state.dtype).unsqueeze(-1)
    return state


# ---------------------------------------------------------------------------------------------
# Model set-up per stage
# ---------------------------------------------------------------------------------------------


def build_model(config: TrainingConfig, cameras: CameraConfig | None = None) -> MotusModel:
    """Model for the stage: the preset from scratch, or the previous stage's checkpoint with
    ``reinit_prefixes`` re-initialised and keys new to this training mode left at their init.
    ``cameras`` (``resolve_cameras``) replaces the config's camera layout: no weight depends on it."""
    torch.manual_seed(config.seed)
    previous = None
    reinit_prefixes = config.reinit_prefixes
    if config.train_video_outputs_only and not config.init_from:
        raise ValueError("train_video_outputs_only trains a checkpoint's video outputs: set --init-from")
    if config.init_from:
        from motus_model.checkpoint import load_pretrained

        previous, _ = load_pretrained(config.init_from, device="cpu")
        if config.train_video_outputs_only:
            # the point is to keep init_from's action outputs: nothing of its is re-initialised
            reinit_prefixes = []
            live_path = previous.action_to_video is not None and not previous.config.action_modulation_clean_only
            if live_path and config.action_modulation_clean_only:
                raise ValueError(
                    f"train_video_outputs_only keeps {config.init_from}'s policy, but switching "
                    "action_modulation_clean_only on over its live action path changes it: leave it off"
                )
        elif config.reinit_prefixes and previous.config.training_mode == config.training_mode == "finetune":
            # The stage-3 preset re-initialises the action encoder and head because a stage-2 checkpoint's hold
            # latent actions; a stage-3 checkpoint's are the trained policy, and this throws them away.
            logger.warning(
                "init_from %s is already a stage-3 (finetune) checkpoint: re-initialising %s discards its trained "
                "action encoder/head; set reinit_prefixes: [] in the config to continue from them",
                config.init_from,
                config.reinit_prefixes,
            )
    model_config = MotusConfig.preset(config.preset) if previous is None else copy.deepcopy(previous.config)
    model_config.training_mode = config.training_mode
    model_config.action_modulation_clean_only = (
        model_config.action_modulation_clean_only or config.action_modulation_clean_only
    )
    model_config.action_modulation = model_config.action_modulation or config.action_modulation
    model_config.__post_init__()
    model = MotusModel(model_config)
    if previous is None:
        logger.info("initialised %s from scratch (random weights)", config.preset)
    else:
        load_stage_weights(model, previous.state_dict(), reinit_prefixes)
        logger.info("initialised from %s (re-initialised: %s)", config.init_from, reinit_prefixes or "nothing")
    if cameras is not None:
        if config.init_from and cameras != model.config.cameras:
            logger.warning(
                "the composite changes from %s's cameras %s (%s) to %s (%s): the video expert re-learns its views",
                config.init_from,
                model.config.cameras.roles,
                model.config.cameras.tiling,
                cameras.roles,
                cameras.tiling,
            )
        model.config.cameras = copy.deepcopy(cameras)
        logger.info("camera layout: %s, tiling %s", model.config.cameras.roles, model.config.cameras.tiling)
    model.gradient_checkpointing = config.gradient_checkpointing
    return model


def inherited_encoder_paths(config: TrainingConfig) -> tuple[str, str, str]:
    """The frozen encoders' folders (text encoder, VLM, video codec): the config's where set, else the ones
    ``init_from`` carries (its ``text_encoder/``, ``vlm/``, ``vae/``), else "" (tiny random encoders are built).
    A fine-tune must see the conditioning features, and the latent space, its initial weights learned from."""
    given = (config.text_encoder_path, config.vlm_path, config.video_vae_path)
    source = Path(config.init_from) if config.init_from else None
    paths = []
    for path, folder in zip(given, (TEXT_ENCODER_DIR, VLM_DIR, VAE_DIR), strict=True):
        if not path and source is not None and (source / folder / "config.json").is_file():
            logger.info("using %s's %s/ (the encoder its weights were trained with)", source, folder)
            path = str(source / folder)
        paths.append(path)
    text_encoder_path, vlm_path, video_vae_path = paths
    return text_encoder_path, vlm_path, video_vae_path


def load_stage_weights(
    model: MotusModel, previous: dict[str, torch.Tensor], reinit_prefixes: list[str]
) -> dict[str, list[str]]:
    """Copy the previous stage's weights into ``model`` with an explicit account of every key.

    Keys under ``reinit_prefixes`` keep their fresh initialisation. Keys the new model has and the
    previous one lacks are allowed only where the training mode adds them (finetune's state encoder
    and registers, after a pretrain stage) or the config switches on a path (``action_to_video``, zero at
    the start); anything else missing, unexpected or mis-shaped raises.
    Returns {"loaded", "reinitialised", "new"} key lists.
    """
    current = model.state_dict()
    reinit = [key for key in current if any(key.startswith(prefix) for prefix in reinit_prefixes)]
    mode_keys = ("action_expert.state_encoder.", "action_expert.registers")
    new = [key for key in current if key not in previous and key not in reinit]
    bad_new = [key for key in new if not key.startswith((*mode_keys, "action_to_video."))]
    dropped_by_mode = [key for key in previous if key not in current and key.startswith(mode_keys)]
    unexpected = [key for key in previous if key not in current and key not in dropped_by_mode]
    shape_errors = [
        f"{key}: checkpoint {tuple(previous[key].shape)} vs model {tuple(current[key].shape)}"
        for key in current
        if key in previous and key not in reinit and previous[key].shape != current[key].shape
    ]
    if bad_new or unexpected or shape_errors:
        raise ValueError(
            f"previous-stage checkpoint does not fit the model: missing {bad_new[:10]}, unexpected {unexpected[:10]}, "
            f"mis-shaped {shape_errors[:10]}"
        )
    loaded = [key for key in current if key in previous and key not in reinit]
    with torch.no_grad():
        for key in loaded:
            current[key].copy_(previous[key])
    return {"loaded": loaded, "reinitialised": reinit, "new": new}


def freeze(model: MotusModel, frozen_modules: list[str], video_outputs_only: bool = False) -> list[str]:
    """Freeze the named submodules, everything but ``MotusModel.video_output_parameter_names`` when
    ``video_outputs_only``, and the dead parameters (no gradient can reach them; DDP needs every trainable
    parameter to get one). Returns the frozen parameter names."""
    frozen = []
    for name in frozen_modules:
        module = model.get_submodule(name)
        for parameter_name, parameter in module.named_parameters():
            parameter.requires_grad_(False)
            frozen.append(f"{name}.{parameter_name}")
    if video_outputs_only:
        trainable = set(model.video_output_parameter_names())
        for name, parameter in model.named_parameters():
            if name not in trainable and parameter.requires_grad:
                parameter.requires_grad_(False)
                frozen.append(name)
    dead = set(model.dead_parameter_names())
    for name, parameter in model.named_parameters():
        if name in dead:
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def dataset_normalizer(dataset: LeRobotDataset, action_key: str | None, mode: str) -> Normalizer:
    """The dataset's state/action normaliser (stats from meta/stats.json); the model sees actions under
    the key ``action_key`` here and ``"action"`` in the checkpoint."""
    if STATE_KEY not in dataset.stats:
        raise ValueError(f"{dataset.root}/meta/stats.json has no {STATE_KEY!r} statistics")
    stats = {"state": dataset.stats[STATE_KEY]}
    if action_key is not None:
        if action_key not in dataset.stats:
            raise ValueError(f"{dataset.root}/meta/stats.json has no {action_key!r} statistics")
        stats[action_key] = dataset.stats[action_key]
    return Normalizer(stats, mode=mode)


def _counted(stats: dict[str, Any], dataset: LeRobotDataset) -> dict[str, Any]:
    """``stats`` with a frame count (LeRobot's stats.json may lack one: then every frame of the dataset)."""
    return stats if "count" in stats else {**stats, "count": [int(dataset.info["total_frames"])]}


def _shared_normalizers(
    state: Any, actions: dict[str, Any], action_keys: list[str | None], mode: str, eps: float = 1e-6
) -> list[Normalizer]:
    """One normaliser per dataset, all with the same statistics: ``state``, and ``actions[key]`` under each
    dataset's action column (none for a video-only dataset)."""
    return [
        Normalizer({"state": state, **({key: actions[key]} if key is not None else {})}, mode=mode, eps=eps)
        for key in action_keys
    ]


def pooled_normalizers(datasets: list[LeRobotDataset], action_keys: list[str | None], mode: str) -> list[Normalizer]:
    """One set of statistics over every dataset (one robot, several tasks): the state over all of them, each
    action column over the datasets that use it, combined by frame count (``aggregate_stats``)."""
    for dataset, key in zip(datasets, action_keys, strict=True):
        dataset_normalizer(dataset, key, mode)  # the one-dataset errors ("stats.json has no ...")
    state = aggregate_stats([_counted(d.stats[STATE_KEY], d) for d in datasets])
    actions = {
        key: aggregate_stats([_counted(d.stats[key], d) for d, k in zip(datasets, action_keys) if k == key])
        for key in set(action_keys) - {None}
    }
    return _shared_normalizers(state, actions, action_keys, mode)


def saved_normalizers(saved: dict[str, Any], action_keys: list[str | None], mode: str) -> list[Normalizer]:
    """A checkpoint's statistics ({"mode", "eps", "stats": {"state", "action"}}, its stats.json) for every
    dataset, whatever each calls its action column."""
    if saved.get("mode", "mean_std") != mode:
        raise ValueError(f"the checkpoint normalises with {saved.get('mode')!r} but the config says {mode!r}")
    stats = saved["stats"]
    if ACTION_KEY not in stats and any(key is not None for key in action_keys):
        raise ValueError("the checkpoint's statistics have no actions (a video-only stage): use another source")
    actions = {key: stats[ACTION_KEY] for key in action_keys if key is not None}
    return _shared_normalizers(stats["state"], actions, action_keys, mode, saved.get("eps", 1e-6))


def checkpoint_stats(normalizer: Normalizer, action_key: str | None) -> dict[str, Any]:
    """Stats saved with the model: {"mode", "eps", "stats": {"state", "action"}} (Normalizer.to_dict)."""
    data = normalizer.to_dict()
    if action_key is not None and action_key != ACTION_KEY:
        data["stats"][ACTION_KEY] = data["stats"].pop(action_key)
    return data


def resolve_cameras(config: TrainingConfig, mixture: MixtureConfig) -> CameraConfig | None:
    """The composite's camera layout for this run: ``config.cameras`` when given, else the first dataset's
    ``camera_map`` roles, else its cameras (``dataset_camera_roles``). None when the first dataset stores one
    composed image (the model's own layout is kept)."""
    tiling = config.camera_tiling
    if config.cameras:
        return CameraConfig(list(config.cameras), tiling)
    entry = mixture.entries()[0][1]
    if entry.camera_map:
        if set(entry.camera_map) == {COMPOSITE_ROLE}:
            return None
        return CameraConfig(list(entry.camera_map), tiling)
    keys = LeRobotDataset(entry.path).camera_keys
    try:
        return CameraConfig(dataset_camera_roles(keys), tiling)
    except ValueError as exc:
        raise ValueError(f"{entry.path}: cameras {list(keys)}: {exc}; choose the composite's with --cameras") from exc


def build_training_data(
    config: TrainingConfig,
    model_config: MotusConfig,
    mixture: MixtureConfig,
    seed: int,
    stats: dict[str, Any] | None = None,
) -> tuple[MotusTrainingDataset, MixtureSampler, list[Normalizer]]:
    """The mixture's datasets, sampler and normalisers (per ``config.normalization_stats``; ``stats``, the
    checkpoint's {"mode", "eps", "stats": {"state", "action"}}, wins: the held-out data of a run is read with
    the run's own statistics)."""
    entries = [entry for _, entry in mixture.entries()]
    # no view of the composite is wider than the composite: decode at most that wide
    datasets = [
        LeRobotDataset(
            entry.path,
            max_frame_width=model_config.latents.image_width,
            video_cache_size=1_000_000,
            video_cache_mb=config.video_cache_mb,
        )
        for entry in entries
    ]
    keys = [entry.action_key for entry in entries]
    if stats is None and config.normalization_stats == "init":
        stats_path = Path(config.init_from) / STATS_NAME
        if not stats_path.is_file():
            raise ValueError(f"normalization_stats 'init': {config.init_from} has no {STATS_NAME}")
        stats = json.loads(stats_path.read_text())
    if stats is not None:
        normalizers = saved_normalizers(stats, keys, config.normalization)
    elif config.normalization_stats == "pooled":
        normalizers = pooled_normalizers(datasets, keys, config.normalization)
    else:
        normalizers = [dataset_normalizer(d, k, config.normalization) for d, k in zip(datasets, keys, strict=True)]
    roles = model_config.cameras.roles
    sources = [
        DatasetSource(dataset, entry.action_key, entry.camera_map or camera_map_for(dataset, roles), normalizer)
        for dataset, entry, normalizer in zip(datasets, entries, normalizers, strict=True)
    ]
    sampling = SamplingConfig.from_model_config(model_config)
    training = MotusTrainingDataset(
        sources,
        sampling,
        CompositeLayout.from_config(model_config),
        state_dim=model_config.action.state_dim,
        action_dim=model_config.action.action_dim,
    )
    lengths = [training.episode_lengths(i) for i in range(len(sources))]
    sampler = MixtureSampler(
        mixture,
        lengths,
        sampling.action_chunk,
        sampling.downsample_rate,
        seed=seed,
        episode_start_fraction=config.episode_start_fraction,
        episode_start_rows=config.episode_start_rows,
    )
    return training, sampler, normalizers


def make_mixture(config: TrainingConfig) -> MixtureConfig:
    if config.mixture:
        mixture = MixtureConfig.from_yaml(config.mixture)
    elif config.dataset:
        mixture = MixtureConfig.single(config.dataset, config.action_key)
    else:
        raise ValueError("training needs a dataset (--dataset) or a mixture (--mixture)")
    has_actions = {entry.action_key is not None for _, entry in mixture.entries()}
    if len(has_actions) > 1:
        raise ValueError(
            "a mixture must be all action-labelled or all video-only (the flow-matching loss has no "
            "per-sample action mask); put video-only tiers in a stage-1 run"
        )
    if False in has_actions and (config.action_loss_weight is None or config.action_loss_weight != 0):
        raise ValueError("video-only data needs action_loss_weight: 0 (stage 1)")
    return mixture


class StepBatches(torch.utils.data.Dataset):
    """Item i = this process's micro-batches (collated samples) for step ``start_step + i``.

    Indexing by step (not by sample) keeps the data order a function of (seed, step) whatever the
    number of loader workers, so prefetching never changes what a step sees.
    """

    def __init__(
        self,
        dataset: MotusTrainingDataset,
        sampler: MixtureSampler,
        batch_size: int,
        shard_size: int,
        rank: int,
        accumulation: int,
        start_step: int,
        end_step: int,
    ) -> None:
        self.dataset, self.sampler = dataset, sampler
        self.batch_size, self.shard_size = batch_size, shard_size
        self.rank, self.accumulation = rank, accumulation
        self.start_step, self.end_step = start_step, end_step

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def micro_batches(self, step: int) -> list[dict[str, Any]]:
        keys = self.sampler.keys_for_step(step, self.batch_size)
        batches = []
        for micro in range(self.accumulation):
            shard = self.rank * self.accumulation + micro
            shard_keys = keys[shard * self.shard_size : (shard + 1) * self.shard_size]
            batches.append(collate_samples([self.dataset[key] for key in shard_keys]))
        return batches

    def __getitem__(self, index: int) -> list[dict[str, Any]]:
        return self.micro_batches(self.start_step + index)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def write_model_card(directory: Path, config: TrainingConfig, model_config: MotusConfig, step: int) -> Path:
    """README.md of a checkpoint: what trained it, including the mode mix and what it means per modality."""
    lines = [
        f"# Model card: {directory.name}",
        "",
        f"Written by `motus train` (stage {config.stage}, {model_config.training_mode}) at step {step}.",
        "",
        "| | |",
        "|---|---|",
        f"| preset / init | {config.init_from or config.preset} |",
        f"| data | {config.mixture or config.dataset} (actions: {config.action_key}) |",
        f"| latents | {model_config.latents.kind}, {model_config.latents.channels} channels; a video token holds "
        f"{model_config.video_token_dim} values for a {model_config.video.dim}-wide expert |",
        f"| steps, batch, lr | {step} of {config.steps}, {config.batch_size}, {config.learning_rate} |",
        f"| frozen | {', '.join(config.frozen_modules) or 'nothing'}"
        + (
            " (trained: the video outputs' parameters only; VLA and IDM unchanged)"
            if config.train_video_outputs_only
            else ""
        )
        + " |",
        "| action modulation | "
        + (
            "on: each future frame's actions also modulate its video tokens"
            + (
                " where the actions are given clean (world model) |"
                if model_config.action_modulation_clean_only
                else " |"
            )
            if model_config.action_modulation
            else "off: the actions reach the video through the joint attention only (the release) |"
        ),
    ]
    if config.mode_mix is None:
        lines.append("| mode mix | none: independent shifted sigmas (sigma 0 never drawn) |")
    else:
        shares = check_mode_mix(config.mode_mix)
        per_modality = modality_probabilities(config.mode_mix)
        lines.append("| mode mix | " + ", ".join(f"{name} {share:.0%}" for name, share in shares.items()) + " |")
        for modality, probabilities in per_modality.items():
            lines.append(
                f"| {modality} | "
                + ", ".join(f"{name} {value:.0%}" for name, value in probabilities.items())
                + " (clean: sigma 0, no loss; marginalised: sigma 1) |"
            )
    lines += ["", "The whole training configuration is `training_config.json` in the run folder.", ""]
    path = directory / "README.md"
    path.write_text("\n".join(lines))
    return path


def latest_checkpoint(output: str | Path) -> Path | None:
    """The newest checkpoint folder of a run, or None."""
    marker = Path(output) / LATEST_FILE
    if not marker.is_file():
        return None
    path = Path(output) / CHECKPOINT_DIR / marker.read_text().strip()
    if not path.is_dir():
        raise FileNotFoundError(f"{marker} names {path}, which does not exist")
    return path


class Trainer:
    """One training run (see the module docstring). Call ``train()``."""

    def __init__(self, config: TrainingConfig, resume: bool = False) -> None:
        from accelerate import Accelerator

        self.config = config
        use_cuda = torch.cuda.is_available()
        mixed = "bf16" if use_cuda and config.mixed_precision in ("auto", "bf16") else "no"
        if config.mixed_precision == "bf16" and not use_cuda:
            logger.warning("mixed_precision bf16 asked for but no GPU: training in fp32 on the CPU")
        self.accelerator = Accelerator(mixed_precision=mixed, cpu=not use_cuda)
        self.device = self.accelerator.device
        self.world_size = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        shards = self.world_size * config.gradient_accumulation
        if config.batch_size % shards:
            raise ValueError(
                f"global batch_size {config.batch_size} must divide into "
                f"world_size x gradient_accumulation = {shards} shards"
            )
        self.shard_size = config.batch_size // shards
        self.output = Path(config.output)
        # 1. model (on resume: the checkpoint's weights, which must fit the model this config builds)
        self.resume_from = latest_checkpoint(self.output) if resume else None
        if resume and self.resume_from is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.output} (no '{LATEST_FILE}' file)")
        mixture = make_mixture(config)
        self.model = build_model(config, resolve_cameras(config, mixture))
        if self.resume_from is not None:
            from motus_model.checkpoint import load_pretrained

            saved, _ = load_pretrained(self.resume_from, device="cpu")
            try:
                self.model.load_state_dict(saved.state_dict(), strict=True)
            except RuntimeError as error:
                detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
                raise ValueError(
                    f"--resume: {self.resume_from} is another model than these settings build ({detail}); "
                    f"resume with the run's own settings: motus train --stage {config.stage} --output {self.output} "
                    "--resume"
                ) from None
        # saved once the model is known to fit: a refused resume leaves the run's record as it was
        if self.accelerator.is_main_process:
            self.output.mkdir(parents=True, exist_ok=True)
            config.save(self.output / "training_config.json")
        if config.video_only and not {"action_expert", "und_expert"} <= set(config.frozen_modules):
            raise ValueError("video_only training runs the video expert alone: freeze action_expert and und_expert")
        self.frozen = freeze(self.model, config.frozen_modules, config.train_video_outputs_only)
        self.model.to(self.device)
        loss_config = copy.deepcopy(self.model.config)
        if config.video_loss_weight is not None:
            loss_config.loss.video_weight = config.video_loss_weight
        if config.action_loss_weight is not None:
            loss_config.loss.action_weight = config.action_loss_weight
        model_config = self.model.config
        if loss_config.loss.video_weight > 0 and model_config.video_token_dim > model_config.video.dim:
            logger.warning(
                "a video token holds %d latent values but the video expert is %d wide: the head can write only %d "
                "of them (the sampler projects its noise there, the rest of the frame is lost; the video loss has "
                "a floor). A patch_pca preset fits the token to the expert (see MotusConfig.video_token_dim)",
                model_config.video_token_dim,
                model_config.video.dim,
                model_config.video.dim,
            )

        # 2. data (the mixture was read with the model: it gives the camera layout)
        self.dataset, self.sampler, normalizers = build_training_data(config, self.model.config, mixture, config.seed)
        first_key = mixture.entries()[0][1].action_key
        self.stats = checkpoint_stats(normalizers[0], first_key)
        self.eval_dataset = None
        if config.eval_dataset:
            eval_mixture = MixtureConfig.single(config.eval_dataset, first_key)
            self.eval_dataset, self.eval_sampler, _ = build_training_data(
                dataclasses.replace(config, episode_start_fraction=0.0),
                self.model.config,
                eval_mixture,
                seed=10_000,
                stats=self.stats,
            )

        # 3. frozen encoders (tiny ones are built once, by the main process)
        if self.accelerator.is_main_process:
            self.encoders = self._build_encoders()
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            self.encoders = self._build_encoders()

        # 4. optimiser and schedule over the trainable parameters only
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            trainable, lr=config.learning_rate, betas=tuple(config.betas), weight_decay=config.weight_decay
        )
        self.scheduler = make_scheduler(
            self.optimizer,
            LinearWarmupDecay(
                config.warmup_steps, config.lr_f_start, config.lr_f_max, config.lr_f_min, config.lr_cycle_steps
            ),
        )
        self.objective, self.optimizer = self.accelerator.prepare(
            FlowMatchingObjective(
                self.model,
                loss_config,
                config.mode_mix,
                config.video_only,
                dataset_mode_shares(config.mode_mix, [entry.mode_mix for _, entry in mixture.entries()]),
            ),
            self.optimizer,
        )
        self.step = 0
        if self.resume_from is not None:
            self._load_training_state(self.resume_from / TRAINING_STATE_DIR)
        self.tensorboard = self._open_tensorboard()
        logger.info(
            "stage %d, %s, %d trainable / %d frozen parameters, world size %d, global batch %d (%d per shard)",
            config.stage,
            self.model.config.training_mode,
            sum(p.numel() for p in trainable),
            sum(p.numel() for p in self.model.parameters() if not p.requires_grad),
            self.world_size,
            config.batch_size,
            self.shard_size,
        )

    # -- pieces --------------------------------------------------------------------------------
    def _build_encoders(self) -> ConditioningEncoders:
        config = self.config
        text_encoder_path, vlm_path, video_vae_path = inherited_encoder_paths(config)
        return build_encoders(
            self.model.config,
            self.output / "encoders",
            text_encoder_path,
            vlm_path,
            video_vae_path,
            device=self.device,
            truncate_instructions=config.truncate_instructions,
            seed=config.seed,
        )

    def _open_tensorboard(self) -> Any:
        if not self.accelerator.is_main_process:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("tensorboard not importable: metrics go to metrics.jsonl only")
            return None
        return SummaryWriter(str(self.output / "tensorboard"))

    def encode(self, samples: dict[str, Any]) -> dict[str, Any]:
        """Collated samples -> model batch on this process's device (frozen encoders, no grad)."""
        batch = self.encoders.encode_batch(samples, self.device)
        if not self.model.config.uses_state:
            batch["state"] = None
        return batch

    def step_batches(self, end_step: int | None = None) -> StepBatches:
        config = self.config
        return StepBatches(
            self.dataset,
            self.sampler,
            config.batch_size,
            self.shard_size,
            self.rank,
            config.gradient_accumulation,
            self.step,
            config.steps if end_step is None else end_step,
        )

    def _autocast(self):
        return self.accelerator.autocast() if self.accelerator.mixed_precision != "no" else nullcontext()

    # -- one optimisation step -----------------------------------------------------------------
    def train_step(self, micro_batches: list[dict[str, Any]] | None = None) -> dict[str, float]:
        """Run this process's shards of the current step (prepared by ``StepBatches``, or loaded here),
        step the optimiser. Returns step metrics (averaged over every shard of every process)."""
        config = self.config
        if micro_batches is None:
            micro_batches = self.step_batches().micro_batches(self.step)
        accumulation = config.gradient_accumulation
        if len(micro_batches) != accumulation:
            raise ValueError(f"expected {accumulation} micro-batches, got {len(micro_batches)}")
        totals = torch.zeros(3, device=self.device)  # loss, video, action summed over local shards
        for micro, samples in enumerate(micro_batches):
            shard = self.rank * accumulation + micro
            batch = self.encode(samples)
            seed = shard_seed(config.seed, self.step, shard)
            generator = torch.Generator(device=self.device).manual_seed(seed)
            if batch.get("state") is not None and (config.state_noise_std > 0 or config.state_dropout > 0):
                # its own generator: switching the augmentation on leaves the loss's noise draws unchanged
                augmentation = torch.Generator(device=self.device).manual_seed(seed ^ _STATE_AUGMENTATION_STREAM)
                batch["state"] = perturb_state(
                    batch["state"], config.state_noise_std, config.state_dropout, augmentation
                )
            sync = nullcontext() if micro == accumulation - 1 else self.accelerator.no_sync(self.objective)
            with sync:
                with self._autocast():
                    loss, parts = self.objective(batch, generator)
                self.accelerator.backward(loss / accumulation)
            totals += torch.tensor([parts["loss"], parts["video"], parts["action"]], device=self.device)
        grad_norm = self.accelerator.clip_grad_norm_(
            [p for p in self.objective.parameters() if p.requires_grad], config.grad_clip
        )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        totals = self.accelerator.reduce(totals, reduction="sum") / (self.world_size * accumulation)
        return {
            "step": self.step,
            "loss": float(totals[0]),
            "video": float(totals[1]),
            "action": float(totals[2]),
            "grad_norm": float(grad_norm),
            "lr": float(self.scheduler.get_last_lr()[0]),
        }

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Held-out loss per mode on the eval dataset (same samples and noise every time)."""
        if self.eval_dataset is None:
            raise ValueError("no eval_dataset configured")
        batch_size = max(1, self.config.batch_size // self.world_size)
        batches = []
        for index in range(self.config.eval_batches):
            keys = self.eval_sampler.keys_for_step(index, batch_size)
            batches.append(self.encode(collate_samples([self.eval_dataset[key] for key in keys])))
        with_actions = self.config.action_key is not None and self.config.action_loss_weight != 0
        return evaluate_modes(self.accelerator.unwrap_model(self.objective).model, batches, with_actions=with_actions)

    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write checkpoints/step_N (model + encoders + training_state) and mark it latest."""
        self.accelerator.wait_for_everyone()
        name = f"step_{self.step:07d}"
        directory = self.output / CHECKPOINT_DIR / name
        model = self._full_model()  # collective under FSDP / DeepSpeed: every rank takes part
        if self.accelerator.is_main_process:
            model.save_pretrained(directory, stats=self.stats)
            self.encoders.save(directory)
            write_model_card(directory, self.config, self.model.config, self.step)
            state_dir = directory / TRAINING_STATE_DIR
            state_dir.mkdir(parents=True, exist_ok=True)
            torch.save(self.optimizer.state_dict(), state_dir / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), state_dir / "scheduler.pt")
            numpy_state = np.random.get_state()
            python_state = random.getstate()
            rng = {
                "torch": torch.get_rng_state(),
                "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
                "numpy_rest": [int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
                "python": [python_state[0], list(python_state[1]), python_state[2]],
            }
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            torch.save(rng, state_dir / "rng.pt")
            trainer_state = {"step": self.step, "world_size": self.world_size, "stage": self.config.stage}
            (state_dir / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
            (self.output / LATEST_FILE).write_text(name + "\n")
            self._prune_checkpoints()
            logger.info("saved checkpoint %s", directory)
        self.accelerator.wait_for_everyone()
        return directory

    def _full_model(self) -> MotusModel:
        """The model with full (unsharded) weights, for saving. Under FSDP / DeepSpeed the weights are
        gathered by accelerate into a CPU copy (untested here: no GPUs); otherwise the model itself."""
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            return self.accelerator.unwrap_model(self.objective).model
        state = self.accelerator.get_state_dict(self.objective)
        model = MotusModel(self.model.config)
        if self.accelerator.is_main_process:
            prefix = "model."
            model.load_state_dict(
                {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}, strict=True
            )
        return model

    def _prune_checkpoints(self) -> None:
        keep = self.config.keep_checkpoints
        if keep <= 0:
            return
        folders = sorted((self.output / CHECKPOINT_DIR).glob("step_*"))
        for folder in folders[:-keep]:
            shutil.rmtree(folder)

    def _load_training_state(self, state_dir: Path) -> None:
        trainer_state = json.loads((state_dir / "trainer_state.json").read_text())
        if trainer_state["stage"] != self.config.stage:
            raise ValueError(
                f"checkpoint is from stage {trainer_state['stage']}, this run is stage {self.config.stage}"
            )
        self.optimizer.load_state_dict(
            torch.load(state_dir / "optimizer.pt", map_location=self.device, weights_only=True)
        )
        scheduler_state = torch.load(state_dir / "scheduler.pt", weights_only=True)
        # Only the step comes from the checkpoint; the schedule's shape is this run's config, so a resumed run
        # can extend or anneal the schedule (LambdaLR would otherwise restore the saved factor's fields).
        scheduler_state["lr_lambdas"] = [None] * len(scheduler_state.get("lr_lambdas", []))
        self.scheduler.load_state_dict(scheduler_state)
        rng = torch.load(state_dir / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        position, has_gauss, cached_gaussian = rng["numpy_rest"]
        np.random.set_state(
            ("MT19937", rng["numpy_keys"].numpy().astype(np.uint32), position, has_gauss, cached_gaussian)
        )
        version, internal, gauss_next = rng["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if torch.cuda.is_available() and "cuda" in rng:
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = int(trainer_state["step"])
        logger.info("resumed from %s at step %d", state_dir.parent, self.step)

    # -- the loop ---------------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        with (self.output / "metrics.jsonl").open("a") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for name, value in record.items():
                if isinstance(value, (int, float)) and name != "step":
                    self.tensorboard.add_scalar(f"train/{name}", value, record["step"])
                elif isinstance(value, dict):  # eval: {mode: {video, action}}
                    for mode, losses in value.items():
                        for loss_name, loss in losses.items():
                            self.tensorboard.add_scalar(f"eval/{mode}/{loss_name}", loss, record["step"])

    def train(self) -> TrainResult:
        config = self.config
        result = TrainResult(step=self.step, output=self.output, last_checkpoint=self.resume_from)
        progress = tqdm(
            total=config.steps,
            initial=self.step,
            desc=f"stage {config.stage}",
            disable=not self.accelerator.is_main_process,
        )
        started = time.perf_counter()
        loader = torch.utils.data.DataLoader(
            self.step_batches(),
            batch_size=None,
            shuffle=False,
            num_workers=config.num_workers,
            prefetch_factor=2 if config.num_workers else None,
            persistent_workers=False,
        )
        for micro_batches in loader:
            metrics = self.train_step(micro_batches)
            if not math.isfinite(metrics["loss"]):
                raise FloatingPointError(f"loss is {metrics['loss']} at step {self.step}")
            result.history.append(metrics)
            progress.update(1)
            progress.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
            if self.step % config.log_every == 0 or self.step == config.steps:
                self.log(dict(metrics, elapsed_s=time.perf_counter() - started))
            if self.eval_dataset is not None and config.eval_every and self.step % config.eval_every == 0:
                evaluation = {"step": self.step, "eval": self.evaluate()}
                result.eval_history.append(evaluation)
                self.log(evaluation)
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                result.last_checkpoint = self.save_checkpoint()
            if config.max_minutes and time.perf_counter() - started >= 60.0 * config.max_minutes:
                logger.info("stopping at step %d: the %.1f-minute budget is spent", self.step, config.max_minutes)
                break
        else:
            if config.max_minutes:  # the steps ran out first: a budget in minutes usually means "until then"
                logger.warning(
                    "stopped at steps=%d after %.1f of the %.1f minutes of --max-minutes: pass a larger --steps to "
                    "train for the whole budget",
                    config.steps,
                    (time.perf_counter() - started) / 60.0,
                    config.max_minutes,
                )
        progress.close()
        if self.eval_dataset is not None and (not result.eval_history or result.eval_history[-1]["step"] != self.step):
            evaluation = {"step": self.step, "eval": self.evaluate()}
            result.eval_history.append(evaluation)
            self.log(evaluation)
        if result.last_checkpoint is None or not result.last_checkpoint.name.endswith(f"{self.step:07d}"):
            result.last_checkpoint = self.save_checkpoint()
        result.step = self.step
        if self.tensorboard is not None:
            self.tensorboard.close()
        return result


def train(config: TrainingConfig, resume: bool = False) -> TrainResult:
    """Run one training job (see ``Trainer``)."""
    return Trainer(config, resume=resume).train()
