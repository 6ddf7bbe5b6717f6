"""Text and VLM conditioning (motus_model.conditioning): tiny real encoders saved and loaded from folders."""

import numpy as np
import pytest
import torch

from motus_model.conditioning import (
    Qwen3VLFeatureExtractor,
    TextConditioner,
    UMT5TextEncoder,
    build_tiny_qwen3_vl,
    build_tiny_umt5,
    load_text_features,
    save_text_features,
)


@pytest.fixture(scope="module")
def umt5_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("umt5")
    build_tiny_umt5(text_dim=24, directory=directory)
    return directory


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen3vl")
    build_tiny_qwen3_vl(vlm_dim=24, directory=directory)
    return directory


@pytest.mark.timeout(60)
def test_umt5_loads_from_folder_pads_and_masks(umt5_dir):
    encoder = UMT5TextEncoder.from_pretrained(umt5_dir, text_len=16)
    assert encoder.text_dim == 24
    features, mask = encoder.encode(["pick", "place the cube"])
    assert features.shape == (2, 16, 24) and mask.shape == (2, 16) and mask.dtype == torch.bool
    # byte tokens + </s>: "pick" -> 5 tokens, "place the cube" -> 15.
    assert mask.sum(1).tolist() == [5, 15]
    assert torch.all(features[~mask] == 0)  # padding zeroed as stock Wan
    assert features[mask].abs().sum() > 0
    # Same instruction alone gives the same features (no dependence on the batch).
    alone, _ = encoder.encode(["pick"])
    torch.testing.assert_close(alone[0], features[0], rtol=1e-5, atol=1e-5)


@pytest.mark.timeout(60)
def test_umt5_instruction_too_long(umt5_dir):
    encoder = UMT5TextEncoder.from_pretrained(umt5_dir, text_len=8)
    with pytest.raises(ValueError, match="instruction too long: expected at most 8 tokens, got 21"):
        encoder.encode(["this is far too long"])
    truncating = UMT5TextEncoder.from_pretrained(umt5_dir, text_len=8, truncate=True)
    _, mask = truncating.encode(["this is far too long"])
    assert mask.all()


@pytest.mark.timeout(60)
def test_text_conditioner_check_counts_tokens_without_running_the_encoder(umt5_dir):
    """The cheap up-front check servers use (issue 15: 49-512 characters passed the character check, then
    failed inside inference on the token limit)."""
    encoder = UMT5TextEncoder.from_pretrained(umt5_dir, text_len=8)
    conditioner = TextConditioner(encoder, text_len=8, text_dim=24)
    conditioner.check("pick")  # 5 tokens
    with pytest.raises(ValueError, match="at most 8 tokens .* got 21"):
        conditioner.check("this is far too long")
    assert encoder.calls == 0 and conditioner.encoder_calls == 0
    precomputed_only = TextConditioner(None, text_len=8, text_dim=24, precomputed={"pick": torch.zeros(3, 24)})
    precomputed_only.check("pick")
    with pytest.raises(ValueError, match="no text encoder"):
        precomputed_only.check("place")


@pytest.mark.timeout(60)
def test_text_conditioner_caches_and_serves_precomputed(umt5_dir, tmp_path):
    encoder = UMT5TextEncoder.from_pretrained(umt5_dir, text_len=16)
    conditioner = TextConditioner(encoder, text_len=16, text_dim=24, cache_size=2)
    first, mask = conditioner.encode(["a", "b", "a"])
    assert encoder.calls == 1 and conditioner.encoder_calls == 1
    torch.testing.assert_close(first[0], first[2])
    conditioner.encode(["a", "b"])
    assert encoder.calls == 1 and conditioner.cache_hits == 2
    conditioner.encode(["c"])  # evicts "a" (least recently used)
    conditioner.encode(["b"])
    assert encoder.calls == 2
    conditioner.encode(["a"])
    assert encoder.calls == 3

    # Precomputed features: file round trip, served without any encoder.
    real = {"stack": torch.randn(3, 24), "open drawer": torch.randn(5, 24)}
    path = tmp_path / "t5.safetensors"
    save_text_features(path, real)
    loaded = load_text_features(path)
    assert set(loaded) == set(real) and torch.equal(loaded["stack"], real["stack"])
    offline = TextConditioner(None, text_len=16, text_dim=24, precomputed=path)
    features, mask = offline.encode(["open drawer", "stack"])
    assert mask.sum(1).tolist() == [5, 3]
    assert torch.equal(features[0, :5], real["open drawer"]) and torch.all(features[0, 5:] == 0)
    with pytest.raises(ValueError, match="no text encoder and no precomputed features"):
        offline.encode(["unknown"])
    with pytest.raises(ValueError, match=r"expected \[L <= 16, 24\]"):
        TextConditioner(None, text_len=16, text_dim=24, precomputed={"x": torch.zeros(17, 24)})
    with pytest.raises(ValueError, match="the model expects"):
        TextConditioner(encoder, text_len=16, text_dim=32)


@pytest.mark.timeout(90)
def test_qwen3_vl_loads_from_folder_and_gives_masked_features(qwen_dir):
    extractor = Qwen3VLFeatureExtractor.from_pretrained(qwen_dir)
    assert extractor.vlm_dim == 24
    prompt = extractor.build_prompt("pick up the cube")
    assert prompt == "<|im_start|>user\npick up the cube<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    hidden, mask = extractor.extract(["pick up the cube", "go"], images)
    # "<|im_start|>user\n" (6) + text + vision_start + 4 image tokens + vision_end + "<|im_end|>\n" (2).
    expected_lengths = [6 + 16 + 1 + 4 + 1 + 2, 6 + 2 + 1 + 4 + 1 + 2]
    assert hidden.shape == (2, max(expected_lengths), 24) and mask.sum(1).tolist() == expected_lengths
    assert extractor.calls == 1
    # The image matters, and a request alone equals the same request in a padded batch.
    alone, _ = extractor.extract(["go"], [images[1]])
    torch.testing.assert_close(alone[0], hidden[1, : expected_lengths[1]], rtol=1e-4, atol=1e-4)
    other, _ = extractor.extract(["go"], [255 - images[1]])
    assert not torch.allclose(other, alone)
    with pytest.raises(ValueError, match="expected uint8"):
        extractor.extract(["go"], [images[0].astype(np.float32)])
