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
"""PyTorch UniAudio 2.0 language model (text + reasoning/reconstruction audio tokens)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.output_capturing import capture_outputs

from .configuration_uniaudio2 import UniAudio2Config, UniAudio2DepthDecoderConfig
from .generation_uniaudio2 import UniAudio2GenerationMixin


logger = logging.get_logger(__name__)

_HIDDEN_STATES_ORDER = """The hidden states of every decoder layer of the three stacks, `config.num_hidden_layers + 1`
            entries of shape `(batch_size, sequence_length, hidden_size)`, in the order the stacks run: entry 0 is the
            input of the first decoder layer (the summed audio embeddings on audio rows and zeros elsewhere, the input
            of the understanding stack; the backbone input when there are no understanding layers), entries
            `1 .. num_understanding_layers` the outputs of the understanding layers, the next `num_backbone_layers`
            those of the backbone layers, the last `num_generation_layers` those of the generation layers. Layer
            outputs are taken before the stacks' final norms, except the last entry, which is `last_hidden_state`
            (as for Llama, whose last entry is its normalised output)."""


@dataclass
class UniAudio2ModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    Output of [`UniAudio2Model`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Mixed hidden state fed to the heads: generation-layer output on audio rows, backbone output on text rows,
            zeros on padding rows.
        cache (`Cache`, *optional*):
            KV cache of the understanding, backbone and generation layers (one cache layer per decoder layer); also
            readable as `past_key_values`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            {hidden_states}
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            Attention probabilities `(batch_size, num_heads, query_length, key_length)` of every decoder layer, in the
            order of `hidden_states[1:]` (`config.num_hidden_layers` entries; recorded by the `eager` attention only).
    """


@dataclass
class UniAudio2DepthDecoderOutput(ModelOutput):
    r"""
    Output of [`UniAudio2DepthDecoder`].

    Args:
        logits (`torch.FloatTensor` of shape `(num_frames, length, audio_vocab_size)`):
            Logits of the codebooks at the positions of the call (position `k` predicts codebook `k`).
        last_hidden_state (`torch.FloatTensor` of shape `(num_frames, length, hidden_size)`):
            Normalised output of the last depth-decoder layer.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            Input of the first layer (the projected inputs) and the output of every layer,
            `config.num_hidden_layers + 1` entries; the last one is `last_hidden_state`.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            Attention probabilities of every layer (`eager` attention only).
        cache (`Cache`, *optional*):
            The depth-decoder KV cache given to the call (with `use_cache=True`); also readable as `past_key_values`.
    """

    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cache: Cache | None = None


