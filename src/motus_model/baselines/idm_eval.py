"""Held-out comparison of inverse-dynamics models: Motus's IDM mode, the ConvIDM baseline and
"hold the current state" (``motus idm-eval``).

Samples: N (episode, condition) keys drawn from the held-out LeRobot dataset by the training sampler
(``MixtureSampler.keys_for_step(0, N)`` with the given seed), rows from ``sampling.sample_indices``
with the models' temporal layout, exactly as in training. For each sample, every method gets the
same inputs, those of ``MotusRequest(mode="idm")``: the three camera views at the condition row and
at the F future video rows (``LeRobotDataset.frames``, decoded at most as wide as the composite, as
training decodes them), the raw joint state at the condition row, and the episode's task. The target
is the recorded action chunk (``action`` column at the action rows), in raw units.

Metrics per method (means over samples, chunk steps and the named dimensions):
    mae_arm_rad       mean absolute error over the 12 arm joints (ALOHA order: 0-5 left, 7-12 right), radians
    mae_gripper       mean absolute error over the 2 grippers (6, 13), in the dataset's gripper units
    nmse              mean squared error of normalised actions, all 14 dims (normaliser: the ConvIDM's
                      stats.json, else Motus's, else the held-out dataset's own; the report says which)
    *_sem             standard error of the per-sample means (how far apart two methods must be to differ)
    mae_arm_rad_by_step   arm MAE per chunk position (errors grow along the chunk)
    ms_per_sample     inference time
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ARM_JOINTS = np.array([0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12])
GRIPPERS = np.array([6, 13])
METHODS = ("motus_idm", "conv_idm", "hold_state")


@dataclass
class IDMEvalConfig:
    dataset: str
    motus: str | None = None
    conv_idm: str | None = None
    samples: int = 200
    seed: int = 0
    steps: int | None = None  # Motus Euler steps (None: the checkpoint's inference_steps)
    device: str = "cpu"
    out: str | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {self.samples}")
        if not self.motus and not self.conv_idm:
            raise ValueError(
                "give --motus and/or --conv-idm (the hold-state baseline alone needs a model's temporal layout)"
            )


def _check_folder(path: str, what: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {folder} does not exist")
    return folder


def check_same_layout(
    conv: dict[str, int], motus: dict[str, int], conv_preset: str, conv_path: str, motus_path: str
) -> None:
    """Raise if the ConvIDM and the Motus checkpoint do not see the same samples."""
    differing = {key: (conv[key], motus[key]) for key in conv if conv[key] != motus.get(key)}
    if differing:
        details = ", ".join(f"{key}: conv IDM {a} vs Motus {b}" for key, (a, b) in differing.items())
        raise ValueError(
            f"preset mismatch: the ConvIDM at {conv_path} (preset {conv_preset}) and the Motus checkpoint at "
            f"{motus_path} have different composite size / temporal layout ({details}); train the ConvIDM with "
            "the Motus checkpoint's preset (motus train-conv-idm --preset ...)"
        )


def _method_metrics(predictions: np.ndarray, targets: np.ndarray, normalizer: Any, seconds: float) -> dict[str, Any]:
    """predictions, targets: raw [N, chunk, A]."""
    errors = np.abs(predictions - targets)
    arm = errors[..., ARM_JOINTS].mean(axis=(1, 2))  # per sample
    gripper = errors[..., GRIPPERS].mean(axis=(1, 2))
    normalised = np.asarray(normalizer.normalize("action", predictions), dtype=np.float64)
    normalised_targets = np.asarray(normalizer.normalize("action", targets), dtype=np.float64)
    squared = ((normalised - normalised_targets) ** 2).mean(axis=(1, 2))
    count = len(predictions)

    def sem(values: np.ndarray) -> float:
        return float(values.std(ddof=1) / np.sqrt(count)) if count > 1 else float("nan")

    return {
        "mae_arm_rad": float(arm.mean()),
        "mae_arm_rad_sem": sem(arm),
        "mae_gripper": float(gripper.mean()),
        "mae_gripper_sem": sem(gripper),
        "nmse": float(squared.mean()),
        "nmse_sem": sem(squared),
        "mae_arm_rad_by_step": [round(float(v), 6) for v in errors[..., ARM_JOINTS].mean(axis=(0, 2))],
        "ms_per_sample": round(1000.0 * seconds / count, 2),
    }


def evaluate_idm(config: IDMEvalConfig) -> dict[str, Any]:
    """Run the comparison (see the module docstring); writes ``config.out`` when given; returns the report."""
    import torch
    from tqdm import tqdm

    from motus_model.baselines.conv_idm import ConvIDMPredictor, motus_signature
    from motus_model.data.lerobot import ACTION_KEY, STATE_KEY, LeRobotDataset
    from motus_model.data.mixture import MixtureConfig, MixtureSampler
    from motus_model.data.sampling import sample_indices
    from motus_model.data.torch_dataset import ALOHA_CAMERA_MAP
    from motus_model.preprocessing import Normalizer

    started = time.perf_counter()
    root = _check_folder(config.dataset, "--dataset")
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"--dataset {root} is not a LeRobot dataset (no meta/info.json)")

    conv = None
    if config.conv_idm:
        conv = ConvIDMPredictor.from_pretrained(_check_folder(config.conv_idm, "--conv-idm"), device=config.device)
    engine = None
    if config.motus:
        from motus_model.checkpoint import CONFIG_NAME
        from motus_model.config import MotusConfig
        from motus_model.engine import MotusEngine

        motus_dir = _check_folder(config.motus, "--motus")
        if not (motus_dir / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"--motus {motus_dir} is not a Motus checkpoint (no {CONFIG_NAME})")
        motus_config = MotusConfig.load(motus_dir / CONFIG_NAME)
        if conv is not None:  # before loading the (large) engine
            check_same_layout(
                conv.config.layout_signature(),
                motus_signature(motus_config),
                conv.config.preset,
                config.conv_idm,
                config.motus,
            )
        if not motus_config.uses_state:
            raise ValueError(
                f"--motus {motus_dir} is a pretrain-mode (latent action) checkpoint; IDM needs real actions"
            )
        engine = MotusEngine.from_pretrained(motus_dir, device=config.device)

    layout = conv.config.layout_signature() if conv is not None else motus_signature(engine.config)
    chunk, rate = layout["action_chunk"], layout["downsample_rate"]
    ratio, action_dim = layout["video_action_ratio"], layout["action_dim"]
    if action_dim != 14:
        raise ValueError(
            f"the metrics assume ALOHA's 14-d actions (12 arm joints, 2 grippers); the model has {action_dim}"
        )

    dataset = LeRobotDataset(root, max_frame_width=layout["image_width"], video_cache_size=16)
    missing = [key for key in ALOHA_CAMERA_MAP.values() if key not in dataset.camera_keys]
    if missing:
        raise ValueError(f"--dataset {root} lacks the cameras {missing}; it has {list(dataset.camera_keys)}")
    for key in (STATE_KEY, ACTION_KEY):
        if key not in dataset.vector_keys:
            raise ValueError(f"--dataset {root} has no {key!r} column")

    # normaliser for the nMSE: the training data's (ConvIDM / Motus stats.json), else the held-out dataset's
    normalizer, normalised_with = None, ""
    if conv is not None and conv.normalizer.mode != "identity":
        normalizer, normalised_with = conv.normalizer, f"ConvIDM stats.json ({config.conv_idm})"
    elif engine is not None and engine.normalizer.mode != "identity":
        normalizer, normalised_with = engine.normalizer, f"Motus stats.json ({config.motus})"
    else:
        normalizer = Normalizer({"action": dataset.stats[ACTION_KEY]}, mode="mean_std")
        normalised_with = f"held-out dataset meta/stats.json ({root}), mean_std"

    lengths = [dataset.episode_length(e) for e in range(dataset.num_episodes)]
    sampler = MixtureSampler(MixtureConfig.single(root), [lengths], chunk, rate, seed=config.seed)
    keys = sampler.keys_for_step(0, config.samples)

    steps = config.steps
    if engine is not None and steps is None:
        steps = int(engine.config.schedule.inference_steps)
    seconds = {name: 0.0 for name in METHODS}
    vector_cache: dict[int, dict[str, np.ndarray]] = {}

    def views(episode: int, row: int) -> dict[str, np.ndarray]:
        return {role: dataset.frames(episode, camera)[row] for role, camera in ALOHA_CAMERA_MAP.items()}

    # samples sorted by episode so each episode's video is decoded once (the order does not change the results)
    order = sorted(range(len(keys)), key=lambda i: (keys[i].episode, i))
    results: dict[int, dict[str, np.ndarray]] = {}
    for index in tqdm(order, desc="idm eval", disable=not config.show_progress):
        key = keys[index]
        if key.episode not in vector_cache:
            vector_cache = {key.episode: dataset.vectors(key.episode)}
        vectors = vector_cache[key.episode]
        rows = sample_indices(key.condition, lengths[key.episode], chunk, rate, ratio)
        state = vectors[STATE_KEY][rows.condition]
        images = views(key.episode, rows.condition)
        future = [views(key.episode, int(row)) for row in rows.video_rows]
        entry = {"target": vectors[ACTION_KEY][rows.action_rows]}
        if engine is not None:
            from motus_model.engine import MotusRequest

            tick = time.perf_counter()
            result = engine.infer(
                MotusRequest(
                    mode="idm",
                    images=images,
                    future_frames=future,
                    state=state,
                    instruction=dataset.task(key.episode),
                    steps=steps,
                    seed=config.seed * 1_000_003 + index,
                )
            )
            seconds["motus_idm"] += time.perf_counter() - tick
            entry["motus_idm"] = np.asarray(result.actions, dtype=np.float32)
        if conv is not None:
            tick = time.perf_counter()
            entry["conv_idm"] = conv.predict(images, future, state)
            seconds["conv_idm"] += time.perf_counter() - tick
        tick = time.perf_counter()
        entry["hold_state"] = np.tile(state[None], (chunk, 1)).astype(np.float32)
        seconds["hold_state"] += time.perf_counter() - tick
        results[index] = entry
    if engine is not None:
        engine.close()

    targets = np.stack([results[i]["target"] for i in range(len(keys))]).astype(np.float64)
    methods: dict[str, Any] = {}
    for name in METHODS:
        if name not in results[0]:
            continue
        predicted = np.stack([results[i][name] for i in range(len(keys))]).astype(np.float64)
        if predicted.shape != targets.shape:
            raise ValueError(f"{name} predicted {predicted.shape[1:]} chunks, the targets are {targets.shape[1:]}")
        methods[name] = _method_metrics(predicted, targets, normalizer, seconds[name])
    report = {
        "dataset": str(root),
        "samples": len(keys),
        "episodes_sampled": len({key.episode for key in keys}),
        "seed": config.seed,
        "motus": config.motus,
        "conv_idm": config.conv_idm,
        "conv_idm_preset": conv.config.preset if conv is not None else None,
        "motus_steps": steps if engine is not None else None,
        "layout": layout,
        "normalised_with": normalised_with,
        "stats_agree": (
            bool(conv.normalizer.to_dict() == engine.normalizer.to_dict())
            if conv is not None and engine is not None
            else None
        ),
        "device": str(torch.device(config.device)),
        "methods": methods,
        "wall_clock_s": round(time.perf_counter() - started, 1),
    }
    if config.out:
        out = Path(config.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report
