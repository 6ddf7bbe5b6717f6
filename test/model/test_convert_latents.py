"""Moving a trained pixel_patch model onto PCA latents (pixel_patch_to_patch_pca and `motus convert-latents`).

The oracle is the original model and the codec's own decoder, not the conversion's algebra: the converted model must
embed a PCA latent exactly as the original embeds that latent's decoded pixels.
"""

import json

import pytest
import torch

from motus_model.cli import main
from motus_model.config import MotusConfig
from motus_model.convert_checkpoints import VIDEO_HEAD_OUTPUT_PREFIX, pixel_patch_to_patch_pca
from motus_model.modeling_motus import MotusModel
from motus_model.pipeline_motus import MotusPipeline
from motus_model.video_latents import PatchPCACodec, PixelPatchCodec


def trained_like_model(seed: int = 0) -> MotusModel:
    torch.manual_seed(seed)
    model = MotusModel(MotusConfig.preset("motus-tiny"))
    with torch.no_grad():  # heads are zero-initialised; make outputs depend on the inputs
        torch.nn.init.normal_(model.video.head.head.weight, std=0.1)
        torch.nn.init.normal_(model.action_expert.head.head.weight, std=0.1)
        torch.nn.init.normal_(model.video.patch_embedding.bias, std=0.1)
    return model.eval()


