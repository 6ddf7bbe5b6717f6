"""MotusModel.forward skips the work a sampling mode discards (need_video / need_actions) without changing
the output that is kept, and the patch embedding runs as one matmul equal to the Conv3d."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from motus_model.config import MotusConfig
from motus_model.modeling_motus import MotusModel, _patchify_linear


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    config = MotusConfig.preset("motus-tiny")
    model = MotusModel(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the preset zero-initialises the heads: seeded non-zero ones so outputs depend on inputs
        for head in (model.video.head.head, model.action_expert.head.head):
            head.weight.normal_(0, 0.2, generator=generator)
            head.bias.normal_(0, 0.2, generator=generator)
    frames, height, width = config.latent_grid()
    inputs = {
        "video_latents": torch.randn(2, config.video.latent_channels, frames, height, width, generator=generator),
        "video_sigma": torch.tensor([1.0, 0.3]),
        "actions": torch.randn(2, config.temporal.action_chunk, config.action.action_dim, generator=generator),
        "action_sigma": torch.tensor([0.6, 0.2]),
        "state": torch.randn(2, config.action.state_dim, generator=generator),
    }
    text = torch.randn(2, config.video.text_len, config.video.text_dim, generator=generator)
    vlm = torch.randn(2, 5, config.understanding.vlm_dim, generator=generator)
    with torch.no_grad():
        inputs["conditioning"] = model.prepare_conditioning(text, None, vlm, None)
    return model, inputs


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@torch.no_grad()
def test_skipped_stream_leaves_the_other_output_unchanged_and_costs_less(setup):
    model, inputs = setup
    video, actions = model(**inputs)
    video_only, no_actions = model(**inputs, need_actions=False)
    no_video, actions_only = model(**inputs, need_video=False)
    assert no_video is None and no_actions is None
    torch.testing.assert_close(actions_only, actions, rtol=0, atol=1e-6)
    torch.testing.assert_close(video_only, video, rtol=0, atol=1e-6)
    full = flops(lambda: model(**inputs))
    assert flops(lambda: model(**inputs, need_video=False)) < full
    assert flops(lambda: model(**inputs, need_actions=False)) < full


def test_asking_for_no_output_is_refused(setup):
    model, inputs = setup
    with pytest.raises(ValueError, match="ask for at least one output"):
        model(**inputs, need_video=False, need_actions=False)


def test_patch_embedding_matmul_equals_the_conv3d():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(12, 8, kernel_size=(1, 2, 2), stride=(1, 2, 2))
    x = torch.randn(2, 12, 3, 6, 4)
    expected = conv(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(_patchify_linear(conv, x), expected, rtol=1e-5, atol=1e-5)
