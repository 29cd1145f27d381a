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
"""Generation for UniAudio 2.0: text generation over the text stream and reasoning-first audio frame generation."""

import copy
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache, StaticCache
from transformers.generation import CompileConfig, GenerationMixin
from transformers.utils import ModelOutput, logging


logger = logging.get_logger(__name__)

# Kinds of generated audio frames (see `UniAudio2AudioGenerationOutput.frame_kinds`).
FRAME_REASONING = 0
FRAME_RECONSTRUCTION = 1
FRAME_REASONING_EOS = 2
FRAME_RECONSTRUCTION_EOS = 3
FRAME_AFTER_END = -1


@dataclass
class UniAudio2AudioGenerationOutput(ModelOutput):
    r"""
    Output of `UniAudio2ForConditionalGeneration.generate(..., generation_mode="audio")`.

    Args:
        reasoning_codes (`list[torch.LongTensor]`):
            Per batch item, the generated reasoning tokens `(num_codebooks, T_r)` (codec layout, 5 Hz), without the
            segment's first (BOS) frame and without the all-EOS frame.
        reconstruction_codes (`list[torch.LongTensor]`):
            Per batch item, the generated reconstruction tokens `(num_codebooks, T_s)` (codec layout, 12.5 Hz) with
            the reasoning offset removed, without the segment's first (BOS) frame and the stop frame. This is what
            `ReasoningCodecModel.decode` takes.
        frames (`torch.LongTensor` of shape `(batch_size, num_frames, num_codebooks)`):
            Every sampled frame in grid ids, in order (rows after an item stopped repeat its stop frame).
        frame_kinds (`torch.LongTensor` of shape `(batch_size, num_frames)`):
            0 reasoning frame, 1 reconstruction frame, 2 all-reasoning-EOS frame, 3 all-reconstruction-EOS (stop)
            frame, -1 after the item stopped.
        finished (`torch.BoolTensor` of shape `(batch_size,)`):
            Whether each item ended on an all-reconstruction-EOS frame (False: stopped by `max_new_frames`).
        audio_scores (`torch.FloatTensor` of shape `(batch_size, num_frames, num_codebooks, audio_vocab_size)`, *optional*):
            Processed codebook logits of every frame (after guidance, before temperature/top-k), with
            `output_scores=True`.
    """

    reasoning_codes: list[torch.LongTensor] | None = None
    reconstruction_codes: list[torch.LongTensor] | None = None
    frames: torch.LongTensor | None = None
    frame_kinds: torch.LongTensor | None = None
    finished: torch.BoolTensor | None = None
    audio_scores: torch.FloatTensor | None = None


