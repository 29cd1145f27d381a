# Copyright 2026 The uniaudio2 contributors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""UniAudio 2.0 language model configuration."""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters
from transformers.utils import logging


logger = logging.get_logger(__name__)


def _llama3_rope_parameters() -> dict:
    """RoPE settings of Llama 3.2 (base 500000 with the Llama-3 frequency scaling), shared by every UniAudio 2.0 stack."""
    return {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


STACK_SHAPE_FIELDS = ("num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size")


class _Shapes:
    def __init__(self, values: dict):
        self.__dict__.update(values)


def _check_attention_shapes(config, prefix: str):
    if config.num_attention_heads <= 0 or config.num_key_value_heads <= 0:
        raise ValueError(f"{prefix}: attention head counts must be positive.")
    if config.num_attention_heads % config.num_key_value_heads != 0:
        raise ValueError(
            f"{prefix}: `num_attention_heads` ({config.num_attention_heads}) must be a multiple of "
            f"`num_key_value_heads` ({config.num_key_value_heads}) for grouped-query attention."
        )
    if config.head_dim <= 0 or config.head_dim % 2 != 0:
        raise ValueError(f"{prefix}: `head_dim` must be a positive even number (rotary embedding), got {config.head_dim}.")


@strict
class UniAudio2DepthDecoderConfig(PreTrainedConfig):
    r"""
    Configuration of the UniAudio 2.0 *depth decoder*: a small causal Llama stack that runs over the 8 positions of one
    audio frame (position 0 is the projected frame hidden state of the language model, position `k` the embedding of
    codebook `k - 1`) and predicts the codebooks of that frame one after the other.

    Args:
        hidden_size (`int`, *optional*, defaults to 2048):
            Width of the depth decoder.
        intermediate_size (`int`, *optional*, defaults to 8192):
            Width of the SwiGLU feed-forward layers.
        num_hidden_layers (`int`, *optional*, defaults to 4):
            Number of decoder layers.
        num_attention_heads (`int`, *optional*, defaults to 32):
            Number of attention heads.
        num_key_value_heads (`int`, *optional*, defaults to 8):
            Number of key/value heads (grouped-query attention).
        head_dim (`int`, *optional*, defaults to 64):
            Dimension of each attention head.
        hidden_act (`str`, *optional*, defaults to `"silu"`):
            Activation of the gated feed-forward layers.
        max_position_embeddings (`int`, *optional*, defaults to 131072):
            Longest sequence the rotary embedding is meant for (the decoder only uses one position per codebook).
        rms_norm_eps (`float`, *optional*, defaults to 1e-05):
            Epsilon of the RMS normalisation layers.
        rope_parameters (`dict`, *optional*):
            Rotary embedding parameters. Defaults to the Llama-3 scaled RoPE used by the released model.
        attention_bias (`bool`, *optional*, defaults to `False`):
            Whether the attention projections have a bias.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention probabilities.
        mlp_bias (`bool`, *optional*, defaults to `False`):
            Whether the feed-forward projections have a bias.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of the linear layers.
        backbone_hidden_size (`int`, *optional*, defaults to 3072):
            Width of the language model whose hidden states and audio embeddings the decoder reads (kept in sync by
            [`UniAudio2Config`]).
        num_codebooks (`int`, *optional*, defaults to 8):
            Number of codebooks predicted per frame (kept in sync by [`UniAudio2Config`]).
        audio_vocab_size (`int`, *optional*, defaults to 12300):
            Size of each codebook's vocabulary (kept in sync by [`UniAudio2Config`]).
    """

    model_type = "uniaudio2_depth_decoder"
    base_config_key = "depth_decoder_config"

    hidden_size: int = 2048
    intermediate_size: int = 8192
    num_hidden_layers: int = 4
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 8
    head_dim: int | None = 64
    hidden_act: str = "silu"
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    rope_parameters: RopeParameters | dict | None = None
    attention_bias: bool = False
    attention_dropout: float | int = 0.0
    mlp_bias: bool = False
    initializer_range: float = 0.02
    backbone_hidden_size: int = 3072
    num_codebooks: int = 8
    audio_vocab_size: int = 12300

    def __post_init__(self, **kwargs):
        kwargs.pop("tie_word_embeddings", None)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.rope_parameters is None:
            self.rope_parameters = _llama3_rope_parameters()
        super().__post_init__(**kwargs)
        # Run the checks here too so that an inconsistent config raises a plain `ValueError` at construction.
        self.validate_architecture()

    def validate_architecture(self):
        super().validate_architecture()
        if self.num_hidden_layers < 1:
            raise ValueError("UniAudio2DepthDecoderConfig: `num_hidden_layers` must be at least 1.")
        _check_attention_shapes(self, "UniAudio2DepthDecoderConfig")


@strict
class UniAudio2Config(PreTrainedConfig):
    r"""
    Configuration of [`UniAudio2ForConditionalGeneration`], the UniAudio 2.0 unified text + audio language model.

    The model reads a *grid* of rows. A text row carries one text token, an audio row carries `num_codebooks` codes
    (one per codebook). Audio rows of a clip come in two consecutive segments that share the same codebook columns:
    first the *reasoning* segment (5 Hz codec tokens, ids `[0, reasoning_vocab_size)`), then the *reconstruction*
    segment (12.5 Hz codec tokens, stored in the grid as `code + reasoning_vocab_size`). Each segment is framed by BOS
    and EOS frames (`num_codebooks` copies of the special id).

    The stack is: `num_understanding_layers` audio-understanding layers (run on audio rows) → `num_backbone_layers`
    Llama-3.2 backbone layers (all rows) → `num_generation_layers` audio-generation layers (audio rows) → text head,
    plus the depth decoder described by `depth_decoder_config` for the codebooks of the next audio frame. The defaults
    reproduce the released 3B model (Llama-3.2-3B backbone).

    Args:
        vocab_size (`int`, *optional*, defaults to 128256):
            Text vocabulary size (Llama-3 tokenizer, padded).
        hidden_size (`int`, *optional*, defaults to 3072):
            Width of the understanding, backbone and generation layers.
        intermediate_size (`int`, *optional*, defaults to 8192):
            Width of the SwiGLU feed-forward layers.
        num_understanding_layers (`int`, *optional*, defaults to 3):
            Number of audio-understanding layers below the backbone.
        num_backbone_layers (`int`, *optional*, defaults to 28):
            Number of Llama backbone layers.
        num_generation_layers (`int`, *optional*, defaults to 2):
            Number of audio-generation layers above the backbone.
        num_hidden_layers (`int`, *optional*):
            Total number of decoder layers of the three stacks (`understanding + backbone + generation`): the layers
            of the KV cache, the entries of `attentions`, and one less than the entries of `hidden_states` (see
            `UniAudio2ModelOutputWithPast`). Derived when omitted; an inconsistent value raises an error.
        num_attention_heads (`int`, *optional*, defaults to 24):
            Number of attention heads.
        num_key_value_heads (`int`, *optional*, defaults to 8):
            Number of key/value heads (grouped-query attention).
        head_dim (`int`, *optional*, defaults to 128):
            Dimension of each attention head.
        hidden_act (`str`, *optional*, defaults to `"silu"`):
            Activation of the gated feed-forward layers.
        max_position_embeddings (`int`, *optional*, defaults to 131072):
            Longest grid (in rows) the rotary embedding is meant for.
        rms_norm_eps (`float`, *optional*, defaults to 1e-05):
            Epsilon of the RMS normalisation layers.
        rope_parameters (`dict`, *optional*):
            Rotary embedding parameters, shared by the understanding, backbone and generation layers. Defaults to
            Llama-3 scaling with base 500000, factor 32, low/high frequency factors 1/4 and original length 8192.
        attention_bias (`bool`, *optional*, defaults to `False`):
            Whether the attention projections have a bias.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention probabilities.
        mlp_bias (`bool`, *optional*, defaults to `False`):
            Whether the feed-forward projections have a bias.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser.
        use_cache (`bool`, *optional*, defaults to `True`):
            Whether the model returns a KV cache.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Whether the text head shares the text embedding matrix. The released model keeps them separate.
        num_codebooks (`int`, *optional*, defaults to 8):
            Number of codebook columns of an audio row.
        reasoning_vocab_size (`int`, *optional*, defaults to 4100):
            Size of the reasoning block of each codebook's vocabulary (4096 codes plus special ids).
        reconstruction_vocab_size (`int`, *optional*, defaults to 8200):
            Size of the reconstruction block of each codebook's vocabulary (8192 codes plus special ids).
        reasoning_bos_token_id (`int`, *optional*, defaults to 4096):
            Reasoning-segment BOS id (stored as is).
        reasoning_eos_token_id (`int`, *optional*, defaults to 4097):
            Reasoning-segment EOS id; a frame of `num_codebooks` of them ends the reasoning phase of generation.
        reasoning_pad_token_id (`int`, *optional*, defaults to 4099):
            Reasoning padding id (used by classifier-free-guidance dropout in training).
        reconstruction_bos_token_id (`int`, *optional*, defaults to 12293):
            Reconstruction-segment BOS id **as stored in the grid** (raw id + `reasoning_vocab_size`).
        reconstruction_eos_token_id (`int`, *optional*, defaults to 12292):
            Reconstruction-segment EOS id as stored in the grid; a frame of them ends audio generation.
        reconstruction_pad_token_id (`int`, *optional*, defaults to 12294):
            Reconstruction padding id as stored in the grid (batch padding of audio columns).
        bos_token_id (`int`, *optional*, defaults to 128000):
            Text BOS id (`<|begin_of_text|>`).
        eos_token_id (`int` or `list[int]`, *optional*, defaults to 128001):
            Text EOS id (`<|end_of_text|>`), the stop id of text generation.
        pad_token_id (`int`, *optional*, defaults to 128020):
            Text padding id (`<text_pad_token>`). Like `bos_token_id` and `eos_token_id`, a value outside the text
            vocabulary only warns, as in the library.
        text_pad_token_id (`int`, *optional*, defaults to 128020):
            Text id that replaces every prompt token in the unconditional branch of classifier-free guidance (and in
            the training-time condition dropout); it must lie in the text vocabulary.
        text_loss_weight (`float`, *optional*, defaults to 1.6):
            Weight of the text loss in the total loss.
        audio_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the codebook loss in the total loss.
        codebook_loss_weights (`list[float]`, *optional*, defaults to `[2, 2, 2, 1, 1, 1, 1, 1]`):
            Per-codebook weights; the codebook loss is `sum_k w_k * loss_k / num_codebooks`.
        audio_loss_normalization (`str`, *optional*, defaults to `"all_frames"`):
            How each codebook's summed cross-entropy is normalised. `"all_frames"` divides by the number of audio
            frames the depth decoder ran on (including input-only audio whose loss is masked), as the original
            training code does; `"labeled_frames"` divides by the number of frames that carry a label for that codebook.
        understanding_layer_config (`dict`, *optional*):
            Attention / feed-forward shapes of the understanding layers where they differ from the backbone's (keys
            among `num_attention_heads`, `num_key_value_heads`, `head_dim`, `intermediate_size`). The released model
            uses the backbone's shapes (`None`).
        generation_layer_config (`dict`, *optional*):
            The same for the generation layers.
        depth_decoder_config (`UniAudio2DepthDecoderConfig` or `dict`, *optional*):
            Configuration of the depth decoder.
    """

    model_type = "uniaudio2"
    sub_configs_defaults = {"depth_decoder_config": UniAudio2DepthDecoderConfig}
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    vocab_size: int = 128256
    hidden_size: int = 3072
    intermediate_size: int = 8192
    num_understanding_layers: int = 3
    num_backbone_layers: int = 28
    num_generation_layers: int = 2
    num_hidden_layers: int | None = None
    num_attention_heads: int = 24
    num_key_value_heads: int | None = 8
    head_dim: int | None = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    rope_parameters: RopeParameters | dict | None = None
    attention_bias: bool = False
    attention_dropout: float | int = 0.0
    mlp_bias: bool = False
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = False
    num_codebooks: int = 8
    reasoning_vocab_size: int = 4100
    reconstruction_vocab_size: int = 8200
    reasoning_bos_token_id: int = 4096
    reasoning_eos_token_id: int = 4097
    reasoning_pad_token_id: int = 4099
    reconstruction_bos_token_id: int = 4100 + 8193
    reconstruction_eos_token_id: int = 4100 + 8192
    reconstruction_pad_token_id: int = 4100 + 8194
    bos_token_id: int | None = 128000
    eos_token_id: int | list[int] | None = 128001
    pad_token_id: int | None = 128020
    text_pad_token_id: int = 128020
    text_loss_weight: float = 1.6
    audio_loss_weight: float = 1.0
    codebook_loss_weights: list[float] | None = None
    audio_loss_normalization: str = "all_frames"
    understanding_layer_config: dict | None = None
    generation_layer_config: dict | None = None
    depth_decoder_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.rope_parameters is None:
            self.rope_parameters = _llama3_rope_parameters()
        expected_layers = self.num_understanding_layers + self.num_backbone_layers + self.num_generation_layers
        if self.num_hidden_layers is None:
            self.num_hidden_layers = expected_layers
        if self.codebook_loss_weights is None:
            self.codebook_loss_weights = [2.0, 2.0, 2.0] + [1.0] * (self.num_codebooks - 3)
        super().__post_init__(**kwargs)
        # The depth decoder reads the language model's hidden states and audio embeddings.
        self.depth_decoder_config.backbone_hidden_size = self.hidden_size
        self.depth_decoder_config.num_codebooks = self.num_codebooks
        self.depth_decoder_config.audio_vocab_size = self.audio_vocab_size
        # Run the checks here too so that an inconsistent config raises a plain `ValueError` at construction.
        self.validate_architecture()

    def stack_shapes(self, stack: str) -> dict:
        """
        Attention / feed-forward shapes of one stack (`"understanding"`, `"backbone"` or `"generation"`): the
        backbone's, updated with the stack's overrides.
        """
        shapes = {name: getattr(self, name) for name in STACK_SHAPE_FIELDS}
        overrides = {"understanding": self.understanding_layer_config, "generation": self.generation_layer_config,
                     "backbone": None}[stack]
        shapes.update(overrides or {})
        return shapes

    @property
    def audio_vocab_size(self) -> int:
        """Size of each codebook's vocabulary (reasoning block followed by the reconstruction block)."""
        return self.reasoning_vocab_size + self.reconstruction_vocab_size

    def validate_token_ids(self):
        """
        Warn, as the library does, about a text special id (`bos_token_id`, `eos_token_id` (each entry of a list),
        `pad_token_id`) outside the text vocabulary: configs on the Hub carry such ids (e.g. `pad_token_id=-1`) and
        the model runs with them. The `reasoning_*` / `reconstruction_*` ids index the audio vocabularies instead and,
        like `text_pad_token_id`, are checked (raising) by `validate_architecture`.
        """
        for name in self:
            value = getattr(self, name)
            if name.startswith(("reasoning_", "reconstruction_")) or not name.endswith("_token_id"):
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, int) and not 0 <= item < self.vocab_size:
                    logger.warning_once(
                        f"Model config: {name} must be `None` or an integer within the vocabulary (between 0 and "
                        f"{self.vocab_size - 1}), got {item}. This may result in unexpected behavior."
                    )

    def validate_architecture(self):
        super().validate_architecture()
        for name in ("num_understanding_layers", "num_backbone_layers", "num_generation_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"UniAudio2Config: `{name}` must be >= 0, got {getattr(self, name)}.")
        if self.num_backbone_layers < 1:
            raise ValueError("UniAudio2Config: `num_backbone_layers` must be at least 1.")
        expected_layers = self.num_understanding_layers + self.num_backbone_layers + self.num_generation_layers
        if self.num_hidden_layers != expected_layers:
            raise ValueError(
                f"UniAudio2Config: `num_hidden_layers` ({self.num_hidden_layers}) must equal num_understanding_layers "
                f"+ num_backbone_layers + num_generation_layers ({expected_layers})."
            )
        _check_attention_shapes(self, "UniAudio2Config")
        for stack in ("understanding", "generation"):
            overrides = getattr(self, f"{stack}_layer_config") or {}
            unknown = sorted(set(overrides) - set(STACK_SHAPE_FIELDS))
            if unknown:
                raise ValueError(
                    f"UniAudio2Config: `{stack}_layer_config` may only override {list(STACK_SHAPE_FIELDS)}, got {unknown}."
                )
            _check_attention_shapes(_Shapes(self.stack_shapes(stack)), f"UniAudio2Config ({stack} layers)")
        if self.num_codebooks < 1:
            raise ValueError("UniAudio2Config: `num_codebooks` must be at least 1.")
        if self.reasoning_vocab_size < 1 or self.reconstruction_vocab_size < 1:
            raise ValueError("UniAudio2Config: the reasoning and reconstruction vocabulary sizes must be positive.")
        for name in ("reasoning_bos_token_id", "reasoning_eos_token_id", "reasoning_pad_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.reasoning_vocab_size:
                raise ValueError(
                    f"UniAudio2Config: `{name}` ({value}) must lie in the reasoning range "
                    f"[0, {self.reasoning_vocab_size})."
                )
        for name in ("reconstruction_bos_token_id", "reconstruction_eos_token_id", "reconstruction_pad_token_id"):
            value = getattr(self, name)
            if not self.reasoning_vocab_size <= value < self.audio_vocab_size:
                raise ValueError(
                    f"UniAudio2Config: `{name}` ({value}) is stored in the grid with the reasoning offset and must lie "
                    f"in [{self.reasoning_vocab_size}, {self.audio_vocab_size})."
                )
        if self.reasoning_bos_token_id == self.reasoning_eos_token_id:
            raise ValueError("UniAudio2Config: reasoning BOS and EOS ids must differ.")
        if self.reconstruction_bos_token_id == self.reconstruction_eos_token_id:
            raise ValueError("UniAudio2Config: reconstruction BOS and EOS ids must differ.")
        # The model itself embeds `text_pad_token_id` (the unconditional branch of guidance, condition dropout): out of
        # the vocabulary it would fail there. bos / eos / pad ids only warn, as in the library (`validate_token_ids`).
        if not 0 <= self.text_pad_token_id < self.vocab_size:
            raise ValueError(
                f"UniAudio2Config: `text_pad_token_id` ({self.text_pad_token_id}) must lie in [0, "
                f"vocab_size={self.vocab_size}): the model embeds it in the unconditional branch of guidance."
            )
        if len(self.codebook_loss_weights) != self.num_codebooks:
            raise ValueError(
                f"UniAudio2Config: `codebook_loss_weights` has {len(self.codebook_loss_weights)} entries, expected one "
                f"per codebook ({self.num_codebooks})."
            )
        if self.audio_loss_normalization not in ("all_frames", "labeled_frames"):
            raise ValueError(
                "UniAudio2Config: `audio_loss_normalization` must be 'all_frames' or 'labeled_frames', got "
                f"{self.audio_loss_normalization!r}."
            )


UniAudio2Config.register_for_auto_class()

__all__ = ["UniAudio2Config", "UniAudio2DepthDecoderConfig"]
