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
"""
Generation for UniAudio 2.0: text generation over the text stream, and reasoning-first audio frame generation built
from the library's generation parts (generation config, logits processors and warpers, streamers, typed outputs).
"""

import copy
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache, StaticCache
from transformers.generation import (
    ClassifierFreeGuidanceLogitsProcessor,
    CompileConfig,
    GenerateDecoderOnlyOutput,
    GenerationConfig,
    GenerationMixin,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)
from transformers.utils import logging


logger = logging.get_logger(__name__)

# Kinds of generated audio frames (see `UniAudio2AudioGenerationOutput.frame_kinds`).
FRAME_REASONING = 0
FRAME_RECONSTRUCTION = 1
FRAME_REASONING_EOS = 2
FRAME_RECONSTRUCTION_EOS = 3
FRAME_AFTER_END = -1

DEPTH_DECODER_PREFIX = "depth_decoder_"
# Generation-config fields that, in audio mode, shape the codebook distributions of the depth decoder. Passed to
# `generate(generation_mode="audio")` without the prefix they set the depth decoder's value too (the depth decoder
# samples every codebook of a frame); the prefixed spelling (`depth_decoder_top_k=...`) is the one stored.
AUDIO_SAMPLING_FIELDS = (
    "do_sample", "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "suppress_tokens", "sequence_bias",
    "renormalize_logits", "remove_invalid_values",
)
# Generation-config fields the frame loop itself reads.
AUDIO_LOOP_FIELDS = (
    "guidance_scale", "use_cache", "cache_implementation", "compile_config", "output_scores", "output_logits",
    "return_dict_in_generate",
)
# Audio-mode settings of the generation config (UniAudio 2.0 specific), `None` when unset.
AUDIO_FIELDS = ("max_new_frames", "max_reasoning_frames", "min_reconstruction_frames", "constrain_audio_codes")
# Why the other decoding methods of the library do not apply to audio frames.
_AUDIO_MODE_UNSUPPORTED = {
    "num_beams": "beam search ranks single-token continuations, an audio step is a frame of `num_codebooks` codes "
    "sampled one after the other by the depth decoder",
    "num_return_sequences": "repeat the prompt in the batch instead",
    "assistant_model": "candidate verification scores single-token continuations, not frames",
    "prompt_lookup_num_tokens": "candidate verification scores single-token continuations, not frames",
    "max_new_tokens": "the audio length is `max_new_frames`",
    "min_new_tokens": "the audio length bound is `min_reconstruction_frames`",
    "max_length": "the audio length is `max_new_frames`",
    "output_attentions": "not recorded in audio mode",
    "output_hidden_states": "not recorded in audio mode",
    "stopping_criteria": "audio generation stops on the all-EOS frame or at `max_new_frames`",
}

_GENERATION_CONFIG_FIELDS = frozenset(vars(GenerationConfig()))


@dataclass
class UniAudio2AudioGenerationOutput(GenerateDecoderOnlyOutput):
    r"""
    Output of `UniAudio2ForConditionalGeneration.generate(..., generation_mode="audio")` (always returned in audio
    mode: the per-item code lists cannot be one tensor).

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, num_frames, num_codebooks)`):
            Every generated frame in grid ids, in order; rows of an item that stopped repeat its stop frame. Also
            readable as `frames`.
        scores (`tuple(torch.FloatTensor)`, *optional*, returned with `output_scores=True`):
            Per frame, the processed codebook scores `(batch_size, num_codebooks, audio_vocab_size)` the codes were
            selected from (after guidance, the phase rules, the warpers and any `logits_processor`).
        logits (`tuple(torch.FloatTensor)`, *optional*, returned with `output_logits=True`):
            Per frame, the unprocessed depth-decoder logits `(rows, num_codebooks, audio_vocab_size)`; with guidance
            the rows are the conditional rows followed by the unconditional ones.
        cache (`Cache`, *optional*):
            The language model's KV cache (with `use_cache=True`).
        reasoning_codes (`list[torch.LongTensor]`):
            Per batch item, the generated reasoning tokens `(num_codebooks, T_r)` (codec layout, 5 Hz), without the
            segment's first (BOS) frame and without the all-EOS frame.
        reconstruction_codes (`list[torch.LongTensor]`):
            Per batch item, the generated reconstruction tokens `(num_codebooks, T_s)` (codec layout, 12.5 Hz) with
            the reasoning offset removed, without the segment's first (BOS) frame and the stop frame. This is what
            `ReasoningCodecModel.decode` takes.
        frame_kinds (`torch.LongTensor` of shape `(batch_size, num_frames)`):
            0 reasoning frame, 1 reconstruction frame, 2 all-reasoning-EOS frame, 3 all-reconstruction-EOS (stop)
            frame, -1 after the item stopped.
        finished (`torch.BoolTensor` of shape `(batch_size,)`):
            Whether each item ended on an all-reconstruction-EOS frame (False: stopped by `max_new_frames`).
    """

    reasoning_codes: list[torch.LongTensor] | None = None
    reconstruction_codes: list[torch.LongTensor] | None = None
    frame_kinds: torch.LongTensor | None = None
    finished: torch.BoolTensor | None = None

    @property
    def frames(self) -> torch.LongTensor:
        """The generated frames, `sequences`."""
        return self.sequences