@dataclass
class UniAudio2CausalLMOutputWithPast(ModelOutput):
    r"""
    Output of [`UniAudio2ForConditionalGeneration`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels`, `shift_labels` or `audio_labels`
        is given):
            `text_loss_weight * text_loss + audio_loss_weight * audio_loss`.
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
            Text logits for the next row, at every row (exactly zero on padding rows).
        cache (`Cache`, *optional*):
            KV cache of the understanding, backbone and generation layers; also readable as `past_key_values`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            {hidden_states}
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            Attention probabilities of every decoder layer of the three stacks (see [`UniAudio2ModelOutputWithPast`]).
        text_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Next-token cross-entropy summed over the labelled text positions, divided by their number (or by the
            text count of `num_items_in_batch`).
        audio_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Weighted codebook loss `sum_k w_k * codebook_losses[k] / num_codebooks`.
        codebook_losses (`torch.FloatTensor` of shape `(num_codebooks,)`, *optional*):
            Unweighted cross-entropy of each codebook.
        audio_logits (`torch.FloatTensor` of shape `(num_frames, num_codebooks, audio_vocab_size)`, *optional*):
            Teacher-forced depth-decoder logits of every audio frame that follows a row of the input, in row-major
            (batch, time) order; `audio_logits_positions` tells which row each frame was predicted from.
        audio_logits_positions (`torch.LongTensor` of shape `(num_frames, 2)`, *optional*):
            `(batch index, row index)` of the row each `audio_logits` frame is predicted from (the frame itself is the
            row after it).
        depth_decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            With `output_hidden_states=True` when the depth decoder runs (`audio_labels` / `output_audio_logits`):
            its hidden states over the teacher-forced frames (see [`UniAudio2DepthDecoderOutput`]).
        depth_decoder_attentions (`tuple(torch.FloatTensor)`, *optional*):
            The same for its attention probabilities, with `output_attentions=True`.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
            The mixed hidden state the heads read (see [`UniAudio2ModelOutputWithPast`]).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    text_loss: torch.FloatTensor | None = None
    audio_loss: torch.FloatTensor | None = None
    codebook_losses: torch.FloatTensor | None = None
    audio_logits: torch.FloatTensor | None = None
    audio_logits_positions: torch.LongTensor | None = None
    depth_decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    depth_decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    last_hidden_state: torch.FloatTensor | None = None


for _output_class in (UniAudio2ModelOutputWithPast, UniAudio2CausalLMOutputWithPast):
    _output_class.__doc__ = _output_class.__doc__.replace("{hidden_states}", _HIDDEN_STATES_ORDER)


def _pipeline_classes() -> dict:
    """
    The pipelines saved with the model, by task name (this relative import also makes `save_pretrained` copy their
    file). The library's standard names for speech, `automatic-speech-recognition` and `text-to-speech`, reach them too.
    """
    from .pipeline_uniaudio2 import UniAudio2AudioToTextPipeline, UniAudio2TextToAudioPipeline

    return {
        "audio-to-text": UniAudio2AudioToTextPipeline,
        "automatic-speech-recognition": UniAudio2AudioToTextPipeline,
        "text-to-audio": UniAudio2TextToAudioPipeline,
        "text-to-speech": UniAudio2TextToAudioPipeline,
    }


class UniAudio2PreTrainedModel(PreTrainedModel):
    config: UniAudio2Config
    base_model_prefix = "model"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The forward has no data-dependent Python branch or host read; the teacher-forced audio path of training
    # (`audio_labels` / `output_audio_logits`) and the train-mode text loss gather labelled rows, whose number
    # depends on the data (a graph break under `fullgraph=True`; `torch.export` needs no labels).
    _can_compile_fullgraph = True
    # Each stack's layers are Llama layers: their outputs are the hidden states, their attention modules the
    # attention probabilities (see `UniAudio2ModelOutputWithPast` for the order).
    _can_record_outputs = {"hidden_states": LlamaDecoderLayer, "attentions": LlamaAttention}

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, UniAudio2DepthDecoder):
            init.normal_(module.codebooks_head, mean=0.0, std=self.config.initializer_range)


class UniAudio2RotaryEmbedding(LlamaRotaryEmbedding):
    """Llama rotary embedding whose frequency tables stay float32 when the model is cast (e.g. `.to(torch.bfloat16)`)."""

    def _apply(self, fn, recurse=True):
        tables = {name: getattr(self, name) for name in ("inv_freq", "original_inv_freq")}
        super()._apply(fn, recurse)
        for name, table in tables.items():
            moved = getattr(self, name)
            if table.dtype == torch.float32 and moved.dtype != torch.float32 and not table.is_meta:
                setattr(self, name, table.to(moved.device))
        return self


def _masked(hidden_states: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`hidden_states` with the rows where `rows` (`(batch, seq)`, bool) is False set to zero, on their own device."""
    return hidden_states * rows.unsqueeze(-1).to(device=hidden_states.device, dtype=hidden_states.dtype)


class _StackConfigView:
    """
    The model config seen by the layers of one stack: the stack's attention / feed-forward shapes, everything else
    (including the attention implementation, so that `set_attn_implementation` keeps applying) read from the model
    config itself.
    """

    def __init__(self, config: UniAudio2Config, shapes: dict):
        self.__dict__["_config"] = config
        self.__dict__["_shapes"] = shapes

    def __getattr__(self, name):
        shapes = self.__dict__["_shapes"]
        return shapes[name] if name in shapes else getattr(self.__dict__["_config"], name)


def _run_layers(layers, hidden_states, attention_mask, position_ids, position_embeddings, cache, use_cache, **kwargs):
    for layer in layers:
        hidden_states = layer(
            hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            position_embeddings=position_embeddings,
            use_cache=use_cache,
            cache=cache,
            **kwargs,
        )
    return hidden_states


