"""Text and VLM features that condition the model, each with a precomputed-features path.

Two feature sources (as in the thu-ml/Motus release, arXiv 2512.13030):
- `UMT5TextEncoder`: umT5 encoder (transformers `UMT5EncoderModel`) for the video
  expert's cross-attention; instruction padded/truncated to `text_len` tokens, padded
  positions zeroed as stock Wan does. Features [B, text_len, text_dim], mask [B, text_len].
- `Qwen3VLFeatureExtractor`: the frozen Qwen3-VL language model run once on the
  chat-templated user message (instruction text first, then the composite image, no
  generation prompt); its last hidden state [B, L, vlm_dim] feeds the understanding expert.

`TextConditioner` sits in front of any text encoder: it serves precomputed features
(a dict or a `.safetensors` file of pre-encoded instructions, as the reference ships
pre-encoded T5) and keeps an LRU cache keyed by instruction, so the encoder runs once
per distinct instruction.

Which encoders a checkpoint uses: the published shape needs the real umT5-XXL and
Qwen3-VL-2B folders (no stand-in is ever substituted silently). The small CPU presets
(`motus-tiny`, `motus-small`) have text_dim/vlm_dim of 24/256, which no public encoder
produces; their checkpoints ship tiny *real* encoders of those widths (same classes,
random or trained weights) made by `build_tiny_umt5` / `build_tiny_qwen3_vl`, saved as
ordinary transformers folders next to the model.

Processing note: transformers' `Qwen3VLProcessor` needs torchvision for its video
processor, which this environment does not have; we therefore drive the tokenizer and
the PIL image processor (`Qwen2VLImageProcessorPil`, the class Qwen3-VL's processor
uses for images) directly and expand the image placeholder exactly as the processor
does (grid_t*grid_h*grid_w / merge_size**2 `<|image_pad|>` tokens, and
`mm_token_type_ids` marking them for the M-RoPE ids).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

logger = logging.getLogger(__name__)

IMAGE_PAD_TOKEN = "<|image_pad|>"
# The specials a Qwen3-VL tokenizer has and our tiny one reproduces.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    IMAGE_PAD_TOKEN,
    "<|video_pad|>",
]
# Qwen chat format for a content list of text and image items (same output as the
# Qwen3-VL template for a single user turn without tools or a system prompt).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% elif item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class TextEncoder(Protocol):
    """Anything that turns instructions into padded features and a keep-mask."""

    text_len: int
    text_dim: int

    def encode(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (features [B, text_len, text_dim] float32, mask [B, text_len] bool, True = real token)."""
        ...


def _check_instructions(instructions: Sequence[str]) -> list[str]:
    if isinstance(instructions, str) or not all(isinstance(text, str) for text in instructions):
        raise ValueError(f"expected a list of instruction strings, got {type(instructions).__name__}")
    return list(instructions)


# --------------------------------------------------------------------------------------
# umT5
# --------------------------------------------------------------------------------------