def smooth_frames(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """[count, 3, H, W] in [-1, 1] with structure (a PCA of white noise would keep nothing)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, height // 4, width // 4, generator=generator) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def fitted_codec(model: MotusModel, channels: int) -> PatchPCACodec:
    latents = model.config.latents
    return PatchPCACodec.fit(
        smooth_frames(24, latents.image_height, latents.image_width), channels, latents.spatial_compression
    )


def clip(model: MotusModel, seed: int = 1) -> torch.Tensor:
    """[1, T, 3, H, W]: the sample's conditioning frame and future frames."""
    config = model.config
    frames = smooth_frames(
        config.temporal.num_pixel_frames, config.latents.image_height, config.latents.image_width, seed
    )
    return frames[None]


def action_velocity(model: MotusModel, video_latents: torch.Tensor) -> torch.Tensor:
    """The action velocity with the whole video given (sigma 0), from fixed actions, state and conditioning."""
    config = model.config
    generator = torch.Generator().manual_seed(3)
    actions = torch.randn(1, config.temporal.action_chunk, config.action.action_dim, generator=generator)
    state = torch.randn(1, config.action.state_dim, generator=generator)
    text = torch.randn(1, 5, config.video.text_dim, generator=generator)
    vlm = torch.randn(1, 7, config.understanding.vlm_dim, generator=generator)
    with torch.no_grad():
        conditioning = model.prepare_conditioning(text, None, vlm, None)
        _, velocity = model(
            video_latents, torch.zeros(1), actions, torch.full((1,), 0.5), state, conditioning, need_video=False
        )
    return velocity


def test_every_component_kept_gives_the_original_policy_exactly():
    original = trained_like_model()
    width = original.config.latents.channels  # 48 for motus-tiny's 4x4 patches: the full basis
    codec = fitted_codec(original, width)
    converted = pixel_patch_to_patch_pca(original, codec)
    frames = clip(original)
    before = action_velocity(
        original, PixelPatchCodec(patch_size=original.config.latents.spatial_compression).encode(frames)
    )
    after = action_velocity(converted, codec.encode(frames))
    assert before.abs().mean() > 0.05  # the outputs depend on the inputs
    torch.testing.assert_close(after, before, atol=2e-4, rtol=1e-3)


def test_the_new_embedding_is_the_old_embedding_of_the_reconstruction():
    original = trained_like_model()
    codec = fitted_codec(original, 12)  # a quarter of the components: reconstruction is lossy
    converted = pixel_patch_to_patch_pca(original, codec)
    assert converted.config.latents.kind == "patch_pca" and converted.config.latents.channels == 12
    assert converted.config.video.latent_channels == 12
    latents = codec.encode(clip(original))
    reconstruction = PixelPatchCodec(patch_size=original.config.latents.spatial_compression).encode(
        codec.decode(latents)
    )
    with torch.no_grad():
        new_tokens = converted.video.patch_embedding(latents)
        old_tokens = original.video.patch_embedding(reconstruction)
    torch.testing.assert_close(new_tokens, old_tokens, atol=1e-4, rtol=1e-4)


def test_everything_but_the_embedding_and_the_video_head_output_is_copied():
    original = trained_like_model()
    converted = pixel_patch_to_patch_pca(original, fitted_codec(original, 12))
    before, after = original.state_dict(), converted.state_dict()
    changed = {
        key for key in after if after[key].shape != before[key].shape or not torch.equal(after[key], before[key])
    }
    assert changed == {
        "video.patch_embedding.weight",
        "video.patch_embedding.bias",
        f"{VIDEO_HEAD_OUTPUT_PREFIX}weight",
        f"{VIDEO_HEAD_OUTPUT_PREFIX}bias",
    }
    assert not after[f"{VIDEO_HEAD_OUTPUT_PREFIX}weight"].any()  # the fresh (zero) head, not the old one reshaped


def test_models_it_cannot_convert_are_refused_by_name():
    original = trained_like_model()
    pca_model = pixel_patch_to_patch_pca(original, fitted_codec(original, 12))
    with pytest.raises(ValueError, match="needs a pixel_patch model.*'patch_pca'"):
        pixel_patch_to_patch_pca(pca_model, fitted_codec(original, 12))
    latents = original.config.latents
    other_patch = PatchPCACodec.fit(smooth_frames(4, latents.image_height, latents.image_width), 12, patch_size=2)
    with pytest.raises(ValueError, match="2x2 patches do not match the model's 4x4"):
        pixel_patch_to_patch_pca(original, other_patch)


@pytest.mark.timeout(240)
def test_convert_latents_command_writes_a_checkpoint_the_pipeline_loads(tmp_path, capsys):
    pipeline = MotusPipeline.from_config(MotusConfig.preset("motus-tiny"), seed=0)
    pipeline.save_pretrained(tmp_path / "pixel")
    codec = fitted_codec(pipeline.model, 12)
    codec.save_pretrained(tmp_path / "codec")
    command = ["convert-latents", "--checkpoint", str(tmp_path / "pixel"), "--codec", str(tmp_path / "codec")]
    assert main([*command, "--out", str(tmp_path / "pca")]) == 0
    assert json.loads(capsys.readouterr().out)["channels"] == 12
    loaded = MotusPipeline.from_pretrained(tmp_path / "pca")
    assert loaded.config.latents.kind == "patch_pca"
    torch.testing.assert_close(loaded.codec.components, codec.components)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    # a second run into the same folder is a one-line user error, and a PCA checkpoint cannot be converted again
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--out", str(tmp_path / "pca")])
    assert exit_info.value.code == 2 and "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "convert-latents",
                "--checkpoint",
                str(tmp_path / "pca"),
                "--codec",
                str(tmp_path / "codec"),
                "--out",
                str(tmp_path / "again"),
            ]
        )
    assert "needs a pixel_patch model" in capsys.readouterr().err
    # a checkpoint folder with a file missing is a one-line user error too
    (tmp_path / "pixel" / "model.safetensors").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--out", str(tmp_path / "broken")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.startswith("motus: error: --checkpoint") and error.count("\n") == 1
    assert not (tmp_path / "broken").exists()


@pytest.mark.timeout(240)
def test_an_interrupted_conversion_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    pipeline = MotusPipeline.from_config(MotusConfig.preset("motus-tiny"), seed=0)
    pipeline.save_pretrained(tmp_path / "pixel")
    fitted_codec(pipeline.model, 12).save_pretrained(tmp_path / "codec")
    save = MotusPipeline.save_pretrained

    def interrupted(self, directory):
        save(self, directory)  # the whole checkpoint is written, then the process is interrupted before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(MotusPipeline, "save_pretrained", interrupted)
    command = ["convert-latents", "--checkpoint", str(tmp_path / "pixel"), "--codec", str(tmp_path / "codec")]
    with pytest.raises(KeyboardInterrupt):
        main([*command, "--out", str(tmp_path / "pca")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codec", "pixel"]  # no --out, no staging folder