class UniAudio2Model(UniAudio2PreTrainedModel):
    """
    The UniAudio 2.0 stack without heads: audio-understanding layers, Llama backbone and audio-generation layers.

    Every row of the grid is embedded as follows: an audio row is the sum of its codebook embeddings (codebook `c`
    reads row `c * audio_vocab_size + code` of `embed_audio_tokens`), a text row is its text embedding. The
    understanding layers run causally over the whole sequence with zeros at non-audio rows; the backbone reads the
    understanding output on audio rows and the text embedding on text rows (zeros on padding rows); the generation
    layers run over the backbone output masked to audio rows. The returned hidden state is the generation output on
    audio rows and the backbone output on text rows. All three stacks share the positions, the causal mask and one KV
    cache (understanding layers first, then the backbone, then the generation layers).
    """

    def __init__(self, config: UniAudio2Config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_audio_tokens = nn.Embedding(config.num_codebooks * config.audio_vocab_size, config.hidden_size)
        first_backbone = config.num_understanding_layers
        first_generation = first_backbone + config.num_backbone_layers
        understanding_config = self._stack_config(config, "understanding")
        generation_config = self._stack_config(config, "generation")
        self.understanding_layers = nn.ModuleList(
            [LlamaDecoderLayer(understanding_config, layer_idx) for layer_idx in range(first_backbone)]
        )
        self.understanding_norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.layers = nn.ModuleList(
            [LlamaDecoderLayer(config, layer_idx) for layer_idx in range(first_backbone, first_generation)]
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.generation_layers = nn.ModuleList(
            [
                LlamaDecoderLayer(generation_config, layer_idx)
                for layer_idx in range(first_generation, config.num_hidden_layers)
            ]
        )
        self.generation_norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = UniAudio2RotaryEmbedding(config=config)
        # Stacks whose head dimension differs from the backbone's need their own rotary tables.
        self.understanding_rotary_emb = (
            UniAudio2RotaryEmbedding(config=understanding_config) if understanding_config is not config else None
        )
        self.generation_rotary_emb = (
            UniAudio2RotaryEmbedding(config=generation_config) if generation_config is not config else None
        )
        self.gradient_checkpointing = False
        self.post_init()

    @staticmethod
    def _stack_config(config: UniAudio2Config, stack: str):
        shapes = config.stack_shapes(stack)
        if shapes["head_dim"] == config.head_dim and shapes == config.stack_shapes("backbone"):
            return config
        return _StackConfigView(config, shapes)

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def embed_audio(self, audio_codes: torch.LongTensor) -> torch.Tensor:
        """Embeddings of codes `(..., num_codebooks)` → `(..., num_codebooks, hidden_size)` (one block per codebook)."""
        offsets = torch.arange(self.config.num_codebooks, device=audio_codes.device) * self.config.audio_vocab_size
        return self.embed_audio_tokens(audio_codes + offsets)

    def check_inputs(
        self,
        input_ids: torch.LongTensor | None = None,
        audio_codes: torch.LongTensor | None = None,
        audio_codes_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ):
        """
        Raise a `ValueError` if a text row holds an id outside the text vocabulary or an audio row a code outside the
        audio vocabulary. This reads the values (a host sync on an accelerator), so `forward` does not call it:
        `generate` checks its prompt once, before decoding; call it yourself on hand-built grids.
        """
        if input_ids is None and audio_codes is None:
            return
        reference = input_ids if input_ids is not None else audio_codes[..., 0]
        rows = torch.ones_like(reference, dtype=torch.bool)
        if attention_mask is not None and attention_mask.ndim == 2:
            rows = attention_mask[:, -reference.shape[1] :].bool().to(reference.device)
        audio_rows = torch.zeros_like(rows)
        if audio_codes is not None and audio_codes_mask is not None:
            audio_rows = audio_codes_mask.bool().to(rows.device) & rows
            invalid = ((audio_codes < 0) | (audio_codes >= self.config.audio_vocab_size)).any(-1)
            if bool((invalid & audio_rows).any()):
                raise ValueError(
                    f"`audio_codes` on audio rows must lie in [0, {self.config.audio_vocab_size}) "
                    "(reconstruction codes are stored with the reasoning offset)."
                )
        if input_ids is not None:
            invalid = (input_ids < 0) | (input_ids >= self.config.vocab_size)
            if bool((invalid & rows & ~audio_rows).any()):
                raise ValueError(f"`input_ids` on text rows must lie in [0, {self.config.vocab_size}).")

    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        audio_codes: torch.LongTensor | None = None,
        audio_codes_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> UniAudio2ModelOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Text column of the grid. Values on audio and padding rows are ignored.
            audio_codes (`torch.LongTensor` of shape `(batch_size, sequence_length, num_codebooks)`, *optional*):
                Codebook columns of the grid, with reconstruction ids stored as `code + reasoning_vocab_size`.
                Values on non-audio rows are ignored. Omit for text-only input.
            audio_codes_mask (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*):
                `True` on audio rows. Required with `audio_codes`.
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                1 for real rows, 0 for padding rows (a 4-D mask, as `generate` builds for a static cache, is used as
                the attention mask as is; padding rows are then not zeroed, which changes no output of a real row).
            position_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Row positions; derived from the cache length when omitted.
            cache (`Cache`, *optional*):
                KV cache from a previous call (`past_key_values` is accepted as a deprecated alias).
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
                Text-row embeddings to use instead of looking up `input_ids`.
            use_cache (`bool`, *optional*):
                Whether to return the KV cache (defaults to `config.use_cache` in eval mode, `False` in training).
            output_hidden_states, output_attentions (`bool`, *optional*):
                Record the hidden states / attention probabilities of every decoder layer (see
                [`UniAudio2ModelOutputWithPast`] for their order); `return_dict=False` returns a tuple.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of `input_ids` or `inputs_embeds`.")
        if inputs_embeds is None:
            batch_size, seq_len = input_ids.shape[:2]
            device = input_ids.device
        else:
            batch_size, seq_len = inputs_embeds.shape[:2]
            device = inputs_embeds.device
        if use_cache is None:
            # No cache by default in training: it is useless there, and it would keep packed sequences from getting
            # their block-diagonal mask.
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        if attention_mask is not None and attention_mask.ndim == 2:
            row_valid = attention_mask[:, -seq_len:].bool().to(device)
        else:
            row_valid = torch.ones(batch_size, seq_len, dtype=torch.bool, device=device)
        if audio_codes is not None:
            if audio_codes_mask is None:
                raise ValueError("`audio_codes_mask` (True on audio rows) is required together with `audio_codes`.")
            if audio_codes.shape[:2] != (batch_size, seq_len) or audio_codes.shape[-1] != self.config.num_codebooks:
                raise ValueError(
                    f"`audio_codes` must have shape (batch_size, sequence_length, {self.config.num_codebooks}) = "
                    f"({batch_size}, {seq_len}, {self.config.num_codebooks}), got {tuple(audio_codes.shape)}."
                )
            audio_rows = audio_codes_mask.bool().to(device) & row_valid
        else:
            audio_rows = torch.zeros(batch_size, seq_len, dtype=torch.bool, device=device)
        text_rows = row_valid & ~audio_rows

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(torch.where(text_rows, input_ids, 0))
        if audio_codes is not None:
            safe_codes = torch.where(audio_rows.unsqueeze(-1), audio_codes.to(device), 0)
            audio_embeds = _masked(self.embed_audio(safe_codes).sum(dim=2), audio_rows)
        else:
            audio_embeds = torch.zeros_like(inputs_embeds)

        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(seq_len, device=device).unsqueeze(0) + past_seen
        # Under a device map the stacks may live on different devices: each product below runs on the device of the
        # stack output it reads, the layers' hooks move their inputs.

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
        )
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids=position_ids)

        def stack_kwargs(rotary):
            embeddings = position_embeddings if rotary is None else rotary(inputs_embeds, position_ids=position_ids)
            return {
                "attention_mask": causal_mask,
                "position_ids": position_ids,
                "position_embeddings": embeddings,
                "cache": cache,
                "use_cache": use_cache,
                **kwargs,
            }

        understanding = _run_layers(
            self.understanding_layers, audio_embeds, **stack_kwargs(self.understanding_rotary_emb)
        )
        understanding = self.understanding_norm(understanding)
        backbone_input = _masked(understanding, audio_rows) + _masked(inputs_embeds.to(understanding.device), text_rows)
        backbone = self.norm(_run_layers(self.layers, backbone_input, **stack_kwargs(None)))
        generation = _run_layers(
            self.generation_layers, _masked(backbone, audio_rows), **stack_kwargs(self.generation_rotary_emb)
        )
        generation = self.generation_norm(generation)
        hidden_states = _masked(generation, audio_rows) + _masked(backbone.to(generation.device), text_rows)

        return UniAudio2ModelOutputWithPast(last_hidden_state=hidden_states, cache=cache if use_cache else None)