class UMT5TextEncoder:
    """umT5 encoder + tokenizer from a local folder (transformers format).

    Instructions longer than `text_len` tokens raise (we never truncate silently, since a
    cut instruction changes the task); pass `truncate=True` to cut instead.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        text_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        truncate: bool = False,
    ) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.text_len = int(text_len)
        self.text_dim = int(model.config.d_model)
        self.device = torch.device(device)
        self.truncate = truncate
        self.calls = 0  # number of encoder forward passes (for cache tests and stats)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        text_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        truncate: bool = False,
    ) -> UMT5TextEncoder:
        """Load `UMT5EncoderModel` and its tokenizer from one folder."""
        from transformers import AutoTokenizer, UMT5EncoderModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in umT5 folder {path}")
        logger.info("loading umT5 encoder from %s", path)
        return cls(
            UMT5EncoderModel.from_pretrained(path),
            AutoTokenizer.from_pretrained(path),
            text_len,
            device,
            dtype,
            truncate,
        )

    def count_tokens(self, instruction: str) -> int:
        """Tokens the instruction takes, end-of-sequence token included."""
        return len(self.tokenizer(instruction, add_special_tokens=True)["input_ids"])

    @torch.no_grad()
    def encode(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (features [B, text_len, text_dim] float32 with padding zeroed, mask [B, text_len] bool)."""
        instructions = _check_instructions(instructions)
        if not self.truncate:
            for text in instructions:
                count = self.count_tokens(text)
                if count > self.text_len:
                    raise ValueError(
                        f"instruction too long: expected at most {self.text_len} tokens, got {count}: {text[:60]!r}..."
                    )
        tokens = self.tokenizer(
            instructions,
            padding="max_length",
            truncation=True,
            max_length=self.text_len,
            add_special_tokens=True,
            return_tensors="pt",
        )
        input_ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device).bool()
        hidden = self.model(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state.float()
        self.calls += 1
        # Stock Wan keeps only the real tokens and pads with zeros.
        return hidden * mask.unsqueeze(-1), mask


# --------------------------------------------------------------------------------------
# Precomputed features and the cache
# --------------------------------------------------------------------------------------


def save_text_features(path: str | Path, features: Mapping[str, torch.Tensor]) -> None:
    """Write {instruction: features [L, text_dim]} (unpadded real tokens) to a .safetensors file."""
    from safetensors.torch import save_file

    instructions = list(features)
    tensors = {
        f"features.{index}": features[text].detach().float().cpu().contiguous()
        for index, text in enumerate(instructions)
    }
    save_file(tensors, str(path), metadata={"instructions": json.dumps(instructions)})


def load_text_features(path: str | Path) -> dict[str, torch.Tensor]:
    """Inverse of `save_text_features`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if "instructions" not in metadata:
            raise ValueError(f"{path}: expected an 'instructions' metadata entry (written by save_text_features)")
        instructions = json.loads(metadata["instructions"])
        return {text: handle.get_tensor(f"features.{index}") for index, text in enumerate(instructions)}


class TextConditioner:
    """Text features for instructions: precomputed first, then an LRU cache, then the encoder.

    Args:
        encoder: a `TextEncoder` (may be None when every instruction is precomputed).
        text_len, text_dim: the model's text context shape (config.video.text_len/text_dim).
        precomputed: {instruction: features [L <= text_len, text_dim]} (real tokens only) or
            a path to a `.safetensors` file written by `save_text_features`.
        cache_size: instructions kept in the LRU cache (0 disables it).
    Thread-safe.
    """

    def __init__(
        self,
        encoder: TextEncoder | None,
        text_len: int,
        text_dim: int,
        precomputed: Mapping[str, torch.Tensor] | str | Path | None = None,
        cache_size: int = 256,
    ) -> None:
        if encoder is not None and (encoder.text_len, encoder.text_dim) != (text_len, text_dim):
            raise ValueError(
                f"text encoder gives [{encoder.text_len}, {encoder.text_dim}] features, "
                f"the model expects [{text_len}, {text_dim}]"
            )
        self.encoder = encoder
        self.text_len = int(text_len)
        self.text_dim = int(text_dim)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self.encoder_calls = 0
        self.cache_hits = 0
        self.precomputed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if isinstance(precomputed, (str, Path)):
            precomputed = load_text_features(precomputed)
        for text, features in (precomputed or {}).items():
            self.precomputed[text] = self._pad(text, features)

    def _pad(self, text: str, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if features.ndim != 2 or features.shape[1] != self.text_dim or features.shape[0] > self.text_len:
            raise ValueError(
                f"precomputed features for {text[:40]!r}: expected [L <= {self.text_len}, {self.text_dim}], "
                f"got {tuple(features.shape)}"
            )
        padded = torch.zeros(self.text_len, self.text_dim)
        padded[: features.shape[0]] = features.float()
        mask = torch.zeros(self.text_len, dtype=torch.bool)
        mask[: features.shape[0]] = True
        return padded, mask

    def check(self, instruction: str) -> None:
        """Raise ValueError when `instruction` cannot be encoded: more tokens than `text_len`, or no encoder and no
        precomputed features for it. Cheap (the tokenizer only, no model), so servers can refuse an instruction
        before accepting a request instead of failing it later inside inference."""
        instruction = _check_instructions([instruction])[0]
        with self._lock:
            if instruction in self.precomputed or instruction in self._cache:
                return
        if self.encoder is None:
            raise ValueError(
                f"no text encoder and no precomputed features for instruction {instruction[:60]!r}; "
                f"precomputed: {sorted(self.precomputed)[:10]}"
            )
        count_tokens = getattr(self.encoder, "count_tokens", None)
        if count_tokens is None or getattr(self.encoder, "truncate", False):
            return  # an encoder without a tokenizer count, or one that truncates: nothing to refuse here
        count = int(count_tokens(instruction))
        if count > self.text_len:
            raise ValueError(
                f"instruction too long: expected at most {self.text_len} tokens (end-of-sequence token "
                f"included), got {count}"
            )

    def encode(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (features [B, text_len, text_dim], mask [B, text_len] bool) on the encoder's device (CPU if none)."""
        instructions = _check_instructions(instructions)
        with self._lock:
            found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            for text in instructions:
                if text in self.precomputed:
                    found[text] = self.precomputed[text]
                elif text in self._cache:
                    self._cache.move_to_end(text)
                    found[text] = self._cache[text]
                    self.cache_hits += 1
            missing = list(dict.fromkeys(text for text in instructions if text not in found))
            if missing:
                if self.encoder is None:
                    raise ValueError(
                        f"no text encoder and no precomputed features for instruction(s) {missing}; "
                        f"precomputed: {sorted(self.precomputed)[:10]}"
                    )
                features, mask = self.encoder.encode(missing)
                self.encoder_calls += 1
                for index, text in enumerate(missing):
                    found[text] = (features[index], mask[index])
                    if self.cache_size > 0:
                        self._cache[text] = found[text]
                        while len(self._cache) > self.cache_size:
                            self._cache.popitem(last=False)
            device = next(iter(found.values()))[0].device
            features = torch.stack([found[text][0].to(device) for text in instructions])
            mask = torch.stack([found[text][1].to(device) for text in instructions])
        return features, mask


# --------------------------------------------------------------------------------------
# Qwen3-VL
# --------------------------------------------------------------------------------------


class Qwen3VLFeatureExtractor:
    """Frozen Qwen3-VL run once per (instruction, composite image) -> last hidden state.

    The user message is the instruction text followed by the image, no generation
    prompt (the reference's layout). Only the language model runs (no LM head): we
    take `hidden_states[-1]`, which in transformers is the final-normed last layer,
    i.e. `last_hidden_state`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_processor: Any,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        chat_template: str | None = None,
        prompt_prefix: str = "",
    ) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.device = torch.device(device)
        self.dtype = dtype
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None) or QWEN_CHAT_TEMPLATE
        # Text prepended to every instruction (the RoboTwin deployment's fixed 3-view "scene" prefix).
        self.prompt_prefix = prompt_prefix
        self.vlm_dim = int(model.config.text_config.hidden_size)
        self.image_token_id = int(model.config.image_token_id)
        self.merge_size = int(image_processor.merge_size)
        self.calls = 0

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, **kwargs: Any
    ) -> Qwen3VLFeatureExtractor:
        """Load a Qwen3-VL folder (e.g. Qwen3-VL-2B-Instruct): model, tokenizer, image processor, chat template."""
        from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in Qwen3-VL folder {path}")
        logger.info("loading Qwen3-VL from %s", path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
        chat_template = getattr(tokenizer, "chat_template", None)
        # Hub Qwen3-VL folders keep the template beside the processor, not in the tokenizer.
        if chat_template is None and (path / "chat_template.jinja").is_file():
            chat_template = (path / "chat_template.jinja").read_text()
        if chat_template is None and (path / "chat_template.json").is_file():
            chat_template = json.loads((path / "chat_template.json").read_text())["chat_template"]
        model = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=dtype)
        return cls(model, tokenizer, image_processor, device, dtype, chat_template, **kwargs)

    def build_prompt(self, instruction: str) -> str:
        """The chat-templated user message: text first, then one image placeholder."""
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": self.prompt_prefix + instruction},
                    {"type": "image"},
                ],
            }
        ]
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=False
        )

    @torch.no_grad()
    def extract(self, instructions: Sequence[str], images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the LM once on B (instruction, composite) pairs.

        Args:
            instructions: B strings.
            images: B uint8 RGB composites [H, W, 3].
        Returns:
            hidden [B, L, vlm_dim] float32 (right-padded), mask [B, L] bool (True = real token).
        """
        instructions = _check_instructions(instructions)
        if len(images) != len(instructions):
            raise ValueError(f"expected one image per instruction ({len(instructions)}), got {len(images)}")
        for index, image in enumerate(images):
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                got = (image.dtype, image.shape) if isinstance(image, np.ndarray) else type(image).__name__
                raise ValueError(f"images[{index}]: expected uint8 [H, W, 3], got {got}")
        vision = self.image_processor(images=list(images), return_tensors="pt")
        grid_thw = vision["image_grid_thw"]
        prompts = []
        for index, instruction in enumerate(instructions):
            # Expand the single placeholder to one token per merged patch, as Qwen3VLProcessor does.
            num_image_tokens = int(grid_thw[index].prod()) // self.merge_size**2
            prompts.append(self.build_prompt(instruction).replace(IMAGE_PAD_TOKEN, IMAGE_PAD_TOKEN * num_image_tokens))
        tokens = self.tokenizer(prompts, padding=True, padding_side="right", return_tensors="pt")
        input_ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device).bool()
        outputs = self.model.model(
            input_ids=input_ids,
            attention_mask=mask.long(),
            pixel_values=vision["pixel_values"].to(self.device, self.dtype),
            image_grid_thw=grid_thw.to(self.device),
            mm_token_type_ids=(input_ids == self.image_token_id).long(),
            output_hidden_states=True,
        )
        self.calls += 1
        return outputs.hidden_states[-1].float(), mask