# ------------------------------------------------------------------------------------------------- logits processors
class UniAudio2AudioFrameState:
    """
    Where each row of the batch stands in the frame being sampled: the audio logits processors below read it, the
    frame loop of `generate(generation_mode="audio")` writes it (once per frame with `start_frame`, once per codebook
    with `start_codebook`). All tensors live on the device the codebook logits are sampled on.
    """

    def __init__(self, config):
        self.config = config
        self.reconstruction_rows = self.phase_start = self.hold_eos = self.force_reasoning_eos = None
        self.frame_eos = self.eos_only = self.bos_only = self.first_codes = None
        self.codebook = 0

    def start_frame(self, reconstruction_rows, phase_start=None, hold_eos=None, force_reasoning_eos=None):
        """
        Args:
            reconstruction_rows (`torch.BoolTensor` of shape `(batch_size,)`): rows past their reasoning EOS frame.
            phase_start (`torch.BoolTensor`, *optional*): rows about to produce their phase's first (BOS) frame.
            hold_eos (`torch.BoolTensor`, *optional*): rows that may not produce their phase's EOS frame yet.
            force_reasoning_eos (`torch.BoolTensor`, *optional*): rows whose reasoning phase ends with this frame.
        """
        config = self.config
        device = reconstruction_rows.device
        self.reconstruction_rows, self.phase_start, self.hold_eos, self.force_reasoning_eos = (
            None if rows is None else rows.to(device)
            for rows in (reconstruction_rows, phase_start, hold_eos, force_reasoning_eos)
        )
        # Each row's EOS and BOS ids, as one-hot rows over the codebook vocabulary.
        self.frame_eos = torch.where(
            reconstruction_rows, config.reconstruction_eos_token_id, config.reasoning_eos_token_id
        )
        self.eos_only = torch.nn.functional.one_hot(self.frame_eos, config.audio_vocab_size).bool()
        frame_bos = torch.where(reconstruction_rows, config.reconstruction_bos_token_id, config.reasoning_bos_token_id)
        self.bos_only = torch.nn.functional.one_hot(frame_bos, config.audio_vocab_size).bool()
        self.codebook, self.first_codes = 0, None

    def start_codebook(self, codebook: int, first_codes: torch.LongTensor | None):
        self.codebook, self.first_codes = codebook, first_codes


class _AudioFrameLogitsProcessor(LogitsProcessor):
    """Base of the audio phase rules: `input_ids` are the previous frames' codes of the codebook being sampled."""

    def __init__(self, state: UniAudio2AudioFrameState):
        self.state = state


class UniAudio2ReconstructionPhaseLogitsProcessor(_AudioFrameLogitsProcessor):
    """
    Forbid-prefix rule of the original sampler: once a row has produced its all-reasoning-EOS frame, the reasoning
    ids (`[0, reasoning_vocab_size)`, the prefix of the codebook vocabulary) are forbidden in every codebook.
    """

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        prefix = torch.arange(scores.shape[-1], device=scores.device) < self.state.config.reasoning_vocab_size
        return scores.masked_fill(self.state.reconstruction_rows.unsqueeze(-1) & prefix, float("-inf"))


class UniAudio2AudioCodesLogitsProcessor(_AudioFrameLogitsProcessor):
    """
    `constrain_audio_codes=True`: only frames that are valid where the grid stands. Each phase opens with its BOS
    frame (reasoning BOS, then reconstruction BOS after the reasoning EOS frame), as in training, and continues with
    its own codes or its EOS; EOS is held across the frame: codebook 0 decides between an all-EOS frame and a frame of
    codes, the other codebooks follow.
    """

    def __init__(self, state: UniAudio2AudioFrameState):
        super().__init__(state)
        config = state.config
        ids = torch.arange(config.audio_vocab_size)
        reasoning_end = min(config.reasoning_bos_token_id, config.reasoning_eos_token_id, config.reasoning_pad_token_id)
        reconstruction_end = min(
            config.reconstruction_bos_token_id, config.reconstruction_eos_token_id, config.reconstruction_pad_token_id
        )
        # Ids valid in each phase: its codes plus its EOS.
        self.reasoning = (ids < reasoning_end) | (ids == config.reasoning_eos_token_id)
        self.reconstruction = ((ids >= config.reasoning_vocab_size) & (ids < reconstruction_end)) | (
            ids == config.reconstruction_eos_token_id
        )

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        state = self.state
        if self.reasoning.device != scores.device:
            self.reasoning, self.reconstruction = self.reasoning.to(scores.device), self.reconstruction.to(scores.device)
        allowed = torch.where(state.reconstruction_rows.unsqueeze(-1), self.reconstruction, self.reasoning)
        if state.codebook > 0:
            allowed = torch.where(
                (state.first_codes == state.frame_eos).unsqueeze(-1), state.eos_only, allowed & ~state.eos_only
            )
        if state.phase_start is not None:
            allowed = torch.where(state.phase_start.unsqueeze(-1), state.bos_only, allowed)
        return scores.masked_fill(~allowed, float("-inf"))