def _sample_from_logits(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.LongTensor:
    """Greedy or temperature / top-k sampling of `(batch, vocab)` logits."""
    if not do_sample or (top_k is not None and top_k == 1):
        return logits.argmax(dim=-1)
    if generator is not None and _device_key(generator.device) != _device_key(logits.device):
        raise ValueError(
            f"The sampling `generator` is on {generator.device} but the codebook logits are on {logits.device}: create "
            f"it there, e.g. `torch.Generator(device={str(logits.device)!r}).manual_seed(seed)`."
        )
    if temperature <= 0:
        raise ValueError(f"`temperature` must be > 0 for sampling, got {temperature}.")
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def _device_key(device: torch.device) -> tuple[str, int]:
    return device.type, device.index or 0


class UniAudio2GenerationMixin(GenerationMixin):
    """
    Adds the two generation modes of UniAudio 2.0 to the model.

    * `generation_mode="text"` (default; ASR, captioning, audio/speech QA): standard transformers generation over the
      text stream. Every generated token is appended as a text row; all logits processors, greedy/sampling, batching
      with left padding and `num_return_sequences` work as for any causal LM.
    * `generation_mode="audio"` (TTS, text-to-sound, text-to-music): frames are generated one after the other. Each
      frame is one pass of the language model over the previous row followed by `num_codebooks` depth-decoder steps.
      Frames are *reasoning* frames until an all-`reasoning_eos_token_id` frame, then *reconstruction* frames (the
      reasoning range of ids is forbidden) until an all-`reconstruction_eos_token_id` frame. Optional classifier-free
      guidance (`guidance_scale > 1`) runs an unconditional copy of the prompt whose text rows are replaced by
      `text_pad_token_id` and combines `l_u + guidance_scale * (l_c - l_u)` for every codebook.
    """

    def prepare_inputs_for_generation(self, input_ids, audio_codes=None, audio_codes_mask=None, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        if audio_codes is not None:
            rows = model_inputs["input_ids"] if model_inputs.get("input_ids") is not None else model_inputs["inputs_embeds"]
            start = input_ids.shape[1] - rows.shape[1]
            codes, mask = audio_codes[:, start:], audio_codes_mask[:, start:]
            # Generated rows are text rows: no codes, not audio.
            extra = rows.shape[1] - codes.shape[1]
            if extra > 0:
                codes = torch.cat([codes, codes.new_zeros(codes.shape[0], extra, codes.shape[2])], 1)
                mask = torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1)
            # Contiguous copies: a compiled forward sees the same strides at every step.
            model_inputs["audio_codes"] = codes.contiguous()
            model_inputs["audio_codes_mask"] = mask.contiguous()
        return model_inputs

    def generate(self, *args, generation_mode: str = "text", **kwargs):
        """
        Generate text (`generation_mode="text"`, the default) or audio frames (`generation_mode="audio"`).

        Text mode accepts everything `GenerationMixin.generate` accepts, plus the grid inputs `audio_codes` and
        `audio_codes_mask`. Audio mode takes:

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): text column of the prompt grid.
            audio_codes (`torch.LongTensor` of shape `(batch_size, sequence_length, num_codebooks)`, *optional*):
                codebook columns of the prompt grid (e.g. an audio prompt).
            audio_codes_mask (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*): audio rows.
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): 0 on (left)
                padding rows.
            max_new_frames (`int`, *optional*): upper bound on generated frames (defaults to
                `generation_config.max_new_frames`, else 500). Generation stops there even without an EOS frame.
            do_sample (`bool`, *optional*), temperature (`float`, *optional*), top_k (`int`, *optional*): codebook
                sampling (defaults: `generation_config.audio_do_sample` / `audio_temperature` / `audio_top_k`, else
                sampling with temperature 0.9 and top-k 50, the reference's defaults). `top_k=1` is greedy.
            guidance_scale (`float`, *optional*): classifier-free guidance scale; `<= 1` disables guidance.
            max_reasoning_frames (`int`, *optional*): end the reasoning phase after this many frames by feeding an
                all-reasoning-EOS frame, as if the model had produced it (the original code has no such bound).
            min_reconstruction_frames (`int`, *optional*): forbid the reconstruction EOS until this many
                reconstruction frames will be returned (as `min_new_tokens` does for text; defaults to
                `generation_config.min_reconstruction_frames`, else 0, the original behaviour). Generation still stops
                at `max_new_frames`.
            constrain_audio_codes (`bool`, *optional*, defaults to `False`): restrict sampling to the frames that are
                valid where the grid stands: each phase opens with its BOS frame (reasoning BOS, then, after the
                reasoning EOS frame, reconstruction BOS), as in training, and continues with its codes or its EOS, so
                that every returned code can be decoded. `False` reproduces the original sampler, which only forbids
                the reasoning range in the reconstruction phase and leaves the BOS frames to the model.
            use_cache (`bool`, *optional*, defaults to `True`): use the KV cache (False recomputes the whole grid at
                every frame; same tokens, slower).
            cache_implementation (`str`, *optional*): `"static"` pre-allocates the language model's KV cache for the
                prompt plus `max_new_frames` rows (same tokens as the default dynamic cache); with it, a
                `compile_config` (or `generation_config.compile_config`) compiles the per-frame forward, as in text
                mode on accelerators.
            generator (`torch.Generator`, *optional*): random generator for sampling, on the device of the model's
                depth decoder.
            output_scores (`bool`, *optional*): also return the codebook logits of every frame.

        Returns:
            [`UniAudio2AudioGenerationOutput`] in audio mode, the usual `generate` output in text mode.
        """
        if generation_mode not in ("text", "audio"):
            raise ValueError(f"`generation_mode` must be 'text' or 'audio', got {generation_mode!r}.")
        # Value checks read the prompt once here, so that the decoding steps have no host syncs.
        self.model.check_inputs(
            input_ids=args[0] if args else kwargs.get("input_ids", kwargs.get("inputs")),
            audio_codes=kwargs.get("audio_codes"),
            audio_codes_mask=kwargs.get("audio_codes_mask"),
            attention_mask=kwargs.get("attention_mask"),
        )
        if generation_mode == "text":
            return super().generate(*args, **kwargs)
        if generation_mode == "audio":
            if args:
                kwargs["input_ids"] = args[0]
                if len(args) > 1:
                    raise ValueError("Pass the audio-mode inputs as keyword arguments.")
            return self._generate_audio(**kwargs)

    @torch.no_grad()
    def _generate_audio(
        self,
        input_ids: torch.LongTensor,
        audio_codes: torch.LongTensor | None = None,
        audio_codes_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        max_new_frames: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        guidance_scale: float | None = None,
        max_reasoning_frames: int | None = None,
        min_reconstruction_frames: int | None = None,
        constrain_audio_codes: bool = False,
        use_cache: bool = True,
        cache_implementation: str | None = None,
        compile_config=None,
        generator: torch.Generator | None = None,
        output_scores: bool = False,
        generation_config=None,
        **unused,
    ) -> UniAudio2AudioGenerationOutput:
        unused.pop("return_dict_in_generate", None)
        if unused:
            raise ValueError(f"Unsupported arguments for audio generation: {sorted(unused)}.")
        config = self.config
        gen_config = generation_config if generation_config is not None else self.generation_config
        cache_implementation = cache_implementation or gen_config.cache_implementation
        if cache_implementation not in (None, "dynamic", "static"):
            raise ValueError(
                f"Audio generation supports cache_implementation 'dynamic' or 'static', got {cache_implementation!r}."
            )
        max_new_frames = max_new_frames if max_new_frames is not None else getattr(gen_config, "max_new_frames", None) or 500
        do_sample = do_sample if do_sample is not None else getattr(gen_config, "audio_do_sample", True)
        temperature = temperature if temperature is not None else getattr(gen_config, "audio_temperature", 0.9)
        top_k = top_k if top_k is not None else getattr(gen_config, "audio_top_k", 50)
        guidance_scale = guidance_scale if guidance_scale is not None else getattr(gen_config, "audio_guidance_scale", 1.0)
        if min_reconstruction_frames is None:
            min_reconstruction_frames = getattr(gen_config, "min_reconstruction_frames", None) or 0
        if max_new_frames < 1:
            raise ValueError(f"`max_new_frames` must be >= 1, got {max_new_frames}.")
        if min_reconstruction_frames < 0:
            raise ValueError(f"`min_reconstruction_frames` must be >= 0, got {min_reconstruction_frames}.")

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

        use_cfg = guidance_scale is not None and guidance_scale > 1.0
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

        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = None
        decode_step = self.model
        static_rows = input_ids.shape[1] + max_new_frames if use_cache and cache_implementation == "static" else None
        if static_rows is not None:
            cache = StaticCache(config=config, max_cache_len=static_rows)
            compile_config = compile_config or gen_config.compile_config
            if compile_config is not None:
                gen_config = copy.copy(gen_config)
                gen_config.compile_config = compile_config
            if self._valid_auto_compile_criteria({"cache": cache}, gen_config):
                decode_step = self._compiled_audio_step(compile_config or CompileConfig())

        def run_rows(rows: slice, cache, step=self.model):
            # The base model is enough: audio frames only need the mixed hidden state, not the text logits. A static
            # cache gets the mask of all its rows (rows not generated yet are causally masked), so that every
            # decoding step sees inputs of the same shapes and strides.
            mask = attention_mask
            if static_rows is not None:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], static_rows - mask.shape[1])], 1)
            outputs = step(
                input_ids=input_ids[:, rows].contiguous(),
                audio_codes=audio_codes[:, rows].contiguous(),
                audio_codes_mask=audio_codes_mask[:, rows].contiguous(),
                attention_mask=mask,
                position_ids=position_ids[:, rows].contiguous(),
                cache=cache,
                use_cache=use_cache,
            )
            return outputs.last_hidden_state[:, -1], outputs.cache

        last_hidden, cache = run_rows(slice(None), cache)

        reasoning_phase = torch.ones(batch_size, dtype=torch.bool, device=device)
        reasoning_frames = torch.zeros(batch_size, dtype=torch.long, device=device)
        reconstruction_frames = torch.zeros(batch_size, dtype=torch.long, device=device)
        done = torch.zeros(batch_size, dtype=torch.bool, device=device)
        allowed = self._phase_vocabularies(device) if constrain_audio_codes else None
        frames, kinds, scores = [], [], []
        reasoning_eos = torch.full((num_codebooks,), config.reasoning_eos_token_id, device=device)
        reconstruction_eos = torch.full((num_codebooks,), config.reconstruction_eos_token_id, device=device)

        for _ in range(max_new_frames):
            forbid_eos = None
            if min_reconstruction_frames > 0:
                # The first reconstruction frame is not returned (see below), hence `<=`.
                forbid_eos = ~reasoning_phase & (reconstruction_frames <= min_reconstruction_frames)
            phase_start = None
            if constrain_audio_codes:
                # Rows about to produce their phase's first frame: the BOS frame (not returned, like the EOS frames).
                phase_start = torch.where(reasoning_phase, reasoning_frames == 0, reconstruction_frames == 0)
            frame, frame_scores = self._sample_audio_frame(
                last_hidden,
                forbid_reasoning=~reasoning_phase,
                forbid_eos=forbid_eos,
                phase_start=phase_start,
                guidance_scale=guidance_scale if use_cfg else None,
                do_sample=do_sample,
                temperature=temperature,
                top_k=top_k,
                generator=generator,
                allowed=allowed,
            )
            frame = frame.to(device)
            if max_reasoning_frames is not None:
                force = reasoning_phase & (reasoning_frames >= max_reasoning_frames)
                frame = torch.where(force.unsqueeze(-1), reasoning_eos.to(frame.dtype), frame)
            reasoning_frames += reasoning_phase.long()
            is_stop = (frame == reconstruction_eos).all(-1)
            is_switch = (frame == reasoning_eos).all(-1) & ~is_stop
            reconstruction_frames += (~reasoning_phase & ~is_stop & ~done).long()
            kind = torch.where(reasoning_phase, FRAME_REASONING, FRAME_RECONSTRUCTION)
            kind = torch.where(is_switch, FRAME_REASONING_EOS, kind)
            kind = torch.where(is_stop, FRAME_RECONSTRUCTION_EOS, kind)
            kind = torch.where(done, FRAME_AFTER_END, kind)
            frames.append(frame)
            kinds.append(kind)
            if output_scores:
                scores.append(frame_scores)
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

        frames = torch.stack(frames, dim=1)
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
            reasoning_codes=reasoning_codes,
            reconstruction_codes=reconstruction_codes,
            frames=frames,
            frame_kinds=kinds,
            finished=done,
            audio_scores=torch.stack(scores, dim=1) if output_scores else None,
        )

    def _compiled_audio_step(self, compile_config: CompileConfig):
        """The base model's `__call__` compiled for the one-row decoding steps (kept until the config changes)."""
        cached = getattr(self, "_audio_step_compiled", None)
        if cached is None or cached[0] != compile_config:
            cached = (compile_config, torch.compile(self.model.__call__, **compile_config.to_dict()))
            self._audio_step_compiled = cached
        return cached[1]

    def _phase_vocabularies(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids valid in the reasoning phase and in the reconstruction phase (codes plus the phase's EOS)."""
        config = self.config
        ids = torch.arange(config.audio_vocab_size, device=device)
        reasoning_codes = min(config.reasoning_bos_token_id, config.reasoning_eos_token_id, config.reasoning_pad_token_id)
        reconstruction_codes = min(
            config.reconstruction_bos_token_id, config.reconstruction_eos_token_id, config.reconstruction_pad_token_id
        )
        reasoning = (ids < reasoning_codes) | (ids == config.reasoning_eos_token_id)
        reconstruction = ((ids >= config.reasoning_vocab_size) & (ids < reconstruction_codes)) | (
            ids == config.reconstruction_eos_token_id
        )
        return reasoning, reconstruction

    def _sample_audio_frame(
        self,
        last_hidden: torch.Tensor,
        forbid_reasoning: torch.BoolTensor,
        guidance_scale: float | None,
        do_sample: bool,
        temperature: float,
        top_k: int | None,
        generator: torch.Generator | None,
        allowed: tuple[torch.Tensor, torch.Tensor] | None = None,
        forbid_eos: torch.BoolTensor | None = None,
        phase_start: torch.BoolTensor | None = None,
    ) -> tuple[torch.LongTensor, torch.Tensor]:
        """
        Run the depth decoder codebook by codebook from the hidden state of the previous row. Rows where `forbid_eos`
        is set cannot start their frame with the phase's EOS, so they cannot produce an EOS frame. With `allowed`,
        rows where `phase_start` is set produce the phase's BOS frame (the only valid frame there).

        With guidance, `last_hidden` holds the conditional rows followed by the unconditional rows; one frame is
        sampled per conditional row and fed to both halves.
        """
        config = self.config
        batch_size = forbid_reasoning.shape[0]
        cache = DynamicCache(config=config.depth_decoder_config)
        step_input = last_hidden.unsqueeze(1)
        codes, frame_scores = [], []
        for codebook in range(config.num_codebooks):
            logits = self.depth_decoder(step_input, cache=cache, use_cache=True)[0][:, -1].float()
            if codebook == 0:
                # Sample where the depth decoder runs (its device under a device map).
                device = logits.device
                forbid_reasoning = forbid_reasoning.to(device)
                frame_eos = torch.where(
                    forbid_reasoning, config.reconstruction_eos_token_id, config.reasoning_eos_token_id
                )
                # Where each row's EOS id sits in the codebook vocabulary.
                eos_only = torch.nn.functional.one_hot(frame_eos, config.audio_vocab_size).bool()
                if forbid_eos is not None:
                    forbid_eos = forbid_eos.to(device)
                if allowed is not None:
                    allowed = tuple(vocabulary.to(device) for vocabulary in allowed)
                    if phase_start is not None:
                        phase_start = phase_start.to(device)
                        frame_bos = torch.where(
                            forbid_reasoning, config.reconstruction_bos_token_id, config.reasoning_bos_token_id
                        )
                        bos_only = torch.nn.functional.one_hot(frame_bos, config.audio_vocab_size).bool()
            if guidance_scale is not None:
                cond, uncond = logits[:batch_size], logits[batch_size:]
                logits = uncond + guidance_scale * (cond - uncond)
            logits[:, : config.reasoning_vocab_size] = logits[:, : config.reasoning_vocab_size].masked_fill(
                forbid_reasoning.unsqueeze(-1), float("-inf")
            )
            if allowed is not None:
                # A constrained frame is all codes or all EOS: codebook 0 decides, the others follow.
                phase_allowed = torch.where(forbid_reasoning.unsqueeze(-1), allowed[1], allowed[0])
                if codebook > 0:
                    phase_allowed = torch.where(
                        (codes[0] == frame_eos).unsqueeze(-1), eos_only, phase_allowed & ~eos_only
                    )
                if phase_start is not None:
                    phase_allowed = torch.where(phase_start.unsqueeze(-1), bos_only, phase_allowed)
                logits = logits.masked_fill(~phase_allowed, float("-inf"))
            if codebook == 0 and forbid_eos is not None:
                logits = logits.masked_fill(eos_only & forbid_eos.unsqueeze(-1), float("-inf"))
            frame_scores.append(logits)
            code = _sample_from_logits(logits, do_sample, temperature, top_k, generator)
            codes.append(code)
            fed = torch.cat([code, code]) if guidance_scale is not None else code
            step_input = self.model.embed_audio_tokens(fed + codebook * config.audio_vocab_size).unsqueeze(1)
            step_input = step_input.to(device=last_hidden.device, dtype=last_hidden.dtype)
        return torch.stack(codes, dim=-1), torch.stack(frame_scores, dim=1)


__all__ = ["UniAudio2GenerationMixin", "UniAudio2AudioGenerationOutput"]
