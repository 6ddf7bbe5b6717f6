"""Video codecs (motus_model.video_latents): pixel patches exact, Wan VAE shapes and normalisation."""

import pytest
import torch

from motus_model.video_latents import PixelPatchCodec, WanVAECodec, causal_latent_frames, tiny_wan_vae


@pytest.mark.parametrize("patch_size, temporal_patch", [(4, 1), (2, 2), (8, 4)])
def test_pixel_patch_round_trip_is_exact(patch_size, temporal_patch):
    codec = PixelPatchCodec(patch_size=patch_size, temporal_patch=temporal_patch, scale=2.0)
    num_frames = 1 + 2 * temporal_patch
    frames = torch.rand(2, num_frames, 3, 16, 24) * 2 - 1
    latents = codec.encode(frames)
    t, h, w = codec.latent_grid(num_frames, 16, 24)
    assert latents.shape == (2, 3 * temporal_patch * patch_size**2, t, h, w)
    assert t == 3
    torch.testing.assert_close(codec.decode(latents), frames, rtol=0, atol=1e-6)


def test_pixel_patch_is_local_and_causal():
    codec = PixelPatchCodec(patch_size=4, temporal_patch=2)
    frames = torch.zeros(1, 5, 3, 8, 8)
    frames[0, 3, 1, 4:, :4] = 1.0  # frame 3, green channel, bottom-left patch
    latents = codec.encode(frames)
    nonzero = latents[0].nonzero()
    # Frame 3 is in latent frame 2 (frames 1-2 -> 1, frames 3-4 -> 2), patch row 1, column 0.
    assert set(nonzero[:, 1].tolist()) == {2}
    assert set(nonzero[:, 2].tolist()) == {1} and set(nonzero[:, 3].tolist()) == {0}
    assert latents[0, :, 0].abs().sum() == 0  # the first latent frame holds frame 0 only


def test_pixel_patch_scale_and_errors():
    codec = PixelPatchCodec(patch_size=2, scale=0.5)
    frames = torch.ones(1, 1, 3, 4, 4)
    assert torch.all(codec.encode(frames) == 0.5)
    with pytest.raises(ValueError, match="multiples of 2"):
        codec.encode(torch.zeros(1, 1, 3, 5, 4))
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        codec.encode(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"expected a tensor \[B, 12"):
        codec.decode(torch.zeros(1, 5, 1, 2, 2))
    with pytest.raises(ValueError, match="1 \\+ k\\*4"):
        causal_latent_frames(4, 4)