class UniAudio2MinReconstructionFramesLogitsProcessor(_AudioFrameLogitsProcessor):
    """
    `min_reconstruction_frames`: rows that have not produced enough reconstruction frames yet cannot start a frame
    with their phase's EOS (as `min_new_tokens` does for text), so they cannot produce an EOS frame.
    """

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        state = self.state
        if state.codebook > 0:
            return scores
        return scores.masked_fill(state.eos_only & state.hold_eos.unsqueeze(-1), float("-inf"))


class UniAudio2ReasoningBoundLogitsProcessor(_AudioFrameLogitsProcessor):
    """
    `max_reasoning_frames`: rows that have produced that many reasoning frames get an all-reasoning-EOS frame, as if
    the model had produced it (the original code has no such bound).
    """

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        state = self.state
        is_eos = torch.arange(scores.shape[-1], device=scores.device) == state.config.reasoning_eos_token_id
        forced = torch.where(is_eos, 0.0, float("-inf")).to(scores.dtype)
        return torch.where(state.force_reasoning_eos.unsqueeze(-1), forced, scores)


def _select_codes(scores: torch.Tensor, do_sample: bool, generator: torch.Generator | None) -> torch.LongTensor:
    """Greedy or sampled codes from processed `(batch, vocab)` scores, with `generator` on the scores' device."""
    if not do_sample:
        return scores.argmax(dim=-1)
    if generator is not None and _device_key(generator.device) != _device_key(scores.device):
        raise ValueError(
            f"The sampling `generator` is on {generator.device} but the codebook logits are on {scores.device}: create "
            f"it there, e.g. `torch.Generator(device={str(scores.device)!r}).manual_seed(seed)`."
        )
    probs = torch.softmax(scores.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def _sample_from_logits(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.LongTensor:
    """Greedy, or temperature / top-k sampling (the library's warpers) of `(batch, vocab)` logits."""
    if not do_sample or top_k == 1:
        return logits.argmax(dim=-1)
    warpers = LogitsProcessorList()
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    return _select_codes(warpers(None, logits), True, generator)


def _device_key(device: torch.device) -> tuple[str, int]:
    return device.type, device.index or 0


class UniAudio2GenerationMixin(GenerationMixin):
    """
    Adds the two generation modes of UniAudio 2.0 to the model.

    * `generation_mode="text"` (default; ASR, captioning, audio/speech QA): standard transformers generation over the
      text stream. Every generated token is appended as a text row; greedy search, sampling, beam search (and beam
      sampling), assisted decoding (e.g. the model as its own assistant), prompt lookup decoding, all logits
      processors, batching with left padding, `num_return_sequences` and `inputs_embeds` prompts work as for any
      causal LM. Classifier-free guidance is refused there (see `generate`).
    * `generation_mode="audio"` (TTS, text-to-sound, text-to-music): frames are generated one after the other. Each
      frame is one pass of the language model over the previous row followed by `num_codebooks` depth-decoder steps.
      Frames are *reasoning* frames until an all-`reasoning_eos_token_id` frame, then *reconstruction* frames (the
      reasoning range of ids is forbidden) until an all-`reconstruction_eos_token_id` frame. The rules are logits
      processors (`UniAudio2*LogitsProcessor`), the codebook sampling comes from the depth decoder's generation
      settings (`depth_decoder_*` entries of the generation config, as CSM does) through the library's warpers.
      Optional classifier-free guidance (`guidance_scale > 1`) runs an unconditional copy of the prompt whose text
      rows are replaced by `text_pad_token_id` and combines `l_u + guidance_scale * (l_c - l_u)` for every codebook
      (the library's `ClassifierFreeGuidanceLogitsProcessor`).
    """

    def prepare_inputs_for_generation(
        self,
        input_ids,
        next_sequence_length=None,
        cache=None,
        attention_mask=None,
        inputs_embeds=None,
        is_first_iteration=False,
        audio_codes=None,
        audio_codes_mask=None,
        **kwargs,
    ):
        """
        The library's preparation, plus the grid's codebook columns for the rows fed: the prompt's `audio_codes` /
        `audio_codes_mask` on prompt rows, zeros (text rows) on generated rows. A prompt given as `inputs_embeds`
        (text-row embeddings, read on the first step only) counts as rows before `input_ids`, which then hold the
        generated tokens only.
        """
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        if audio_codes is not None:
            rows = model_inputs["input_ids"] if model_inputs.get("input_ids") is not None else model_inputs["inputs_embeds"]
            # Grid rows so far: the prompt (embeddings or ids) and the generated tokens.
            total = input_ids.shape[1] + (inputs_embeds.shape[1] if inputs_embeds is not None else 0)
            start = total - rows.shape[1]
            codes, mask = audio_codes[:, start:], audio_codes_mask[:, start:]
            # Generated rows are text rows: no codes, not audio.
            extra = rows.shape[1] - codes.shape[1]
            if extra > 0:
                codes = torch.cat([codes, codes.new_zeros(codes.shape[0], extra, codes.shape[2])], 1)
                mask = torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1)
            # Contiguous copies: a compiled forward sees the same strides at every step.
            model_inputs["audio_codes"] = codes[:, : rows.shape[1]].contiguous()
            model_inputs["audio_codes_mask"] = mask[:, : rows.shape[1]].contiguous()
        return model_inputs

    def generate(self, *args, generation_mode: str = "text", **kwargs):
        """
        Generate text (`generation_mode="text"`, the default) or audio frames (`generation_mode="audio"`).

        Text mode accepts everything `GenerationMixin.generate` accepts, plus the grid inputs `audio_codes` and
        `audio_codes_mask`. Classifier-free guidance (`guidance_scale > 1`) is refused there: the library's text-mode
        guidance reruns the model on the prompt's last token without its audio rows. Audio mode takes:

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): text column of the prompt grid.
            audio_codes (`torch.LongTensor` of shape `(batch_size, sequence_length, num_codebooks)`, *optional*):
                codebook columns of the prompt grid (e.g. an audio prompt).
            audio_codes_mask (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*): audio rows.
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): 0 on (left)
                padding rows.
            generation_config (`GenerationConfig`, *optional*): defaults to the model's. Every audio setting below is
                read from it when not passed: `max_new_frames`, `max_reasoning_frames`, `min_reconstruction_frames`,
                `constrain_audio_codes`, `guidance_scale`, and the codebook sampling settings as `depth_decoder_*`
                entries (`depth_decoder_do_sample`, `depth_decoder_temperature`, `depth_decoder_top_k`, ...).
            max_new_frames (`int`): upper bound on generated frames. Generation stops there even without an EOS frame.
            depth_decoder_do_sample, depth_decoder_temperature, depth_decoder_top_k, depth_decoder_top_p,
            depth_decoder_repetition_penalty, ... (*optional*): codebook sampling settings, any sampling field of
                `GenerationConfig` with the `depth_decoder_` prefix, turned into the library's warpers and
                processors. In audio mode the unprefixed spelling (`do_sample=False`, `top_k=1`, ...) sets the same
                value: every code of a frame comes from the depth decoder. `top_k=1` is greedy (no random draw). A
                `repetition_penalty` penalises the codes each codebook produced in the previous frames.
            logits_processor (`LogitsProcessorList`, *optional*): extra processors, applied to every codebook step
                after the phase rules and before the warpers, called with `(codes, scores)` where `codes`
                `(batch_size, frames_so_far)` holds the previous frames' codes of that codebook.
            streamer (`BaseStreamer`, *optional*): `streamer.put(codes)` receives each generated frame's codes
                `(batch_size, num_codebooks)` (on the CPU), `streamer.end()` is called at the end.
            guidance_scale (`float`, *optional*): classifier-free guidance scale; `<= 1` disables guidance.
            max_reasoning_frames (`int`, *optional*): end the reasoning phase after this many frames by feeding an
                all-reasoning-EOS frame, as if the model had produced it (the original code has no such bound).
            min_reconstruction_frames (`int`, *optional*): forbid the reconstruction EOS until this many
                reconstruction frames will be returned (as `min_new_tokens` does for text; unset: 0, the original
                behaviour). Generation still stops at `max_new_frames`.
            constrain_audio_codes (`bool`, *optional*): restrict sampling to the frames that are valid where the grid
                stands (see `UniAudio2AudioCodesLogitsProcessor`), so that every returned code can be decoded. Unset
                or `False` reproduces the original sampler, which only forbids the reasoning range in the
                reconstruction phase and leaves the BOS frames to the model.
            use_cache (`bool`, *optional*, defaults to `True`): use the KV cache (False recomputes the whole grid at
                every frame; same tokens, slower).
            cache_implementation (`str`, *optional*): `"static"` pre-allocates the language model's KV cache for the
                prompt plus `max_new_frames` rows (same tokens as the default dynamic cache); with it, a
                `compile_config` (or `generation_config.compile_config`) compiles the per-frame forward, as in text
                mode on accelerators.
            generator (`torch.Generator`, *optional*): random generator for sampling, on the device of the model's
                depth decoder.
            output_scores (`bool`, *optional*), output_logits (`bool`, *optional*): also return the processed scores /
                the raw logits of every frame. `return_dict_in_generate` is accepted; the output is always a
                [`UniAudio2AudioGenerationOutput`].

            Beam search, assisted / prompt-lookup decoding, `num_return_sequences`, `stopping_criteria` and the text
            length settings do not apply to audio frames and raise a `ValueError` that says why.

        Returns:
            [`UniAudio2AudioGenerationOutput`] in audio mode, the usual `generate` output in text mode.
        """
        if generation_mode not in ("text", "audio"):
            raise ValueError(f"`generation_mode` must be 'text' or 'audio', got {generation_mode!r}.")
        self._check_prompt(args[0] if args else kwargs.get("input_ids", kwargs.get("inputs")), kwargs)
        if generation_mode == "text":
            guidance_scale = kwargs.get("guidance_scale")
            if guidance_scale is None and kwargs.get("generation_config") is None:
                guidance_scale = self.generation_config.guidance_scale
            if guidance_scale is not None and guidance_scale > 1:
                raise ValueError(
                    f"`guidance_scale={guidance_scale}` applies to `generation_mode='audio'` only: the library's "
                    "text-mode guidance reruns the model on the prompt's last token without its audio rows."
                )
            return super().generate(*args, **kwargs)
        if args:
            kwargs["input_ids"] = args[0]
            if len(args) > 1:
                raise ValueError("Pass the audio-mode inputs as keyword arguments.")
        return self._generate_audio(**kwargs)

    def _check_prompt(self, input_ids, kwargs):
        """Value checks of the prompt, once per call, so that the decoding steps have no host syncs."""
        audio_codes, audio_codes_mask = kwargs.get("audio_codes"), kwargs.get("audio_codes_mask")
        if input_ids is not None and audio_codes is not None and audio_codes_mask is not None:
            # The assistant of assisted decoding is called with the generated rows too: they are text rows.
            extra = input_ids.shape[1] - audio_codes.shape[1]
            if extra > 0:
                audio_codes = torch.cat([audio_codes, audio_codes.new_zeros(audio_codes.shape[0], extra, audio_codes.shape[2])], 1)
                audio_codes_mask = torch.cat([audio_codes_mask, audio_codes_mask.new_zeros(audio_codes_mask.shape[0], extra)], 1)
        self.model.check_inputs(
            input_ids=input_ids,
            audio_codes=audio_codes,
            audio_codes_mask=audio_codes_mask,
            attention_mask=kwargs.get("attention_mask"),
        )

    def _audio_generation_config(self, generation_config: GenerationConfig | None, kwargs: dict):
        """
        Split the audio-mode arguments: returns the generation config of the frame loop (a copy, updated with the
        loop's arguments), the depth decoder's generation config (its `depth_decoder_*` entries, then the sampling
        arguments, unprefixed then prefixed) and the remaining (model) arguments.
        """
        generation_config = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        depth_settings = {
            key[len(DEPTH_DECODER_PREFIX) :]: value
            for key, value in vars(generation_config).items()
            if key.startswith(DEPTH_DECODER_PREFIX)
        }
        loop_settings, model_kwargs, unsupported = {}, {}, []
        explicit_depth = {}
        for key, value in kwargs.items():
            if key.startswith(DEPTH_DECODER_PREFIX):
                explicit_depth[key[len(DEPTH_DECODER_PREFIX) :]] = value
            elif key in AUDIO_SAMPLING_FIELDS:
                depth_settings[key] = value
            elif key in AUDIO_LOOP_FIELDS or key in AUDIO_FIELDS:
                loop_settings[key] = value
            elif key in _AUDIO_MODE_UNSUPPORTED or key in _GENERATION_CONFIG_FIELDS:
                if value is not None and value is not False and not (key.startswith("num_") and value == 1):
                    unsupported.append(key)
            else:
                model_kwargs[key] = value
        depth_settings.update(explicit_depth)
        if unsupported:
            reasons = "; ".join(f"`{key}`: {_AUDIO_MODE_UNSUPPORTED.get(key, 'not an audio setting')}" for key in unsupported)
            raise ValueError(f"Unsupported arguments for audio generation ({reasons}).")
        for key, value in loop_settings.items():
            setattr(generation_config, key, value)
        depth_config = GenerationConfig()
        unknown = depth_config.update(**depth_settings)
        if unknown:
            raise ValueError(f"Unknown depth decoder generation settings: {sorted(DEPTH_DECODER_PREFIX + key for key in unknown)}.")
        if isinstance(depth_config.temperature, int) and not isinstance(depth_config.temperature, bool):
            depth_config.temperature = float(depth_config.temperature)
        if depth_config.top_k == 1:
            depth_config.do_sample = False  # greedy, without a random draw
        depth_config._eos_token_tensor = None  # frames end on EOS frames, not on a token
        return generation_config, depth_config, model_kwargs

    def _audio_logits_processor(
        self, generation_config, depth_config, state, prompt_length, guidance, logits_processor
    ) -> LogitsProcessorList:
        """Guidance, the phase rules, then the library's processors and warpers of the depth decoder's settings."""
        processors = LogitsProcessorList()
        if guidance:
            processors.append(ClassifierFreeGuidanceLogitsProcessor(generation_config.guidance_scale))
        processors.append(UniAudio2ReconstructionPhaseLogitsProcessor(state))
        if generation_config.constrain_audio_codes:
            processors.append(UniAudio2AudioCodesLogitsProcessor(state))
        if generation_config.min_reconstruction_frames:
            processors.append(UniAudio2MinReconstructionFramesLogitsProcessor(state))
        if generation_config.max_reasoning_frames is not None:
            processors.append(UniAudio2ReasoningBoundLogitsProcessor(state))
        processors.extend(
            self._get_logits_processor(
                generation_config=depth_config,
                input_ids_seq_length=prompt_length,
                logits_processor=logits_processor if logits_processor is not None else LogitsProcessorList(),
                device=None,
                model_kwargs=None,
            )
        )
        return processors

    @torch.no_grad()
    def _generate_audio(
        self,
        input_ids: torch.LongTensor,
        audio_codes: torch.LongTensor | None = None,
        audio_codes_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: LogitsProcessorList | None = None,
        streamer=None,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> UniAudio2AudioGenerationOutput:
        config = self.config
        gen_config, depth_config, unused = self._audio_generation_config(generation_config, kwargs)
        if unused:
            raise ValueError(f"Unsupported arguments for audio generation: {sorted(unused)}.")
        for key in AUDIO_FIELDS:
            if not hasattr(gen_config, key):
                setattr(gen_config, key, None)
        max_new_frames, min_reconstruction_frames = gen_config.max_new_frames, gen_config.min_reconstruction_frames
        if max_new_frames is None:
            raise ValueError(
                "Audio generation needs `max_new_frames`: pass it to `generate` or set `generation_config.max_new_frames`."
            )
        if max_new_frames < 1:
            raise ValueError(f"`max_new_frames` must be >= 1, got {max_new_frames}.")
        if min_reconstruction_frames is not None and min_reconstruction_frames < 0:
            raise ValueError(f"`min_reconstruction_frames` must be >= 0, got {min_reconstruction_frames}.")
        cache_implementation = gen_config.cache_implementation
        if cache_implementation not in (None, "dynamic", "static"):
            raise ValueError(
                f"Audio generation supports cache_implementation 'dynamic' or 'static', got {cache_implementation!r}."
            )
        use_cache = gen_config.use_cache if gen_config.use_cache is not None else True
        output_scores, output_logits = bool(gen_config.output_scores), bool(gen_config.output_logits)

        device = input_ids.device
        batch_size, prompt_len = input_ids.shape
        num_codebooks = config.num_codebooks
        if audio_codes is None:
            audio_codes = torch.zeros(batch_size, prompt_len, num_codebooks, dtype=torch.long, device=device)
            audio_codes_mask = torch.zeros(batch_size, prompt_len, dtype=torch.bool, device=device)
        elif audio_codes_mask is None:
            raise ValueError("`audio_codes_mask` is required together with `audio_codes`.")
        audio_codes_mask = audio_codes_mask.bool()
        if attention_mask is None:
            attention_mask = torch.ones(batch_size, prompt_len, dtype=torch.long, device=device)

        use_cfg = gen_config.guidance_scale is not None and gen_config.guidance_scale > 1.0
        if use_cfg:
            text_rows = attention_mask.bool() & ~audio_codes_mask
            uncond_ids = torch.where(text_rows, torch.full_like(input_ids, config.text_pad_token_id), input_ids)
            pad_codes = torch.where(
                audio_codes < config.reasoning_vocab_size,
                torch.full_like(audio_codes, config.reasoning_pad_token_id),
                torch.full_like(audio_codes, config.reconstruction_pad_token_id),
            )
            uncond_codes = torch.where(audio_codes_mask.unsqueeze(-1), pad_codes, audio_codes)
            input_ids = torch.cat([input_ids, uncond_ids])
            audio_codes = torch.cat([audio_codes, uncond_codes])
            audio_codes_mask = torch.cat([audio_codes_mask, audio_codes_mask])
            attention_mask = torch.cat([attention_mask, attention_mask])

        state = UniAudio2AudioFrameState(config)
        processors = self._audio_logits_processor(gen_config, depth_config, state, prompt_len, use_cfg, logits_processor)
        do_sample = bool(depth_config.do_sample)

        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = None
        decode_step = self.model
        static_rows = input_ids.shape[1] + max_new_frames if use_cache and cache_implementation == "static" else None
        if static_rows is not None:
            cache = StaticCache(config=config, max_cache_len=static_rows)
            if self._valid_auto_compile_criteria({"cache": cache}, gen_config):
                decode_step = self._compiled_audio_step(gen_config.compile_config or CompileConfig())

        def run_rows(rows: slice, cache, step=self.model):
            # The base model is enough: audio frames only need the mixed hidden state, not the text logits. A static
            # cache gets the mask of all its rows (rows not generated yet are causally masked), so that every
            # decoding step sees inputs of the same shapes and strides (a clone: `.contiguous()` keeps the strides of a
            # one-row slice, on which compiled steps guard).
            mask = attention_mask
            if static_rows is not None:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], static_rows - mask.shape[1])], 1)
            outputs = step(
                input_ids=input_ids[:, rows].clone(memory_format=torch.contiguous_format),
                audio_codes=audio_codes[:, rows].clone(memory_format=torch.contiguous_format),
                audio_codes_mask=audio_codes_mask[:, rows].clone(memory_format=torch.contiguous_format),
                attention_mask=mask,
                position_ids=position_ids[:, rows].clone(memory_format=torch.contiguous_format),
                cache=cache,
                use_cache=use_cache,
            )
            return outputs.last_hidden_state[:, -1], outputs.cache

        last_hidden, cache = run_rows(slice(None), cache)

        reasoning_phase = torch.ones(batch_size, dtype=torch.bool, device=device)
        reasoning_frames = torch.zeros(batch_size, dtype=torch.long, device=device)
        reconstruction_frames = torch.zeros(batch_size, dtype=torch.long, device=device)
        done = torch.zeros(batch_size, dtype=torch.bool, device=device)
        kinds, scores, raw_logits = [], [], []
        history = None  # (batch, frames, num_codebooks) on the sampling device
        reasoning_eos = torch.full((num_codebooks,), config.reasoning_eos_token_id, device=device)
        reconstruction_eos = torch.full((num_codebooks,), config.reconstruction_eos_token_id, device=device)

        for _ in range(max_new_frames):
            hold_eos = phase_start = force = None
            if min_reconstruction_frames:
                # The first reconstruction frame is not returned (see below), hence `<=`.
                hold_eos = ~reasoning_phase & (reconstruction_frames <= min_reconstruction_frames)
            if gen_config.constrain_audio_codes:
                # Rows about to produce their phase's first frame: the BOS frame (not returned, like the EOS frames).
                phase_start = torch.where(reasoning_phase, reasoning_frames == 0, reconstruction_frames == 0)
            if gen_config.max_reasoning_frames is not None:
                force = reasoning_phase & (reasoning_frames >= gen_config.max_reasoning_frames)
            frame, frame_scores, frame_logits = self._sample_frame_codes(
                last_hidden,
                processors,
                state,
                phase=(~reasoning_phase, phase_start, hold_eos, force),
                history=history,
                do_sample=do_sample,
                generator=generator,
                batch_size=batch_size,
                output_scores=output_scores,
                output_logits=output_logits,
            )
            frame = frame.to(device)
            reasoning_frames += reasoning_phase.long()
            is_stop = (frame == reconstruction_eos).all(-1)
            is_switch = (frame == reasoning_eos).all(-1) & ~is_stop
            reconstruction_frames += (~reasoning_phase & ~is_stop & ~done).long()
            kind = torch.where(reasoning_phase, FRAME_REASONING, FRAME_RECONSTRUCTION)
            kind = torch.where(is_switch, FRAME_REASONING_EOS, kind)
            kind = torch.where(is_stop, FRAME_RECONSTRUCTION_EOS, kind)
            kind = torch.where(done, FRAME_AFTER_END, kind)
            # Items that stopped repeat their stop frame.
            frame = torch.where(done.unsqueeze(-1), reconstruction_eos.to(frame.dtype), frame)
            history = frame.unsqueeze(1) if history is None else torch.cat([history, frame.unsqueeze(1).to(history.device)], 1)
            kinds.append(kind)
            if output_scores:
                scores.append(frame_scores)
            if output_logits:
                raw_logits.append(frame_logits)
            if streamer is not None:
                streamer.put(frame.cpu())
            reasoning_phase = reasoning_phase & ~is_switch
            done = done | is_stop
            if bool(done.all()):
                break

            # Feed the frame back as an audio row.
            row_codes = frame.unsqueeze(1)
            if use_cfg:
                row_codes = torch.cat([row_codes, row_codes])
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
            position_ids = torch.cat([position_ids, position_ids[:, -1:] + 1], dim=1)
            audio_codes = torch.cat([audio_codes, row_codes], dim=1)
            audio_codes_mask = torch.cat([audio_codes_mask, torch.ones_like(audio_codes_mask[:, :1])], dim=1)
            input_ids = torch.cat([input_ids, torch.zeros_like(input_ids[:, :1])], dim=1)
            # With the cache only the new row runs; without it the whole grid is recomputed.
            last_hidden, cache = run_rows(slice(-1, None) if use_cache else slice(None), cache, decode_step)
        if streamer is not None:
            streamer.end()

        frames = history.to(device)
        kinds = torch.stack(kinds, dim=1)
        reasoning_codes, reconstruction_codes = [], []
        for item in range(batch_size):
            item_frames, item_kinds = frames[item], kinds[item]
            reasoning = item_frames[item_kinds == FRAME_REASONING][1:]
            reconstruction = item_frames[item_kinds == FRAME_RECONSTRUCTION][1:] - config.reasoning_vocab_size
            if not bool((item_kinds == FRAME_REASONING_EOS).any()):
                logger.warning(
                    f"Audio generation of item {item} never produced an all-reasoning-EOS frame within "
                    f"{max_new_frames} frames: it has no reconstruction tokens."
                )
            elif not bool(done[item]):
                logger.warning(f"Audio generation of item {item} stopped at max_new_frames={max_new_frames} without EOS.")
            reasoning_codes.append(reasoning.T.contiguous())
            reconstruction_codes.append(reconstruction.T.contiguous())

        return UniAudio2AudioGenerationOutput(
            sequences=frames,
            scores=tuple(scores) if output_scores else None,
            logits=tuple(raw_logits) if output_logits else None,
            cache=cache if use_cache else None,
            reasoning_codes=reasoning_codes,
            reconstruction_codes=reconstruction_codes,
            frame_kinds=kinds,
            finished=done,
        )

    def _compiled_audio_step(self, compile_config: CompileConfig):
        """The base model's `__call__` compiled for the one-row decoding steps (kept until the config changes)."""
        cached = getattr(self, "_audio_step_compiled", None)
        if cached is None or cached[0] != compile_config:
            cached = (compile_config, torch.compile(self.model.__call__, **compile_config.to_dict()))
            self._audio_step_compiled = cached
        return cached[1]

    def _sample_frame_codes(
        self,
        last_hidden: torch.Tensor,
        logits_processor: LogitsProcessorList,
        state: UniAudio2AudioFrameState,
        phase: tuple,
        history: torch.LongTensor | None,
        do_sample: bool,
        generator: torch.Generator | None,
        batch_size: int,
        output_scores: bool = False,
        output_logits: bool = False,
    ) -> tuple[torch.LongTensor, torch.Tensor | None, torch.Tensor | None]:
        """
        One frame: the depth decoder runs codebook by codebook from the hidden state of the previous row; each
        codebook's logits go through `logits_processor` (with that codebook's previous codes as `input_ids`) and the
        code is selected from the processed scores. `phase` is what `UniAudio2AudioFrameState.start_frame` takes.

        With guidance, `last_hidden` holds the conditional rows followed by the unconditional rows; one frame is
        sampled per conditional row and fed to both halves. Returns the codes `(batch_size, num_codebooks)` and, when
        asked, the processed scores and raw logits of the frame, stacked over the codebooks.
        """
        config = self.config
        cache = DynamicCache(config=config.depth_decoder_config)
        step_input = last_hidden.unsqueeze(1)
        codes, frame_scores, frame_logits = [], [], []
        for codebook in range(config.num_codebooks):
            logits = self.depth_decoder(step_input, cache=cache, use_cache=True)[0][:, -1].float()
            if codebook == 0:
                # Sample where the depth decoder runs (its device under a device map).
                state.start_frame(*(rows if rows is None else rows.to(logits.device) for rows in phase))
                if history is None:
                    history = torch.zeros(batch_size, 0, config.num_codebooks, dtype=torch.long, device=logits.device)
            state.start_codebook(codebook, codes[0] if codes else None)
            if output_logits:
                frame_logits.append(logits)
            scores = logits_processor(history[:, :, codebook], logits)
            if output_scores:
                frame_scores.append(scores)
            code = _select_codes(scores, do_sample, generator)
            codes.append(code)
            fed = torch.cat([code, code]) if logits.shape[0] != batch_size else code
            step_input = self.model.embed_audio_tokens(fed + codebook * config.audio_vocab_size).unsqueeze(1)
            step_input = step_input.to(device=last_hidden.device, dtype=last_hidden.dtype)
        return (
            torch.stack(codes, dim=-1),
            torch.stack(frame_scores, dim=1) if output_scores else None,
            torch.stack(frame_logits, dim=1) if output_logits else None,
        )

    def _sample_audio_frame(
        self,
        last_hidden: torch.Tensor,
        forbid_reasoning: torch.BoolTensor,
        guidance_scale: float | None,
        do_sample: bool,
        temperature: float,
        top_k: int | None,
        generator: torch.Generator | None,
        allowed=None,
        forbid_eos: torch.BoolTensor | None = None,
        phase_start: torch.BoolTensor | None = None,
    ) -> tuple[torch.LongTensor, torch.Tensor]:
        """
        One frame with the given phase rules (`forbid_reasoning`: rows in the reconstruction phase; `allowed`: any
        truthy value constrains the codes as `constrain_audio_codes=True` does; `forbid_eos`: rows whose EOS is held
        back; `phase_start`: rows opening their phase) and sampling settings, outside `generate`. Returns the codes
        and the processed scores `(batch_size, num_codebooks, audio_vocab_size)`.
        """
        batch_size = forbid_reasoning.shape[0]
        gen_config = GenerationConfig(
            guidance_scale=guidance_scale,
            constrain_audio_codes=allowed is not None,
            min_reconstruction_frames=1 if forbid_eos is not None else None,
            max_reasoning_frames=None,
        )
        depth_config = GenerationConfig(do_sample=do_sample and top_k != 1, temperature=temperature, top_k=top_k)
        depth_config._eos_token_tensor = None
        state = UniAudio2AudioFrameState(self.config)
        use_cfg = guidance_scale is not None and guidance_scale > 1
        processors = self._audio_logits_processor(gen_config, depth_config, state, 1, use_cfg, None)
        codes, scores, _ = self._sample_frame_codes(
            last_hidden, processors, state, (forbid_reasoning, phase_start if allowed is not None else None, forbid_eos, None),
            history=None, do_sample=bool(depth_config.do_sample), generator=generator, batch_size=batch_size,
            output_scores=True,
        )
        return codes, scores

    def _phase_vocabularies(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids valid in the reasoning phase and in the reconstruction phase (codes plus the phase's EOS)."""
        processor = UniAudio2AudioCodesLogitsProcessor(UniAudio2AudioFrameState(self.config))
        return processor.reasoning.to(device), processor.reconstruction.to(device)


__all__ = [
    "UniAudio2GenerationMixin",
    "UniAudio2AudioGenerationOutput",
    "UniAudio2AudioFrameState",
    "UniAudio2ReconstructionPhaseLogitsProcessor",
    "UniAudio2AudioCodesLogitsProcessor",
    "UniAudio2MinReconstructionFramesLogitsProcessor",
    "UniAudio2ReasoningBoundLogitsProcessor",
]
