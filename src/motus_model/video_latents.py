"""The video codec behind one small interface: pixels <-> the latents the video expert sees.

Two implementations:
- `WanVAECodec`: the Wan 2.2 VAE through diffusers (`AutoencoderKLWan`: 48 latent
  channels, internal patchify 2 + 8x downsampling = 16x spatial, 4x temporal with a
  causal first frame), with the per-channel latent mean/std normalisation the
  reference applies (Wan2.2's 48 published per-channel values).
- `PixelPatchCodec`: for small CPU models with no pretrained VAE: space-to-depth
  (and optional temporal grouping with a causal first frame) times a fixed scale.
  It has no weights and is exactly invertible.
- `PatchPCACodec`: space-to-depth followed by a linear projection onto the top
  principal components of the patches of real frames (fitted here, on the
  simulator's demonstrations; saved as a checkpoint's ``vae/`` folder). It exists so a
  DiT token (channels x 2 x 2) is no wider than the video expert can write: 8x8 pixel
  patches give 768 values per token for a 256-wide expert, 64 components give 256.

Both take frames [B, T, 3, H, W] in [-1, 1] and give latents [B, C, t, h, w]
with t = 1 + (T - 1) / temporal_compression (T = 1 + k * temporal_compression).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

logger = logging.getLogger(__name__)


@runtime_checkable
class VideoCodec(Protocol):
    """Encodes frames to model latents and back."""

    latent_channels: int
    spatial_compression: int
    temporal_compression: int

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] in [-1, 1] -> latents [B, C, t, h, w] (normalised)."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, C, t, h, w] -> frames [B, T, 3, H, W] in [-1, 1]."""
        ...

    def latent_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(t, h, w) of the latents for `num_frames` pixel frames of height x width."""
        ...


def causal_latent_frames(num_frames: int, temporal_compression: int) -> int:
    """Latent frames for a causal codec: the first frame alone, then one per `temporal_compression`.

    Raises:
        ValueError: num_frames is not 1 + k * temporal_compression.
    """
    if num_frames < 1 or (num_frames - 1) % temporal_compression != 0:
        raise ValueError(f"expected 1 + k*{temporal_compression} frames (causal first frame), got {num_frames}")
    return 1 + (num_frames - 1) // temporal_compression


def _check_frames(frames: torch.Tensor, spatial_compression: int, temporal_compression: int) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 5 or frames.shape[2] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames: expected a tensor [B, T, 3, H, W], got {shape}")
    _, num_frames, _, height, width = frames.shape
    causal_latent_frames(num_frames, temporal_compression)
    if height % spatial_compression or width % spatial_compression:
        raise ValueError(f"frames: height and width must be multiples of {spatial_compression}, got {height}x{width}")


def _check_latents(latents: torch.Tensor, channels: int) -> None:
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[1] != channels:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"latents: expected a tensor [B, {channels}, t, h, w], got {shape}")


class PixelPatchCodec:
    """Space-to-depth video "codec" with no weights, exactly invertible.

    A latent frame stacks `temporal_patch` consecutive frames of `patch_size` x
    `patch_size` pixel patches: C = 3 * temporal_patch * patch_size**2. The first
    latent frame holds frame 0 alone (repeated `temporal_patch` times so every
    latent frame has the same channels), mirroring the Wan VAE's causal first
    frame; decoding averages those copies. Latents are pixels times `scale`.
    """

    def __init__(self, patch_size: int = 4, temporal_patch: int = 1, scale: float = 1.0) -> None:
        if patch_size < 1 or temporal_patch < 1 or scale <= 0:
            raise ValueError(
                f"expected patch_size >= 1, temporal_patch >= 1, scale > 0; got {patch_size}, {temporal_patch}, {scale}"
            )
        self.patch_size = int(patch_size)
        self.temporal_patch = int(temporal_patch)
        self.scale = float(scale)
        self.latent_channels = 3 * self.temporal_patch * self.patch_size**2
        self.spatial_compression = self.patch_size
        self.temporal_compression = self.temporal_patch

    def latent_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"height and width must be multiples of {self.patch_size}, got {height}x{width}")
        return (
            causal_latent_frames(num_frames, self.temporal_patch),
            height // self.patch_size,
            width // self.patch_size,
        )

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] -> latents [B, 3*tp*p*p, 1 + (T-1)/tp, H/p, W/p]."""
        _check_frames(frames, self.patch_size, self.temporal_patch)
        batch, _, _, height, width = frames.shape
        p, tp = self.patch_size, self.temporal_patch
        # Causal first frame: frame 0 forms its own group (repeated to tp copies).
        first = frames[:, :1].expand(batch, tp, 3, height, width)
        grouped = torch.cat([first, frames[:, 1:]], dim=1)  # [B, t*tp, 3, H, W]
        num_latent_frames = grouped.shape[1] // tp
        x = grouped.reshape(batch, num_latent_frames, tp, 3, height // p, p, width // p, p)
        # -> [B, tp, 3, p, p, t, h, w]: channel order (tp, rgb, py, px).
        x = x.permute(0, 2, 3, 5, 7, 1, 4, 6)
        latents = x.reshape(batch, self.latent_channels, num_latent_frames, height // p, width // p)
        return latents * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, C, t, h, w] -> frames [B, 1 + (t-1)*tp, 3, h*p, w*p] (no clamping)."""
        _check_latents(latents, self.latent_channels)
        batch, _, num_latent_frames, h, w = latents.shape
        p, tp = self.patch_size, self.temporal_patch
        x = (latents / self.scale).reshape(batch, tp, 3, p, p, num_latent_frames, h, w)
        x = x.permute(0, 5, 1, 2, 6, 3, 7, 4)  # [B, t, tp, 3, h, p, w, p]
        grouped = x.reshape(batch, num_latent_frames, tp, 3, h * p, w * p)
        first = grouped[:, 0].mean(dim=1, keepdim=True)  # the tp copies of frame 0
        rest = grouped[:, 1:].reshape(batch, (num_latent_frames - 1) * tp, 3, h * p, w * p)
        return torch.cat([first, rest], dim=1)


PCA_CONFIG_NAME = "config.json"
PCA_WEIGHTS_NAME = "model.safetensors"


class PatchPCACodec:
    """8x8 (``patch_size``) pixel patches projected onto their top ``channels`` principal components.

    latent = (components @ (patch - mean)) / std, one value per component, each with unit variance on the
    fitting frames (as the Wan VAE's per-channel normalisation); decoding is the transpose (the lost
    components are the patch mean's). Linear, so encode/decode cost a matrix product on the CPU.
    """

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, std: torch.Tensor, patch_size: int) -> None:
        self.pixels = PixelPatchCodec(patch_size=patch_size)
        width = self.pixels.latent_channels
        if mean.shape != (width,) or components.ndim != 2 or components.shape[1] != width:
            raise ValueError(
                f"PCA codec: expected mean [{width}] and components [k, {width}] for {patch_size}x{patch_size} "
                f"patches, got {tuple(mean.shape)} and {tuple(components.shape)}"
            )
        if std.shape != (components.shape[0],) or not bool((std > 0).all()):
            raise ValueError(f"PCA codec: std must be [{components.shape[0]}] and > 0, got {tuple(std.shape)}")
        self.mean = mean.float()
        self.components = components.float()
        self.std = std.float()
        self.latent_channels = int(components.shape[0])
        self.spatial_compression = int(patch_size)
        self.temporal_compression = 1

    @classmethod
    def truncating(cls, channels: int, patch_size: int = 8) -> PatchPCACodec:
        """The first ``channels`` pixel-patch values, unscaled: a stand-in for random-weight pipelines (no fit)."""
        width = 3 * patch_size**2
        return cls(torch.zeros(width), torch.eye(width)[:channels], torch.ones(channels), patch_size)

    @classmethod
    def fit(cls, frames: torch.Tensor, channels: int, patch_size: int = 8) -> PatchPCACodec:
        """Principal components of the ``patch_size`` patches of ``frames`` [N, 3, H, W] in [-1, 1]."""
        pixels = PixelPatchCodec(patch_size=patch_size)
        if not 1 <= channels <= pixels.latent_channels:
            raise ValueError(f"channels must be in [1, {pixels.latent_channels}], got {channels}")
        patches = pixels.encode(frames[:, None].float())  # [N, D, 1, h, w]
        patches = patches.permute(0, 2, 3, 4, 1).reshape(-1, pixels.latent_channels).double()
        mean = patches.mean(dim=0)
        centred = patches - mean
        covariance = centred.T @ centred / max(len(centred) - 1, 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        order = torch.argsort(eigenvalues, descending=True)[:channels]
        std = eigenvalues[order].clamp_min(1e-12).sqrt()
        return cls(mean.float(), eigenvectors[:, order].T.float(), std.float(), patch_size)

    def latent_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        return self.pixels.latent_grid(num_frames, height, width)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] -> latents [B, channels, T, H/p, W/p]."""
        patches = self.pixels.encode(frames).float()
        mean = self.mean.to(patches.device).view(1, -1, 1, 1, 1)
        latents = torch.einsum("kd,bdthw->bkthw", self.components.to(patches.device), patches - mean)
        return latents / self.std.to(patches.device).view(1, -1, 1, 1, 1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, channels, t, h, w] -> frames [B, t, 3, h*p, w*p] (no clamping)."""
        _check_latents(latents, self.latent_channels)
        scaled = latents.float() * self.std.to(latents.device).view(1, -1, 1, 1, 1)
        patches = torch.einsum("kd,bkthw->bdthw", self.components.to(latents.device), scaled)
        return self.pixels.decode(patches + self.mean.to(latents.device).view(1, -1, 1, 1, 1))

    def save_pretrained(self, directory: str | Path) -> Path:
        """config.json + model.safetensors, written into a temporary folder first so a crash leaves no half codec."""
        import json
        import shutil
        import tempfile

        from safetensors.torch import save_file

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        config = {"kind": "patch_pca", "patch_size": self.spatial_compression, "channels": self.latent_channels}
        (staging / PCA_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        save_file(
            {"mean": self.mean.contiguous(), "components": self.components.contiguous(), "std": self.std.contiguous()},
            str(staging / PCA_WEIGHTS_NAME),
        )
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> PatchPCACodec:
        import json

        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / PCA_CONFIG_NAME).is_file() or not (directory / PCA_WEIGHTS_NAME).is_file():
            raise FileNotFoundError(
                f"no PCA video codec in {directory}: expected {PCA_CONFIG_NAME} and {PCA_WEIGHTS_NAME} "
                "(fit one with `python -m motus_model.video_latents fit-pca`)"
            )
        config = json.loads((directory / PCA_CONFIG_NAME).read_text())
        if config.get("kind") != "patch_pca":
            raise ValueError(f"{directory / PCA_CONFIG_NAME}: kind must be 'patch_pca', got {config.get('kind')!r}")
        tensors = load_file(str(directory / PCA_WEIGHTS_NAME))
        return cls(tensors["mean"], tensors["components"], tensors["std"], int(config["patch_size"]))


class WanVAECodec:
    """The Wan 2.2 VAE (diffusers `AutoencoderKLWan`) with per-channel latent normalisation.

    Encoding takes the posterior mean (deterministic, as Wan pipelines do for
    conditioning frames) and normalises z -> (z - latents_mean) / latents_std with
    the 48 values in the VAE config; decoding inverts that and clamps to [-1, 1].
    Latents are returned in float32; the VAE may run in another dtype.
    """

    def __init__(self, vae: Any, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        config = vae.config
        self.vae = vae.to(device=device, dtype=dtype).eval()
        self.device = torch.device(device)
        self.dtype = dtype
        self.latent_channels = int(config.z_dim)
        self.spatial_compression = int(config.scale_factor_spatial)
        self.temporal_compression = int(config.scale_factor_temporal)
        mean = torch.tensor(config.latents_mean, dtype=torch.float32)
        std = torch.tensor(config.latents_std, dtype=torch.float32)
        if mean.numel() != self.latent_channels or std.numel() != self.latent_channels:
            raise ValueError(
                f"VAE config: expected {self.latent_channels} latents_mean/latents_std values, "
                f"got {mean.numel()} and {std.numel()}"
            )
        self.latents_mean = mean.view(1, -1, 1, 1, 1).to(self.device)
        self.latents_std = std.view(1, -1, 1, 1, 1).to(self.device)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> WanVAECodec:
        """Load a diffusers-format VAE folder (config.json + safetensors), e.g. Wan2.2-TI2V-5B-Diffusers/vae."""
        from diffusers import AutoencoderKLWan

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in VAE folder {path}")
        logger.info("loading Wan VAE from %s", path)
        return cls(AutoencoderKLWan.from_pretrained(path), device=device, dtype=dtype)

    def latent_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        if height % self.spatial_compression or width % self.spatial_compression:
            raise ValueError(f"height and width must be multiples of {self.spatial_compression}, got {height}x{width}")
        return (
            causal_latent_frames(num_frames, self.temporal_compression),
            height // self.spatial_compression,
            width // self.spatial_compression,
        )

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] in [-1, 1] -> normalised latents [B, 48, t, H/16, W/16] (float32)."""
        _check_frames(frames, self.spatial_compression, self.temporal_compression)
        pixels = frames.to(device=self.device, dtype=self.dtype).permute(0, 2, 1, 3, 4)  # [B, 3, T, H, W]
        z = self.vae.encode(pixels).latent_dist.mode().float()
        return (z - self.latents_mean) / self.latents_std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents [B, 48, t, h, w] -> frames [B, 1 + 4(t-1), 3, 16h, 16w] in [-1, 1]."""
        _check_latents(latents, self.latent_channels)
        z = latents.to(self.device).float() * self.latents_std + self.latents_mean
        pixels = self.vae.decode(z.to(self.dtype)).sample.float().clamp(-1.0, 1.0)
        return pixels.permute(0, 2, 1, 3, 4)


def _wan22_vae(
    base_dim: int,
    decoder_base_dim: int,
    dim_mult: list[int],
    num_res_blocks: int,
    latents_mean: list[float],
    latents_std: list[float],
) -> Any:
    """A randomly initialised ``AutoencoderKLWan`` of the Wan 2.2 structure at the given widths:
    48 latent channels, residual blocks, patch 2 (12 = 3 channels x 2 x 2 in and out), 16x
    spatial, 4x temporal."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=base_dim,
        decoder_base_dim=decoder_base_dim,
        z_dim=48,
        dim_mult=dim_mult,
        num_res_blocks=num_res_blocks,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,  # 3 channels x patch 2 x 2
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        latents_mean=latents_mean,
        latents_std=latents_std,
    )


def tiny_wan_vae(latents_mean: list[float] | None = None, latents_std: list[float] | None = None) -> Any:
    """A randomly initialised Wan 2.2-shaped VAE at tiny width (tests and CPU benchmarks only).

    Same structure as the published one (48 channels, residual blocks, patch 2,
    16x spatial, 4x temporal), base width 8 instead of 160.
    """
    return _wan22_vae(
        base_dim=8,
        decoder_base_dim=8,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        latents_mean=latents_mean if latents_mean is not None else [0.0] * 48,
        latents_std=latents_std if latents_std is not None else [1.0] * 48,
    )


def random_wan22_vae() -> Any:
    """A randomly initialised VAE of the published Wan2.2-TI2V-5B VAE architecture (benchmarks only).

    Architecture from the Wan 2.2 release (base width 160, decoder width 256, 48 channels,
    residual blocks, patch 2, 16x spatial, 4x temporal). The 48 per-channel latent
    mean/std values come with the real weights; here they are 0 and 1.
    """
    return _wan22_vae(
        base_dim=160,
        decoder_base_dim=256,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=2,
        latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48,
    )


def build_codec(
    config: Any,
    path: str | Path | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> VideoCodec:
    """The codec a `MotusConfig` asks for (`config.latents.kind`: "pixel_patch" | "patch_pca" | "wan_vae").

    A Wan VAE or a PCA codec needs `path` (a diffusers VAE folder, or a `PatchPCACodec` folder): there is
    no silent fallback to random weights. The codec's channel count and compression must match the config.
    """
    latents = config.latents
    kind = latents.kind
    if kind == "pixel_patch":
        codec: VideoCodec = PixelPatchCodec(
            patch_size=int(getattr(latents, "patch_size", latents.spatial_compression)),
            temporal_patch=int(getattr(latents, "temporal_patch", latents.temporal_compression)),
            scale=float(getattr(latents, "scale", 1.0)),
        )
    elif kind == "wan_vae":
        if path is None:
            raise ValueError("latents.kind 'wan_vae' needs a VAE folder path (diffusers AutoencoderKLWan); got None")
        codec = WanVAECodec.from_pretrained(path, device=device, dtype=dtype)
    elif kind == "patch_pca":
        if path is None:
            raise ValueError("latents.kind 'patch_pca' needs the codec folder (a checkpoint's vae/); got None")
        codec = PatchPCACodec.from_pretrained(path)
    else:
        raise ValueError(f"latents.kind: expected 'pixel_patch', 'patch_pca' or 'wan_vae', got {kind!r}")
    expected = (int(latents.channels), int(latents.spatial_compression), int(latents.temporal_compression))
    got = (codec.latent_channels, codec.spatial_compression, codec.temporal_compression)
    if expected != got:
        raise ValueError(
            f"codec does not match config.latents: expected (channels, spatial, temporal) {expected}, got {got}"
        )
    return codec


def dataset_composites(root: str | Path, height: int, width: int, every: int = 4) -> torch.Tensor:
    """Every ``every``-th frame of every episode of a LeRobot ALOHA dataset as composites [N, 3, H, W] in [-1, 1]
    (the same composite as training and serving: ``preprocessing.compose_views``)."""
    from motus_model.data.lerobot import LeRobotDataset
    from motus_model.data.torch_dataset import ALOHA_CAMERA_MAP
    from motus_model.preprocessing import CompositeLayout, compose_views, image_to_tensor

    dataset = LeRobotDataset(root)
    layout = CompositeLayout(height=height, width=width)
    composites = []
    for episode in range(dataset.num_episodes):
        frames = {role: dataset.frames(episode, key) for role, key in ALOHA_CAMERA_MAP.items()}
        for row in range(0, len(frames["high"]), every):
            views = {role: clip[row] for role, clip in frames.items()}
            composites.append(image_to_tensor(compose_views(views, layout)))
    if not composites:
        raise ValueError(f"no frames in {root}")
    return torch.stack(composites)


def reconstruction_mse(codec: VideoCodec, frames: torch.Tensor, batch: int = 64) -> float:
    """Mean squared error of encode -> decode on ``frames`` [N, 3, H, W], in [0, 1] pixel units."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(frames), batch):
            chunk = frames[start : start + batch, None]
            decoded = codec.decode(codec.encode(chunk)).clamp(-1, 1)
            total += float(((decoded - chunk) / 2).pow(2).sum())
            count += chunk.numel()
    return total / count


def main(argv: list[str] | None = None) -> int:
    """``python -m motus_model.video_latents fit-pca``: fit a PatchPCACodec on a dataset's frames, measure it."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m motus_model.video_latents")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit-pca", help="fit the patch PCA codec on a LeRobot dataset's composites")
    fit.add_argument("--dataset", required=True, help="LeRobot ALOHA dataset to fit on (motus generate-demos)")
    fit.add_argument("--eval-dataset", help="held-out dataset for the reconstruction error (default: --dataset)")
    fit.add_argument("--channels", type=int, default=64, help="components kept (token = 4 x channels values)")
    fit.add_argument("--patch", type=int, default=8, help="pixel patch side (the config's spatial_compression)")
    fit.add_argument("--image-size", default="96x80", help="composite HEIGHTxWIDTH (the config's)")
    fit.add_argument("--every", type=int, default=4, help="use every N-th frame")
    fit.add_argument("--compare", default="", help="also report the error of these channel counts, e.g. 32,48,96")
    fit.add_argument("--out", help="codec folder to write (a checkpoint's vae/)")
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        parser.error(f"--image-size must be HEIGHTxWIDTH, got {args.image_size!r}")
    train = dataset_composites(args.dataset, height, width, args.every)
    held = dataset_composites(args.eval_dataset, height, width, args.every) if args.eval_dataset else train
    report: dict[str, Any] = {"fit_frames": len(train), "eval_frames": len(held), "patch": args.patch}
    counts = sorted({args.channels, *(int(c) for c in args.compare.split(",") if c.strip())})
    report["mse"] = {}
    for channels in counts:
        codec = PatchPCACodec.fit(train, channels, args.patch)
        report["mse"][f"patch_pca_{channels}"] = reconstruction_mse(codec, held)
        if channels == args.channels and args.out:
            codec.save_pretrained(args.out)
            report["out"] = str(args.out)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