@pytest.mark.timeout(120)
def test_wan_vae_shapes_and_normalisation(tmp_path):
    torch.manual_seed(0)
    mean = torch.linspace(-1.0, 1.0, 48)
    std = torch.linspace(0.5, 2.0, 48)
    vae = tiny_wan_vae(latents_mean=mean.tolist(), latents_std=std.tolist())
    vae.save_pretrained(tmp_path / "vae")
    codec = WanVAECodec.from_pretrained(tmp_path / "vae")
    assert (codec.latent_channels, codec.spatial_compression, codec.temporal_compression) == (48, 16, 4)

    frames = torch.rand(1, 5, 3, 32, 48) * 2 - 1
    latents = codec.encode(frames)
    assert latents.shape == (1, 48, 2, 2, 3) == (1, 48, *codec.latent_grid(5, 32, 48))
    # The normalisation is the VAE config's per-channel mean/std applied to the posterior mean.
    raw = vae.encode(frames.permute(0, 2, 1, 3, 4)).latent_dist.mode()
    expected = (raw - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(latents, expected, rtol=1e-4, atol=1e-4)

    decoded = codec.decode(latents)
    assert decoded.shape == frames.shape
    assert decoded.min() >= -1 and decoded.max() <= 1
    expected_pixels = vae.decode(raw).sample.clamp(-1, 1).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(decoded, expected_pixels, rtol=1e-4, atol=1e-4)


def test_build_codec_from_config():
    from motus_model.config import MotusConfig
    from motus_model.video_latents import build_codec

    config = MotusConfig.preset("motus-small")
    codec = build_codec(config)
    assert isinstance(codec, PixelPatchCodec) and codec.latent_channels == config.latents.channels == 192
    frames = torch.zeros(
        1, config.temporal.num_pixel_frames, 3, config.latents.image_height, config.latents.image_width
    )
    assert codec.encode(frames).shape[2:] == config.latent_grid()
    with pytest.raises(ValueError, match="needs a VAE folder path"):
        build_codec(MotusConfig.preset("motus-small-wan-vae"))


def _low_rank_frames(count: int, rank: int, patch: int = 4, seed: int = 0) -> torch.Tensor:
    """Frames whose every patch x patch patch lies in a ``rank``-dimensional affine subspace."""
    generator = torch.Generator().manual_seed(seed)
    width = 3 * patch * patch
    basis = torch.linalg.qr(torch.randn(width, rank, generator=generator)).Q  # [width, rank]
    mean = torch.randn(width, generator=generator) * 0.1
    coefficients = torch.randn(count, 4, 4, rank, generator=generator) * 0.2  # a 4 x 4 grid of patches
    patches = (coefficients @ basis.T + mean).permute(0, 3, 1, 2)[:, :, None]  # [N, width, 1, 4, 4]
    return PixelPatchCodec(patch_size=patch).decode(patches)[:, 0]  # [N, 3, 16, 16]


def test_patch_pca_recovers_frames_of_its_rank_and_loses_the_rest(tmp_path):
    from motus_model.video_latents import PatchPCACodec, reconstruction_mse

    frames = _low_rank_frames(40, rank=6)
    exact = PatchPCACodec.fit(frames, channels=6, patch_size=4)
    assert exact.latent_channels == 6
    latents = exact.encode(frames[:, None])
    assert latents.shape == (40, 6, 1, 4, 4)
    # Each latent channel has unit variance on the fitting frames (the Wan VAE's normalisation).
    torch.testing.assert_close(latents.transpose(0, 1).reshape(6, -1).std(dim=1), torch.ones(6), atol=0.05, rtol=0)
    torch.testing.assert_close(exact.decode(latents)[:, 0], frames, atol=1e-4, rtol=0)
    too_few = PatchPCACodec.fit(frames, channels=3, patch_size=4)
    assert reconstruction_mse(too_few, frames) > 100 * max(reconstruction_mse(exact, frames), 1e-12)
    # Saved as a checkpoint's vae/ folder and loaded back bit for bit.
    exact.save_pretrained(tmp_path / "vae")
    loaded = PatchPCACodec.from_pretrained(tmp_path / "vae")
    assert torch.equal(loaded.components, exact.components) and torch.equal(loaded.std, exact.std)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae"]  # no staging folder left behind
    with pytest.raises(FileNotFoundError, match="fit-pca"):
        PatchPCACodec.from_pretrained(tmp_path / "missing")


def test_patch_pca_preset_token_fits_the_expert():
    from motus_model.config import MotusConfig, VideoLatentConfig
    from motus_model.video_latents import build_codec

    config = MotusConfig.preset("motus-small-aloha-pca")
    assert config.latents.kind == "patch_pca" and config.video_token_dim <= config.video.dim
    assert MotusConfig.from_dict(config.to_dict()) == config  # the choice is saved in config.json
    with pytest.raises(ValueError, match="needs the codec folder"):
        build_codec(config)
    with pytest.raises(ValueError, match="at most"):
        VideoLatentConfig(kind="patch_pca", channels=200, spatial_compression=8, temporal_compression=1)


@pytest.mark.timeout(180)
def test_a_patch_pca_checkpoint_carries_its_codec(tmp_path):
    import dataclasses

    import numpy as np

    from motus_model.config import MotusConfig
    from motus_model.pipeline_motus import MotusPipeline, MotusRequest
    from motus_model.video_latents import PatchPCACodec

    base = MotusConfig.preset("motus-tiny")
    latents = dataclasses.replace(base.latents, kind="patch_pca", channels=8)
    config = dataclasses.replace(base, latents=latents, video=dataclasses.replace(base.video, latent_channels=8))
    codec = PatchPCACodec.fit(_low_rank_frames(20, rank=8, patch=4).repeat(1, 1, 2, 2), channels=8, patch_size=4)
    pipeline = MotusPipeline.from_config(config, codec=codec)
    pipeline.save_pretrained(tmp_path / "ckpt")
    loaded = MotusPipeline.from_pretrained(tmp_path / "ckpt", allow_missing_stats=True)
    assert isinstance(loaded.codec, PatchPCACodec) and torch.equal(loaded.codec.components, codec.components)
    assert MotusConfig.load(tmp_path / "ckpt" / "config.json").latents.kind == "patch_pca"
    views = {role: np.zeros((32, 32, 3), dtype=np.uint8) for role in ("high", "left_wrist", "right_wrist")}
    result = loaded(
        MotusRequest(
            mode="world_model",
            images=views,
            state=np.zeros(14),
            actions=np.zeros((config.temporal.action_chunk, 14)),
            steps=1,
            seed=0,
        )
    )
    assert result.frames.shape == (config.temporal.num_video_frames, 32, 32, 3)
