"""MotusConfig: presets match the published shapes, JSON round-trips, validation errors are clear."""

import dataclasses

import pytest

from motus_model.config import MotusConfig, TemporalConfig, VideoExpertConfig, VideoLatentConfig


@pytest.mark.parametrize("name", MotusConfig.preset_names())
def test_every_preset_round_trips_through_json(name, tmp_path):
    config = MotusConfig.preset(name)
    path = tmp_path / "config.json"
    config.save(path)
    loaded = MotusConfig.load(path)
    assert loaded == config
    assert loaded.video.patch_size == config.video.patch_size and isinstance(loaded.video.patch_size, tuple)


def test_motus_8b_matches_published_token_counts():
    config = MotusConfig.preset("motus-8b")
    # 384x320, 1+8 frames -> 3 latent frames of 24x20 -> 3 x 12 x 10 = 360 video tokens.
    assert config.latent_grid() == (3, 24, 20)
    assert config.num_video_tokens() == 360
    assert config.num_action_tokens() == 21  # state + 16 actions + 4 registers
    assert config.attention_dim == 3072 and config.num_layers == 30
    assert MotusConfig.preset("motus-8b-ac-one").num_action_tokens() == 53


def test_pretrain_mode_drops_state_and_registers():
    config = MotusConfig.preset("motus-tiny")
    config.training_mode = "pretrain"
    assert config.num_action_tokens() == config.temporal.action_chunk


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean 'motus-tiny'"):
        MotusConfig.preset("motus-tiyn")


def test_chunk_must_equal_frames_times_ratio():
    with pytest.raises(ValueError, match="action_chunk must equal"):
        TemporalConfig(num_video_frames=8, action_chunk=15, video_action_ratio=2)


def test_heads_times_head_dim_must_equal_dim():
    with pytest.raises(ValueError, match="num_heads \\* video.head_dim"):
        VideoExpertConfig(dim=64, num_heads=3, head_dim=16)


def test_pixel_patch_channel_count_is_checked():
    with pytest.raises(ValueError, match="pixel_patch latents have"):
        VideoLatentConfig(
            kind="pixel_patch",
            channels=47,
            spatial_compression=4,
            temporal_compression=1,
            image_height=32,
            image_width=32,
        )


def test_latent_grid_follows_causal_first_frame():
    latents = VideoLatentConfig()  # Wan VAE: 4x temporal
    assert latents.latent_grid(1) == (1, 24, 20)
    assert latents.latent_grid(9) == (3, 24, 20)
    with pytest.raises(ValueError, match="1 \\+ k \\* temporal_compression"):
        latents.latent_grid(8)


def test_unknown_json_keys_are_rejected():
    data = MotusConfig.preset("motus-tiny").to_dict()
    data["video"]["dimm"] = 3
    with pytest.raises(ValueError, match="dimm"):
        MotusConfig.from_dict(data)


def test_latent_channels_must_agree_between_sections():
    config = MotusConfig.preset("motus-tiny")
    with pytest.raises(ValueError, match="latent_channels"):
        dataclasses.replace(config, video=dataclasses.replace(config.video, latent_channels=12))


def test_video_token_dim_flags_the_pixel_patch_bottleneck():
    # The release: 48 Wan-VAE channels x a 1x2x2 patch = 192 values per token, far under the 3072-wide expert.
    release = MotusConfig.preset("motus-8b")
    assert release.video_token_dim == 192 < release.video.dim
    # motus-small: 192 pixel_patch channels x 2x2 = 768 values per token through a 256-wide expert.
    small = MotusConfig.preset("motus-small-aloha")
    assert small.video_token_dim == 768 > small.video.dim
