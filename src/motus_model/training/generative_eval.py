"""The generative modes against trivial baselines (``motus eval-generative``).

On held-out samples: the world model with the true actions, another sample's actions and holding still; video
generation; repeating the last frame; per horizon, over the whole frame and over the pixels that move; for a
sample (the checkpoint's Euler steps) and for the model's conditional mean (one step from noise). The IDM is
measured through ``baselines.idm_eval`` on the same samples. Apart from ``training.evaluation`` (the trainer's
per-mode losses) because it reaches the baselines, which themselves train through the trainer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# A pixel "moves" at horizon j when its true value at j differs from the conditioning frame's by more than
# this in some channel ([0, 1] units, ~10/255): the arm, the gripper and the cube, not the static scene.
MOVING_THRESHOLD = 0.04


@dataclass
class GenerativeEvalConfig:
    """``motus eval-generative``: held-out samples drawn as ``motus idm-eval`` draws them."""

    checkpoint: str
    dataset: str
    samples: int = 8
    seed: int = 0
    steps: int | None = None  # Euler steps (None: the checkpoint's inference_steps)
    conv_idm: str | None = None  # ConvIDM folder for the IDM comparison (motus train-conv-idm)
    device: str = "cpu"
    out: str | None = None  # JSON report
    strip: str | None = None  # PNG strip of live vs imagined frames for the first sample
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise ValueError(
                f"--samples must be >= 2 (the action gap borrows another sample's actions), got {self.samples}"
            )


def frame_errors(predicted: np.ndarray, truth: np.ndarray, condition: np.ndarray) -> dict[str, np.ndarray]:
    """Per-horizon squared errors of uint8 frames [F, H, W, 3] against the truth, in [0, 1] units.

    Returns {"full": [F] MSE over the frame, "moving_sum": [F] squared error summed over the moving pixels,
    "moving_count": [F] moving pixel count} (moving: ``MOVING_THRESHOLD``, from the truth vs the
    conditioning frame, so every method is scored on the same pixels)."""
    pred = predicted.astype(np.float64) / 255.0
    true = truth.astype(np.float64) / 255.0
    cond = condition.astype(np.float64)[None] / 255.0
    squared = ((pred - true) ** 2).mean(axis=-1)  # [F, H, W]
    moving = (np.abs(true - cond) > MOVING_THRESHOLD).any(axis=-1)  # [F, H, W]
    return {
        "full": squared.mean(axis=(1, 2)),
        "moving_sum": (squared * moving).sum(axis=(1, 2)),
        "moving_count": moving.sum(axis=(1, 2)).astype(np.float64),
    }


def summarise_frame_errors(errors: Mapping[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]) -> dict[str, Any]:
    """Per method, ``frame_errors``' (full, moving_sum, moving_count) of each sample -> MSE per horizon and over
    all horizons, over the whole frame (mean of the samples) and the moving pixels (pooled over the samples)."""
    summary: dict[str, Any] = {}
    for name, per_sample in errors.items():
        full = np.stack([e[0] for e in per_sample])  # [N, F]
        moving_sum = np.stack([e[1] for e in per_sample]).sum(axis=0)
        moving_count = np.stack([e[2] for e in per_sample]).sum(axis=0)
        summary[name] = {
            "mse_full_by_horizon": [round(float(v), 6) for v in full.mean(axis=0)],
            "mse_moving_by_horizon": [round(float(v), 6) for v in moving_sum / np.maximum(moving_count, 1)],
            "mse_full": round(float(full.mean()), 6),
            "mse_moving": round(float(moving_sum.sum() / max(moving_count.sum(), 1)), 6),
        }
    return summary


def paired_action_gap(
    errors: Mapping[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    reference: str = "world_model_true_actions",
    resamples: int = 9999,
) -> dict[str, Any]:
    """How much worse each method predicts the moving pixels than ``reference``, paired sample by sample.

    Per method: ``gap`` (its pooled moving-pixel MSE over the reference's, minus 1), a paired bootstrap 95%
    interval of that gap over the samples (``gap_ci95``: the samples are resampled, each keeping its error under
    both methods), and a sign test: ``samples_reference_better`` of ``samples_compared`` (samples with moving
    pixels where the two differ) and its one-sided ``sign_test_p``. A gap whose interval excludes 0 and whose
    sign test is small is a difference these samples show, not one of their noise."""
    from scipy.stats import binomtest, bootstrap

    def moving_sums(name: str) -> np.ndarray:  # [N]: each sample's squared error over its moving pixels
        return np.array([float(e[1].sum()) for e in errors[name]])

    ref = moving_sums(reference)
    ref_total = ref.sum()
    # the moving pixels come from the truth, so every method shares the reference's per-sample counts
    with_motion = np.array([e[2].sum() > 0 for e in errors[reference]])
    gaps: dict[str, Any] = {}
    for name in errors:
        if name == reference:
            continue
        other = moving_sums(name)
        differing = with_motion & (other != ref)
        better = int((ref[differing] < other[differing]).sum())
        compared = int(differing.sum())
        gap = float(other.sum() / ref_total - 1.0) if ref_total > 0 else float("nan")
        entry: dict[str, Any] = {
            "gap": round(gap, 4),
            "samples_reference_better": better,
            "samples_compared": compared,
            "sign_test_p": round(float(binomtest(better, compared, 0.5, alternative="greater").pvalue), 6)
            if compared
            else None,
        }
        if int(with_motion.sum()) >= 2 and ref_total > 0:
            interval = bootstrap(
                (ref[with_motion], other[with_motion]),
                lambda r, o, axis=-1: o.sum(axis=axis) / r.sum(axis=axis) - 1.0,
                paired=True,
                vectorized=True,
                n_resamples=resamples,
                method="percentile",
                rng=np.random.default_rng(0),
            ).confidence_interval
            entry["gap_ci95"] = [round(float(interval.low), 4), round(float(interval.high), 4)]
        gaps[name] = entry
    return gaps


def evaluate_generative(config: GenerativeEvalConfig) -> dict[str, Any]:
    """World model (true / another sample's / hold-still actions), video generation and repeat-last, per horizon,
    over the whole frame and the moving pixels; the IDM through ``baselines.idm_eval.evaluate_idm`` (the same
    samples: same dataset, seed and count). Writes ``config.out`` and ``config.strip`` when given."""
    import time

    from tqdm import tqdm

    from motus_model.baselines.idm_eval import IDMEvalConfig, evaluate_idm
    from motus_model.data.lerobot import ACTION_KEY, STATE_KEY, LeRobotDataset
    from motus_model.data.mixture import MixtureConfig, MixtureSampler
    from motus_model.data.sampling import sample_indices
    from motus_model.data.torch_dataset import camera_map_for
    from motus_model.engine import MotusEngine, MotusRequest
    from motus_model.preprocessing import CompositeLayout, compose_views

    started = time.perf_counter()
    root = Path(config.dataset)
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"--dataset {root} is not a LeRobot dataset (no meta/info.json)")
    if not (Path(config.checkpoint) / "config.json").is_file():
        raise FileNotFoundError(f"--checkpoint {config.checkpoint} is not a Motus checkpoint (no config.json)")
    engine = MotusEngine.from_pretrained(config.checkpoint, device=config.device)
    model_config = engine.config
    temporal = model_config.temporal
    chunk, rate, ratio = temporal.action_chunk, temporal.downsample_rate, temporal.video_action_ratio
    steps = config.steps or int(model_config.schedule.inference_steps)
    layout = CompositeLayout.from_config(model_config)
    dataset = LeRobotDataset(root, max_frame_width=layout.width, video_cache_size=16)
    lengths = [dataset.episode_length(e) for e in range(dataset.num_episodes)]
    keys = MixtureSampler(MixtureConfig.single(root), [lengths], chunk, rate, seed=config.seed).keys_for_step(
        0, config.samples
    )

    camera_map = camera_map_for(dataset, model_config.cameras.roles)  # the checkpoint's cameras, as training maps them

    def views(episode: int, row: int) -> dict[str, np.ndarray]:
        return {role: dataset.frames(episode, camera)[row] for role, camera in camera_map.items()}

    samples = []
    for key in keys:
        vectors = dataset.vectors(key.episode)
        rows = sample_indices(key.condition, lengths[key.episode], chunk, rate, ratio)
        samples.append(
            {
                "key": key,
                "images": views(key.episode, rows.condition),
                "future": [views(key.episode, int(row)) for row in rows.video_rows],
                "state": vectors[STATE_KEY][rows.condition],
                "actions": vectors[ACTION_KEY][rows.action_rows],
                "task": dataset.task(key.episode),
            }
        )
    methods = ("world_model_true_actions", "world_model_other_actions", "world_model_hold", "video_generation")
    baselines = ("repeat_last",)
    # per method: one (full [F], moving_sum [F], moving_count [F]) per sample; "expected" holds the model's
    # conditional mean (one Euler step from pure noise: x0 = E[x0 | conditioning] for a rectified-flow model),
    # the sample-free score: a single sample's MSE also charges the sample's spread, which favours blur
    per_horizon = {name: [] for name in (*methods, *baselines)}
    expected_per_horizon = {name: [] for name in (*methods, *baselines)}
    strip_rows: dict[str, np.ndarray] = {}
    for index, sample in enumerate(tqdm(samples, desc="generative eval", disable=not config.show_progress)):
        condition = compose_views(sample["images"], layout)
        truth = np.stack([compose_views(future, layout) for future in sample["future"]])
        # another sample's actions, preferably from another episode (the action gap)
        others = [j for j in range(len(samples)) if samples[j]["key"].episode != sample["key"].episode] or [
            j for j in range(len(samples)) if j != index
        ]
        other_actions = samples[others[index % len(others)]]["actions"]
        hold = np.tile(sample["state"][None], (chunk, 1))
        requests = {
            "world_model_true_actions": dict(mode="world_model", actions=sample["actions"]),
            "world_model_other_actions": dict(mode="world_model", actions=other_actions),
            "world_model_hold": dict(mode="world_model", actions=hold),
            "video_generation": dict(mode="video_generation"),
        }
        predictions, expected = {}, {}
        for name, fields in requests.items():
            for denoising_steps, into in ((steps, predictions), (1, expected)):
                result = engine.infer(
                    MotusRequest(
                        images=sample["images"],
                        state=sample["state"],
                        instruction=sample["task"],
                        steps=denoising_steps,
                        seed=config.seed * 1_000_003 + index,  # the same noise for every action input
                        **fields,
                    )
                )
                into[name] = result.frames
        predictions["repeat_last"] = expected["repeat_last"] = np.repeat(condition[None], len(truth), axis=0)
        for report, frames_by_name in ((per_horizon, predictions), (expected_per_horizon, expected)):
            for name, frames in frames_by_name.items():
                errors = frame_errors(frames, truth, condition)
                report[name].append((errors["full"], errors["moving_sum"], errors["moving_count"]))
        if index == 0 and config.strip:
            joint = engine.infer(
                MotusRequest(
                    mode="joint",
                    images=sample["images"],
                    state=sample["state"],
                    instruction=sample["task"],
                    steps=steps,
                    seed=config.seed * 1_000_003,
                )
            )
            strip_rows = {
                "live": truth,
                "world model (true actions)": predictions["world_model_true_actions"],
                # the sample-free prediction beside the sample: blurred where the model is unsure, not blocky
                "world model, mean (true)": expected["world_model_true_actions"],
                "world model (hold still)": predictions["world_model_hold"],
                "video generation": predictions["video_generation"],
                "joint": joint.frames,
                "repeat last": predictions["repeat_last"],
            }
            strip_condition = condition
    engine.close()

    frames_report = summarise_frame_errors(per_horizon)
    expected_report = summarise_frame_errors(expected_per_horizon)
    horizon_steps = [(j + 1) * ratio * rate for j in range(temporal.num_video_frames)]
    idm = evaluate_idm(
        IDMEvalConfig(
            dataset=str(root),
            motus=config.checkpoint,
            conv_idm=config.conv_idm,
            samples=config.samples,
            seed=config.seed,
            steps=steps,
            device=config.device,
            show_progress=config.show_progress,
        )
    )
    report = {
        "checkpoint": config.checkpoint,
        "dataset": str(root),
        "samples": len(samples),
        "episodes_sampled": len({s["key"].episode for s in samples}),
        "seed": config.seed,
        "steps": steps,
        "latents": model_config.latents.kind,
        "video_token_dim": model_config.video_token_dim,
        "video_expert_dim": model_config.video.dim,
        "horizon_control_steps": horizon_steps,
        "moving_threshold": MOVING_THRESHOLD,
        "frames": frames_report,
        "frames_expected": expected_report,
        # the action gap, paired by sample: the true actions against every other input, sampled and expected
        "action_gap": paired_action_gap(per_horizon),
        "action_gap_expected": paired_action_gap(expected_per_horizon),
        "idm": {name: {k: v for k, v in m.items() if not k.endswith("_by_step")} for name, m in idm["methods"].items()},
        "wall_clock_s": round(time.perf_counter() - started, 1),
    }
    if config.strip and strip_rows:
        write_strip(config.strip, strip_condition, strip_rows)
        report["strip"] = config.strip
    if config.out:
        out = Path(config.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")  # an interrupted write leaves no half report
        partial.write_text(json.dumps(report, indent=2) + "\n")
        partial.replace(out)
    return report


def write_strip(path: str | Path, condition: np.ndarray, rows: Mapping[str, np.ndarray], scale: int = 2) -> Path:
    """A PNG: one row per entry (label, the conditioning frame, then its future frames), each frame enlarged
    ``scale`` times (nearest neighbour: the composites are 96x80); written via a temporary file."""
    from PIL import Image, ImageDraw

    label_width, gap = 170, 4
    height, width = condition.shape[0] * scale, condition.shape[1] * scale
    columns = 1 + max(len(frames) for frames in rows.values())
    canvas = Image.new("RGB", (label_width + columns * (width + gap), len(rows) * (height + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (label, frames) in enumerate(rows.items()):
        top = row * (height + gap)
        draw.text((4, top + height // 2 - 6), label, fill="black")
        for column, frame in enumerate([condition, *frames]):
            image = Image.fromarray(np.asarray(frame, dtype=np.uint8)).resize((width, height), Image.NEAREST)
            canvas.paste(image, (label_width + column * (width + gap), top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    canvas.save(partial, format="PNG")
    partial.replace(path)
    return path


def generative_markdown(report: Mapping[str, Any]) -> str:
    """The report's frame errors (sampled, then expected) and IDM as markdown tables."""
    horizons = report["horizon_control_steps"]
    lines: list[str] = []
    tables = (
        (f"sampled ({report['steps']} Euler steps)", report["frames"]),
        ("expected (one step from noise: the model's conditional mean)", report.get("frames_expected", {})),
    )
    for title, frames in tables:
        if not frames:
            continue
        lines += [
            f"| {title} | "
            + " | ".join(f"full @{h}" for h in horizons)
            + " | "
            + " | ".join(f"moving @{h}" for h in horizons)
            + " |",
            "|---|" + "---|" * (2 * len(horizons)),
        ]
        for name, values in frames.items():
            cells = [f"{v:.4f}" for v in values["mse_full_by_horizon"]] + [
                f"{v:.4f}" for v in values["mse_moving_by_horizon"]
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    for title, key in (("sampled", "action_gap"), ("expected", "action_gap_expected")):
        if not report.get(key):
            continue
        lines += [
            f"| against the true actions ({title}, moving pixels) | gap [95% CI] | true actions better | sign test p |",
            "|---|---|---|---|",
        ]
        for name, gap in report[key].items():
            interval = gap.get("gap_ci95")
            bounds = f" [{interval[0]:+.1%}, {interval[1]:+.1%}]" if interval else ""
            p = gap["sign_test_p"]
            p_text = "-" if p is None else "< 1e-6" if p == 0 else f"{p:.2g}"  # the JSON rounds to 6 decimals
            lines.append(
                f"| {name} | {gap['gap']:+.1%}{bounds} | {gap['samples_reference_better']} of "
                f"{gap['samples_compared']} | {p_text} |"
            )
        lines.append("")
    lines += ["| IDM method | arm MAE (rad) | gripper MAE | nMSE |", "|---|---|---|---|"]
    for name, values in report["idm"].items():
        lines.append(
            f"| {name} | {values['mae_arm_rad']:.4f} ± {values['mae_arm_rad_sem']:.4f} | "
            f"{values['mae_gripper']:.4f} | {values['nmse']:.4f} |"
        )
    return "\n".join(lines)
