"""Turn dataset samples into the model's training batch (the keys of ``flow_matching_loss``).

Frozen, noise-independent work happens here, under ``torch.no_grad``:
- composite frames -> video latents through the codec (pixel patches or the Wan VAE);
- instructions -> umT5 text context (cached per instruction by ``TextConditioner``);
- (instruction, conditioning composite) -> Qwen3-VL last hidden state. The VLM is frozen in every
  stage (as in the thu-ml/Motus release), so it never sees a gradient.

For the small CPU presets, whose text/VLM widths no public encoder has, ``build_encoders`` makes
tiny real encoders (same classes) from a seed and saves them beside the checkpoint
(``text_encoder/``, ``vlm/``), so serving loads exactly what training used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from motus_model.conditioning import (
    Qwen3VLFeatureExtractor,
    TextConditioner,
    UMT5TextEncoder,
    build_tiny_qwen3_vl,
    build_tiny_umt5,
)
from motus_model.config import MotusConfig
from motus_model.preprocessing import tensor_to_image
from motus_model.video_latents import VideoCodec, build_codec

logger = logging.getLogger(__name__)

TEXT_ENCODER_DIR = "text_encoder"
VLM_DIR = "vlm"
VAE_DIR = "vae"
# Published encoder widths: umT5-XXL (4096) and Qwen3-VL-2B (2048); these are never built tiny.
_PUBLISHED_TEXT_DIM, _PUBLISHED_VLM_DIM = 4096, 2048


@dataclass
class ConditioningEncoders:
    """Frozen feature sources for training: codec, text conditioner, VLM extractor."""

    codec: VideoCodec
    text: TextConditioner
    vlm: Qwen3VLFeatureExtractor
    text_encoder_dir: Path
    vlm_dir: Path
    vae_dir: Path | None = None  # the Wan VAE folder, when latents.kind is "wan_vae"
    built_dirs: tuple[Path, ...] = ()  # folders built for this run (tiny encoders): copied, not linked

    @torch.no_grad()
    def encode_batch(self, samples: dict[str, Any], device: torch.device | str = "cpu") -> dict[str, Any]:
        """Collated samples (``data.collate_samples``) -> flow_matching_loss batch.

        Returns keys video_latents [B, C, F, h, w], actions [B, chunk, A], state [B, S],
        text_context/text_mask, vlm_hidden/vlm_mask, has_actions [B], and dataset_index [B] when the samples carry it.
        """
        frames = torch.cat([samples["condition_image"][:, None], samples["future_images"]], dim=1)  # [B, 1+F, 3, H, W]
        video_latents = self.codec.encode(frames.to(device))
        text_context, text_mask = self.text.encode(list(samples["instruction"]))
        composites = [tensor_to_image(image) for image in samples["condition_image"]]
        vlm_hidden, vlm_mask = self.vlm.extract(list(samples["instruction"]), composites)
        batch = {
            "video_latents": video_latents.float(),
            "actions": samples["actions"].to(device),
            "state": samples["state"].to(device),
            "text_context": text_context.to(device),
            "text_mask": text_mask.to(device),
            "vlm_hidden": vlm_hidden.to(device).float(),
            "vlm_mask": vlm_mask.to(device),
            "has_actions": samples["has_actions"].to(device),
        }
        if "dataset_index" in samples:  # training samples (MotusTrainingDataset); absent from hand-built ones
            batch["dataset_index"] = samples["dataset_index"].to(device)
        return batch

    def save(self, directory: str | Path) -> None:
        """Put the encoder folders into a checkpoint (``text_encoder/``, ``vlm/``, ``vae/``), where
        ``MotusEngine.from_pretrained`` looks for them: tiny encoders built for this run are copied;
        given folders (umT5-XXL is ~11 GB) are linked with an absolute symbolic link."""
        import shutil

        directory = Path(directory)
        folders = [(self.text_encoder_dir, TEXT_ENCODER_DIR), (self.vlm_dir, VLM_DIR)]
        if self.vae_dir is not None:
            folders.append((self.vae_dir, VAE_DIR))
        for source, name in folders:
            target = directory / name
            if target.is_symlink():
                target.unlink()
            elif target.exists():
                if source.resolve() == target.resolve():
                    continue
                shutil.rmtree(target)
            if source in self.built_dirs:
                shutil.copytree(source, target)
            else:
                target.symlink_to(source.resolve(), target_is_directory=True)


def build_encoders(
    config: MotusConfig,
    work_dir: str | Path,
    text_encoder_path: str = "",
    vlm_path: str = "",
    video_vae_path: str = "",
    device: torch.device | str = "cpu",
    truncate_instructions: bool = False,
    seed: int = 0,
) -> ConditioningEncoders:
    """Load (or, for the small presets only, build and save under ``work_dir``) the frozen encoders."""
    work_dir = Path(work_dir)
    video, understanding = config.video, config.understanding
    built: list[Path] = []
    if not text_encoder_path:
        if video.text_dim == _PUBLISHED_TEXT_DIM:
            raise ValueError("the published shape needs text_encoder_path (a local umT5-XXL folder)")
        text_dir = work_dir / TEXT_ENCODER_DIR
        built.append(text_dir)
        if not (text_dir / "config.json").is_file():
            logger.warning(
                "no text encoder given: building a tiny random umT5 (%d wide) in %s", video.text_dim, text_dir
            )
            build_tiny_umt5(video.text_dim, directory=text_dir, seed=seed)
    else:
        text_dir = Path(text_encoder_path)
    if not vlm_path:
        if understanding.vlm_dim == _PUBLISHED_VLM_DIM:
            raise ValueError("the published shape needs vlm_path (a local Qwen3-VL-2B-Instruct folder)")
        vlm_dir = work_dir / VLM_DIR
        built.append(vlm_dir)
        if not (vlm_dir / "config.json").is_file():
            logger.warning(
                "no VLM given: building a tiny random Qwen3-VL (%d wide) in %s", understanding.vlm_dim, vlm_dir
            )
            build_tiny_qwen3_vl(understanding.vlm_dim, directory=vlm_dir, seed=seed)
    else:
        vlm_dir = Path(vlm_path)
    text_encoder = UMT5TextEncoder.from_pretrained(
        text_dir, video.text_len, device=device, truncate=truncate_instructions
    )
    vlm = Qwen3VLFeatureExtractor.from_pretrained(vlm_dir, device=device)
    for module in (text_encoder.model, vlm.model):
        module.requires_grad_(False)  # frozen in every stage
    codec = build_codec(config, path=video_vae_path or None, device=device)
    return ConditioningEncoders(
        codec=codec,
        text=TextConditioner(text_encoder, video.text_len, video.text_dim),
        vlm=vlm,
        text_encoder_dir=text_dir,
        vlm_dir=vlm_dir,
        vae_dir=Path(video_vae_path) if video_vae_path else None,
        built_dirs=tuple(built),
    )