class UniAudio2DepthDecoder(UniAudio2PreTrainedModel):
    """
    Depth decoder: predicts the `num_codebooks` codes of one audio frame autoregressively.

    Position 0 reads the projected hidden state of the row before the frame, position `k >= 1` the projected
    embedding (from the language model's `embed_audio_tokens`) of codebook `k - 1` of the frame. The output at
    position `k` gives the logits of codebook `k` through `codebooks_head[k]`, a `(hidden_size, audio_vocab_size)`
    matrix per codebook.
    """

    config: UniAudio2DepthDecoderConfig
    base_model_prefix = "depth_decoder"

    def __init__(self, config: UniAudio2DepthDecoderConfig):
        super().__init__(config)
        self.num_codebooks = config.num_codebooks
        self.input_projection = nn.Linear(config.backbone_hidden_size, config.hidden_size, bias=False)
        self.layers = nn.ModuleList(
            [LlamaDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = UniAudio2RotaryEmbedding(config=config)
        self.codebooks_head = nn.Parameter(torch.empty(config.num_codebooks, config.hidden_size, config.audio_vocab_size))
        self.post_init()

    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    @capture_outputs
    def forward(
        self,
        inputs_embeds: torch.Tensor,
        cache: Cache | None = None,
        use_cache: bool = False,
        position_ids: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> UniAudio2DepthDecoderOutput:
        """
        Args:
            inputs_embeds (`torch.FloatTensor` of shape `(num_frames, length, backbone_hidden_size)`):
                Unprojected inputs of positions `past .. past + length - 1` (see the class docstring), `past` being
                the length of `cache`.
            cache (`Cache`, *optional*):
                Depth-decoder KV cache for incremental decoding within one frame.
            use_cache (`bool`, *optional*, defaults to `False`):
                Whether the layers write their keys and values to `cache`.
            position_ids (`torch.LongTensor` of shape `(1, length)`, *optional*):
                Positions of the inputs, which are also the codebooks they predict; `past .. past + length - 1` when
                omitted.
            output_hidden_states, output_attentions (`bool`, *optional*):
                Record every layer's hidden states / attention probabilities.

        Returns:
            [`UniAudio2DepthDecoderOutput`]: `logits` `(num_frames, length, audio_vocab_size)` of the codebooks at
            these positions first, then the normalised decoder output `last_hidden_state`.
        """
        length = inputs_embeds.shape[1]
        past = None
        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            # A Python int for the dynamic cache: the bound is checked without reading a tensor.
            if isinstance(past, int) and past + length > self.num_codebooks:
                raise ValueError(f"The depth decoder has {self.num_codebooks} positions, got {past + length}.")
            position_ids = (torch.arange(length, device=inputs_embeds.device) + past).unsqueeze(0)
        hidden_states = self.input_projection(inputs_embeds)
        # No position ids for the mask: every frame is one causal sequence, never a packed one.
        causal_mask = create_causal_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=None, position_ids=None, cache=cache
        )
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        hidden_states = _run_layers(
            self.layers,
            hidden_states,
            attention_mask=causal_mask,
            position_ids=position_ids,
            position_embeddings=position_embeddings,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = self.norm(hidden_states)
        # Codebook `k` is read at position `k`: a view of the heads for a known start, else gathered at the positions
        # (no host read).
        if isinstance(past, int):
            heads = self.codebooks_head[past : past + length]
        else:
            heads = self.codebooks_head[position_ids[0].to(self.codebooks_head.device)]
        heads = heads.to(hidden_states.dtype)
        logits = torch.einsum("nkd,kdv->nkv", hidden_states.to(heads.device), heads)
        return UniAudio2DepthDecoderOutput(
            logits=logits, last_hidden_state=hidden_states, cache=cache if use_cache else None
        )


class UniAudio2ForConditionalGeneration(UniAudio2PreTrainedModel, UniAudio2GenerationMixin):
    """
    UniAudio 2.0 with its text head and its depth decoder: audio understanding (ASR, captioning, audio QA) through
    `generate()` on the text stream, and audio generation (TTS, text-to-sound, text-to-music) through
    `generate(generation_mode="audio")`, reasoning frames first, then reconstruction frames.
    """

    _tied_weights_keys = None
    output_modalities = ("text", "audio")
    # `Trainer` passes `num_items_in_batch` (see `forward` for what it counts).
    accepts_loss_kwargs = True

    def __init__(self, config: UniAudio2Config):
        super().__init__(config)
        self.model = UniAudio2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.depth_decoder = UniAudio2DepthDecoder._from_config(config.depth_decoder_config)
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights, config and the modeling code (remote code), loadable with every `Auto` class listed below."""
        target = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        for auto_class in ("AutoModel", "AutoModelForCausalLM", "AutoModelForMultimodalLM"):
            auto_map.setdefault(auto_class, target)
        self.config.auto_map = auto_map
        pipelines = dict(getattr(self.config, "custom_pipelines", None) or {})
        for task, pipeline_class in _pipeline_classes().items():
            pipelines.setdefault(
                task,
                {"impl": f"pipeline_uniaudio2.{pipeline_class.__name__}", "pt": ["AutoModelForCausalLM"], "type": "multimodal"},
            )
        self.config.custom_pipelines = pipelines
        return super().save_pretrained(save_directory, *args, **kwargs)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def depth_decoder_inputs(self, frame_hidden: torch.Tensor, frame_codes: torch.LongTensor) -> torch.Tensor:
        """
        Build the teacher-forced depth-decoder inputs `(num_frames, num_codebooks, hidden_size)` from the hidden state
        of the row before each frame `(num_frames, hidden_size)` and the frame's codes `(num_frames, num_codebooks)`.
        """
        code_embeds = self.model.embed_audio(frame_codes)[:, :-1]
        return torch.cat([frame_hidden.unsqueeze(1), code_embeds.to(frame_hidden.dtype)], dim=1)

    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        audio_codes: torch.LongTensor | None = None,
        audio_codes_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        audio_labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_audio_logits: bool | None = None,
        logits_to_keep: int = 0,
        shift_labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> UniAudio2CausalLMOutputWithPast:
        r"""
        Args:
            input_ids, audio_codes, audio_codes_mask, attention_mask, position_ids, cache, inputs_embeds, use_cache:
                See [`UniAudio2Model.forward`].
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Text targets, aligned with the input rows (shifted inside): `labels[:, t]` is the text token of row
                `t`, predicted from row `t - 1`. `-100` marks rows without text loss.
            audio_labels (`torch.LongTensor` of shape `(batch_size, sequence_length, num_codebooks)`, *optional*):
                Codebook targets aligned with the input rows (shifted inside like `labels`); `-100` marks codes without
                loss. The depth decoder is teacher-forced with the codes of `audio_codes`.
            output_audio_logits (`bool`, *optional*):
                Compute `audio_logits` even without `audio_labels`.
            logits_to_keep (`int`, *optional*, defaults to 0):
                Only compute text logits for the last `logits_to_keep` rows (0 = all).
            shift_labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Text targets already shifted, as the library's causal-LM loss takes them: `shift_labels[:, t]` is
                predicted from row `t` (what sequence / context parallelism needs, where the next row may live on
                another rank). Used instead of `labels`. `audio_labels` stay aligned with the rows: a frame is
                predicted (teacher-forced) from the row before it in the same input.
            num_items_in_batch (`torch.Tensor` or `int`, *optional*):
                Normalise the loss over a whole accumulated batch instead of this micro-batch, so that gradient
                accumulation gives the loss and gradients of one large batch. Two forms:

                - the sum over the micro-batches of [`~UniAudio2ForConditionalGeneration.count_loss_items`], a tensor
                  `(1 + num_codebooks,)`: the number of text targets, then the denominator of each codebook loss (the
                  frames the depth decoder runs on with `audio_loss_normalization="all_frames"`, the labelled frames
                  of that codebook with `"labeled_frames"`). Exact for the weighted text + codebook loss.
                - a scalar, what `Trainer` counts by default: the text targets of the accumulated batch (`labels[:,
                  1:] != -100`). The text term is exact; the codebook denominators, which `Trainer` does not count,
                  are this micro-batch's scaled by the ratio of the accumulated text targets to this micro-batch's
                  (its own when it has none), exact when a step has a single micro-batch.

        Without it each term is normalised over this call's items (the paper's loss).

        Example:

        ```python
        >>> out = model(input_ids=grid_text, audio_codes=grid_codes, audio_codes_mask=is_audio_row,
        ...             attention_mask=attention_mask, labels=text_labels, audio_labels=code_labels)
        >>> out.loss.backward()
        ```
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        # The depth decoder runs over frames, not over the grid: only the recording flags reach it. The inner calls
        # return dataclasses whatever `config.return_dict` says (`can_return_tuple` converts the result).
        decoder_kwargs = {name: kwargs[name] for name in ("output_hidden_states", "output_attentions") if name in kwargs}
        decoder_kwargs["return_dict"] = True
        kwargs["return_dict"] = True
        outputs = self.model(
            input_ids=input_ids,
            audio_codes=audio_codes,
            audio_codes_mask=audio_codes_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            cache=cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        # Text targets of the rows that predict them: `text_targets[:, t]` is predicted from `hidden_states[:, t]`.
        if shift_labels is not None:
            text_targets, predicting = shift_labels, hidden_states
        elif labels is not None:
            text_targets, predicting = labels[:, 1:], hidden_states[:, :-1]
        else:
            text_targets = predicting = None
        # Training with text labels only needs the text head on labelled rows (see `_text_loss_sum`).
        logits = None
        if text_targets is None or not self.training:
            slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states[:, slice_indices, :])

        if audio_labels is not None and audio_codes is None:
            raise ValueError("`audio_labels` needs `audio_codes` (the depth decoder is teacher-forced with them).")
        audio_logits = audio_positions = next_is_audio = decoder_outputs = None
        if (audio_labels is not None or output_audio_logits) and audio_codes is not None:
            # Every frame whose previous row is in the input is predicted by the depth decoder from that row.
            next_is_audio = self._next_is_audio(audio_codes_mask, attention_mask)
            audio_positions = next_is_audio.nonzero()
            frame_hidden = hidden_states[:, :-1][next_is_audio.to(hidden_states.device)]
            frame_codes = audio_codes[:, 1:][next_is_audio.to(audio_codes.device)]
            # One extra frame without labels keeps a micro-batch without audio frames from running the depth decoder
            # on nothing, and gives every depth-decoder parameter a (zero) gradient on every rank.
            frame_hidden = torch.cat([frame_hidden, hidden_states[:1, -1]])
            frame_codes = torch.cat([frame_codes, torch.zeros_like(audio_codes[:1, -1])])
            decoder_outputs = self.depth_decoder(self.depth_decoder_inputs(frame_hidden, frame_codes), **decoder_kwargs)
            padded_logits = decoder_outputs.logits
            audio_logits = padded_logits[:-1]

        loss = text_loss = audio_loss = codebook_losses = None
        text_items, codebook_items = self._split_num_items(num_items_in_batch)
        if text_targets is not None:
            if logits_to_keep:
                raise ValueError("`labels` / `shift_labels` cannot be combined with `logits_to_keep`.")
            text_sum, text_count = self._text_loss_sum(predicting, logits, text_targets, shifted=shift_labels is not None)
            text_loss = text_sum / (text_count if text_items is None else text_items.to(text_sum.device)).clamp(min=1)
            loss = self.config.text_loss_weight * text_loss
        if audio_labels is not None:
            frame_labels = audio_labels[:, 1:][next_is_audio.to(audio_labels.device)]
            frame_labels = torch.cat([frame_labels, torch.full_like(audio_labels[:1, -1], -100)])
            codebook_sums, denominators = self._audio_loss_sums(padded_logits, frame_labels)
            if codebook_items is not None:
                denominators = codebook_items.to(denominators)
            elif text_items is not None and text_targets is not None:
                # A scalar count of text targets only: scale this micro-batch's denominators like its text count.
                count = text_count.to(denominators)
                ratio = text_items.to(denominators) / count.clamp(min=1)
                denominators = denominators * torch.where(count > 0, ratio, torch.ones_like(ratio))
            codebook_losses = codebook_sums / denominators.clamp(min=1)
            weights = torch.tensor(self.config.codebook_loss_weights, dtype=torch.float32, device=codebook_sums.device)
            audio_loss = (weights * codebook_losses).sum() / self.config.num_codebooks
            audio_term = self.config.audio_loss_weight * audio_loss
            loss = audio_term if loss is None else loss + audio_term.to(loss.device)

        def without_extra_frame(states):
            return None if states is None else tuple(state[:-1] for state in states)

        return UniAudio2CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            text_loss=text_loss,
            audio_loss=audio_loss,
            codebook_losses=codebook_losses,
            audio_logits=audio_logits,
            audio_logits_positions=audio_positions,
            depth_decoder_hidden_states=without_extra_frame(getattr(decoder_outputs, "hidden_states", None)),
            depth_decoder_attentions=without_extra_frame(getattr(decoder_outputs, "attentions", None)),
            last_hidden_state=hidden_states,
        )

    @staticmethod
    def _next_is_audio(audio_codes_mask: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """`(batch, seq - 1)`: whether row `t + 1` is a real audio row, i.e. a frame the depth decoder predicts."""
        rows = audio_codes_mask.bool()
        if attention_mask is not None and attention_mask.ndim == 2:
            rows = rows & attention_mask.bool().to(rows.device)
        return rows[:, 1:]

    def _split_num_items(self, num_items_in_batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """`num_items_in_batch` as `(text targets, codebook denominators or None)` (see `forward`)."""
        if num_items_in_batch is None:
            return None, None
        counts = torch.as_tensor(num_items_in_batch).reshape(-1)
        if counts.numel() == 1:
            return counts[0], None
        if counts.numel() != 1 + self.config.num_codebooks:
            raise ValueError(
                f"`num_items_in_batch` must be a scalar (text targets) or hold 1 + num_codebooks = "
                f"{1 + self.config.num_codebooks} counts (see `count_loss_items`), got shape {tuple(counts.shape)}."
            )
        return counts[0], counts[1:]

    def count_loss_items(
        self,
        labels: torch.LongTensor | None = None,
        audio_labels: torch.LongTensor | None = None,
        audio_codes_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        shift_labels: torch.LongTensor | None = None,
        **unused,
    ) -> torch.LongTensor:
        """
        The items one batch contributes to the loss's normalisers, `(1 + num_codebooks,)`: its text targets, then the
        denominator of each codebook loss (see `audio_loss_normalization`). Sum them over the micro-batches of one
        optimizer step and pass the sum as `num_items_in_batch` to each micro-batch's forward: the accumulated
        gradients are then those of one forward over all of them. Takes a collated batch (`**batch`).
        """
        reference = next(t for t in (labels, shift_labels, audio_labels, audio_codes_mask) if t is not None)
        counts = torch.zeros(1 + self.config.num_codebooks, dtype=torch.long, device=reference.device)
        text_targets = shift_labels if shift_labels is not None else None if labels is None else labels[:, 1:]
        if text_targets is not None:
            counts[0] = (text_targets != -100).sum().to(counts.device)
        if audio_labels is not None:
            next_is_audio = self._next_is_audio(audio_codes_mask, attention_mask).to(audio_labels.device)
            if self.config.audio_loss_normalization == "all_frames":
                counts[1:] = next_is_audio.sum().to(counts.device)
            else:
                counts[1:] = ((audio_labels[:, 1:] != -100) & next_is_audio.unsqueeze(-1)).sum((0, 1)).to(counts.device)
        return counts

    def _text_loss_sum(self, predicting: torch.Tensor, logits: torch.Tensor | None, targets: torch.LongTensor, shifted: bool):
        """
        Summed next-token cross-entropy and the number of targets, as the library's causal-LM loss reduces them
        (`sum / num_items`). Without `logits` (training) the head runs on the labelled rows only.
        """
        targets = targets.to(predicting.device)
        if logits is None:
            labelled = targets != -100
            row_logits, targets = self.lm_head(predicting[labelled]), targets[labelled]
        else:
            row_logits = (logits if shifted else logits[:, :-1]).reshape(-1, logits.shape[-1])
            targets = targets.reshape(-1)
        count = (targets != -100).sum()
        return _float_cross_entropy(row_logits, targets).sum(), count

    def _audio_loss_sums(self, audio_logits: torch.Tensor, frame_labels: torch.LongTensor):
        """
        Summed cross-entropy of each codebook of `audio_logits` `(frames + 1, num_codebooks, vocab)` (the last frame
        unlabelled) and this call's denominator of each (see `audio_loss_normalization`).
        """
        frame_labels = frame_labels.to(audio_logits.device)
        # One codebook at a time: a float32 copy of all `(frames, num_codebooks, vocab)` logits is never held.
        codebook_sums = torch.stack(
            [_float_cross_entropy(audio_logits[:, k], frame_labels[:, k]).sum() for k in range(self.config.num_codebooks)]
        )
        if self.config.audio_loss_normalization == "all_frames":
            # The last frame is the label-less extra frame of `forward`.
            denominator = torch.full_like(codebook_sums, frame_labels.shape[0] - 1)
        else:
            denominator = (frame_labels != -100).sum(0).float()
        return codebook_sums, denominator

    def enable_input_require_grads(self):
        """
        Make the text and the audio embeddings' outputs require gradients, so that (reentrant) gradient checkpointing
        of frozen-base adapters reaches the understanding layers, which only read the audio embeddings.
        """
        super().enable_input_require_grads()

        def make_output_require_grads(module, inputs, output):
            output.requires_grad_(True)

        self._require_grads_hooks.append(self.model.embed_audio_tokens.register_forward_hook(make_output_require_grads))


def _float_cross_entropy(logits: torch.Tensor, targets: torch.LongTensor) -> torch.Tensor:
    """
    Per-row float32 cross-entropy (`-100` targets give 0). For half-precision logits that need gradients the float32
    copy is recomputed in backward instead of being kept, so it only ever exists for one call at a time.
    """

    def cross_entropy(logits, targets):
        return F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="none")

    if logits.dtype != torch.float32 and logits.requires_grad:
        return torch.utils.checkpoint.checkpoint(cross_entropy, logits, targets, use_reentrant=False)
    return cross_entropy(logits, targets)


# `save_pretrained` copies the code next to the weights so that the directory loads with `trust_remote_code=True`.
UniAudio2ForConditionalGeneration.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["UniAudio2PreTrainedModel", "UniAudio2Model", "UniAudio2ForConditionalGeneration"]