# --------------------------------------------------------------------------------------
# Tiny real encoders (tests, CPU presets, random-weight benchmarks)
# --------------------------------------------------------------------------------------


def build_byte_tokenizer(pad_token: str, eos_token: str, extra_special_tokens: Sequence[str] = ()) -> Any:
    """A byte-level tokenizer (256 byte symbols, no merges) built offline.

    It tokenizes any UTF-8 text; it stands in for the umT5 SentencePiece and Qwen BPE
    vocabularies in tiny encoders, which have no pretrained embeddings to match anyway.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={symbol: index for index, symbol in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys([pad_token, eos_token, *extra_special_tokens]))
    tokenizer.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=pad_token, eos_token=eos_token)


def build_tiny_umt5(
    text_dim: int, directory: str | Path | None = None, num_layers: int = 1, seed: int = 0
) -> tuple[Any, Any]:
    """A randomly initialised `UMT5EncoderModel` of width `text_dim` with a byte tokenizer.

    Saved with save_pretrained to `directory` when given (load it with
    `UMT5TextEncoder.from_pretrained`). The tokenizer appends </s> like umT5's.
    """
    from tokenizers import processors
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_byte_tokenizer(pad_token="<pad>", eos_token="</s>")
    eos_id = tokenizer.convert_tokens_to_ids("</s>")
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
    )
    heads = max(1, text_dim // 64)  # umT5-XXL: 64 heads of 64
    if text_dim % heads:
        heads = 1
    config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=text_dim,
        d_kv=text_dim // heads,
        d_ff=2 * text_dim,
        num_layers=num_layers,
        num_heads=heads,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_id,
        dropout_rate=0.0,
        is_encoder_decoder=False,
    )
    torch.manual_seed(seed)
    model = UMT5EncoderModel(config).eval()
    if directory is not None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return model, tokenizer


def build_tiny_qwen3_vl(
    vlm_dim: int, directory: str | Path | None = None, num_layers: int = 1, seed: int = 0, patch_size: int = 8
) -> tuple[Any, Any, Any]:
    """A randomly initialised Qwen3-VL (real classes, tiny sizes) with a byte tokenizer and image processor.

    Text model `vlm_dim` wide; a 1-block vision tower with `patch_size` patches and
    2x2 merging (a 32x32 composite gives 4 image tokens). Saved to `directory` when given.
    Returns (model, tokenizer, image_processor).
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = build_byte_tokenizer("<|endoftext|>", "<|im_end|>", QWEN_SPECIAL_TOKENS)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch_size,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=(2 * patch_size) ** 2,
        max_pixels=(32 * patch_size) ** 2,
    )
    heads = max(2, vlm_dim // 128)  # Qwen3-VL-2B: 16 heads of 128
    if vlm_dim % heads or (vlm_dim // heads) % 2:
        raise ValueError(f"vlm_dim must split into {heads} heads of even size, got {vlm_dim}")
    head_dim = vlm_dim // heads
    # mrope_section splits head_dim/2 rotary frequencies over (t, h, w).
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen3VLConfig(
        text_config=dict(
            hidden_size=vlm_dim,
            intermediate_size=2 * vlm_dim,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            num_key_value_heads=1,
            head_dim=head_dim,
            vocab_size=len(tokenizer),
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=32,
            num_heads=2,
            out_hidden_size=vlm_dim,
            patch_size=patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
            deepstack_visual_indexes=[0],
            num_position_embeddings=1024,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_PAD_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    if directory is not None:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        image_processor.save_pretrained(directory)
    return model, tokenizer, image_processor
