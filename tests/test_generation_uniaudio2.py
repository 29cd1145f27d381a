import logging

import pytest
import torch

from transformers.generation import (
    BaseStreamer,
    GenerateDecoderOnlyOutput,
    LogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

from conftest import random_grid


def _asr_prompt(seed=0, seq_len=12):
    return random_grid(batch_size=1, seq_len=seq_len, audio_rows=slice(2, seq_len - 2), seed=seed)


# ----------------------------------------------------------------------------------------------------- text mode
def test_text_generation_cached_equals_uncached(model):
    prompt = _asr_prompt()
    cached = model.generate(**prompt, do_sample=False, max_new_tokens=8, eos_token_id=None)
    uncached = model.generate(**prompt, do_sample=False, max_new_tokens=8, eos_token_id=None, use_cache=False)
    assert cached.shape == (1, 12 + 8)
    assert torch.equal(cached, uncached)


def test_text_generation_batched_left_padding_equals_single(model):
    long, short = _asr_prompt(seed=1, seq_len=12), _asr_prompt(seed=2, seq_len=9)
    pad = 3
    batch = {
        key: torch.cat([long[key], torch.cat([torch.zeros_like(short[key][:, :pad]), short[key]], 1)])
        for key in long
    }
    attention_mask = torch.ones(2, 12, dtype=torch.long)
    attention_mask[1, :pad] = 0
    batched = model.generate(**batch, attention_mask=attention_mask, do_sample=False, max_new_tokens=6, eos_token_id=None)
    single_long = model.generate(**long, do_sample=False, max_new_tokens=6, eos_token_id=None)
    single_short = model.generate(**short, do_sample=False, max_new_tokens=6, eos_token_id=None)
    assert torch.equal(batched[0, 12:], single_long[0, 12:])
    assert torch.equal(batched[1, 12:], single_short[0, 9:])


def test_text_generation_sampling_processors_and_eos(model):
    prompt = _asr_prompt()
    torch.manual_seed(0)
    sampled = model.generate(
        **prompt, do_sample=True, top_k=5, temperature=0.7, num_return_sequences=2, max_new_tokens=5, eos_token_id=None
    )
    assert sampled.shape == (2, 17)
    out = model.generate(
        **prompt, do_sample=False, max_new_tokens=5, repetition_penalty=1.3, return_dict_in_generate=True, output_scores=True
    )
    assert len(out.scores) == out.sequences.shape[1] - 12
    # Force the text EOS through the head: generation stops right after it.
    with torch.no_grad():
        model.lm_head.weight[81] = model.model.norm.weight * 50
    stopped = model.generate(**prompt, do_sample=False, max_new_tokens=10)
    assert stopped[0, -1].item() == 81 and stopped.shape[1] < 12 + 10


def _sum_log_probs(model, prompt, sequence):
    """Sum of the log-probabilities of the generated tokens of `sequence` `(1, prompt_len + new)`, by one forward."""
    prompt_len, extra = prompt["input_ids"].shape[1], sequence.shape[1] - prompt["input_ids"].shape[1]
    codes = torch.cat([prompt["audio_codes"], torch.zeros(1, extra, 8, dtype=torch.long)], 1)
    mask = torch.cat([prompt["audio_codes_mask"], torch.zeros(1, extra, dtype=torch.bool)], 1)
    with torch.no_grad():
        log_probs = model(input_ids=sequence, audio_codes=codes, audio_codes_mask=mask).logits.log_softmax(-1)
    new = sequence[0, prompt_len:]
    return log_probs[0, prompt_len - 1 : -1].gather(-1, new.unsqueeze(-1)).sum()


def test_text_beam_search_scores_are_the_models_log_probabilities(model):
    prompt = _asr_prompt()
    greedy = model.generate(**prompt, do_sample=False, max_new_tokens=6, eos_token_id=None)
    one_beam = model.generate(**prompt, do_sample=False, num_beams=1, max_new_tokens=6, eos_token_id=None)
    assert torch.equal(one_beam, greedy)
    beams = model.generate(**prompt, do_sample=False, num_beams=4, num_return_sequences=3, max_new_tokens=6,
                           eos_token_id=None, length_penalty=0.0, return_dict_in_generate=True, output_scores=True)
    assert beams.sequences.shape == (3, 12 + 6)
    assert beams.sequences_scores[0] >= beams.sequences_scores[1] >= beams.sequences_scores[2]
    for sequence, score in zip(beams.sequences, beams.sequences_scores):
        torch.testing.assert_close(_sum_log_probs(model, prompt, sequence[None]), score, atol=1e-4, rtol=1e-4)
    # beam sampling runs too, reproducibly under a seed
    torch.manual_seed(1)
    first = model.generate(**prompt, do_sample=True, num_beams=2, max_new_tokens=4, eos_token_id=None)
    torch.manual_seed(1)
    assert torch.equal(first, model.generate(**prompt, do_sample=True, num_beams=2, max_new_tokens=4, eos_token_id=None))


def test_text_assisted_and_prompt_lookup_decoding_match_greedy(model):
    prompt = _asr_prompt(seed=3, seq_len=14)
    greedy = model.generate(**prompt, do_sample=False, max_new_tokens=8, eos_token_id=None)
    assisted = model.generate(**prompt, do_sample=False, max_new_tokens=8, eos_token_id=None, assistant_model=model)
    lookup = model.generate(**prompt, do_sample=False, max_new_tokens=8, eos_token_id=None, prompt_lookup_num_tokens=3)
    assert torch.equal(assisted, greedy)
    assert torch.equal(lookup, greedy)


def test_text_sampling_is_seeded_and_top_k_1_is_greedy(model):
    prompt = _asr_prompt()
    greedy = model.generate(**prompt, do_sample=False, max_new_tokens=6, eos_token_id=None)
    assert torch.equal(model.generate(**prompt, do_sample=True, top_k=1, max_new_tokens=6, eos_token_id=None), greedy)
    runs = []
    for _ in range(2):
        torch.manual_seed(4)
        runs.append(model.generate(**prompt, do_sample=True, top_p=0.9, temperature=1.5, max_new_tokens=6, eos_token_id=None))
    assert torch.equal(*runs)


def test_text_generation_from_inputs_embeds(model):
    prompt = _asr_prompt()
    greedy = model.generate(**prompt, do_sample=False, max_new_tokens=6, eos_token_id=None)
    embeds = model.get_input_embeddings()(prompt["input_ids"])
    from_embeds = model.generate(inputs_embeds=embeds, audio_codes=prompt["audio_codes"],
                                 audio_codes_mask=prompt["audio_codes_mask"], do_sample=False, max_new_tokens=6,
                                 eos_token_id=None)
    # As in the library, the output holds the generated tokens only.
    assert torch.equal(from_embeds, greedy[:, 12:])
    # The first step reads the embeddings with the prompt's codes, later steps one generated text row.
    first = model.prepare_inputs_for_generation(
        torch.zeros(1, 0, dtype=torch.long), inputs_embeds=embeds, is_first_iteration=True, **{
            key: prompt[key] for key in ("audio_codes", "audio_codes_mask")})
    assert first["input_ids"] is None and torch.equal(first["audio_codes_mask"], prompt["audio_codes_mask"])
    later = model.prepare_inputs_for_generation(
        greedy[:, 12:14], next_sequence_length=1, inputs_embeds=embeds, **{
            key: prompt[key] for key in ("audio_codes", "audio_codes_mask")})
    assert later["input_ids"].tolist() == [[greedy[0, 13].item()]]
    assert later["audio_codes_mask"].tolist() == [[False]] and later["audio_codes"].shape == (1, 1, 8)


def test_text_mode_refuses_classifier_free_guidance(model):
    with pytest.raises(ValueError, match="guidance_scale=2.0.*audio"):
        model.generate(**_asr_prompt(), max_new_tokens=2, guidance_scale=2.0)


# ---------------------------------------------------------------------------------------------------- audio mode
def _tts_prompt(batch_size=1, seq_len=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 80, (batch_size, seq_len), generator=generator)}


def test_audio_generation_cached_equals_uncached_and_respects_max_new_frames(model, caplog):
    prompt = _tts_prompt()
    with caplog.at_level(logging.WARNING):
        cached = model.generate(**prompt, generation_mode="audio", do_sample=False, max_new_frames=6)
    uncached = model.generate(**prompt, generation_mode="audio", do_sample=False, max_new_frames=6, use_cache=False)
    assert cached.frames.shape == (1, 6, 8)
    assert torch.equal(cached.frames, uncached.frames)
    # random weights never emit the EOS frames: bounded by max_new_frames, no crash, empty reconstruction
    assert not cached.finished[0]
    assert cached.reconstruction_codes[0].shape == (8, 0)
    assert cached.reasoning_codes[0].shape == (8, 5)  # first (BOS) frame dropped
    assert "never produced an all-reasoning-EOS frame" in caplog.text


def test_audio_generation_batched_left_padding_equals_single(model):
    long, short = _tts_prompt(seq_len=7, seed=1), _tts_prompt(seq_len=5, seed=2)
    input_ids = torch.cat([long["input_ids"], torch.cat([torch.zeros(1, 2, dtype=torch.long), short["input_ids"]], 1)])
    attention_mask = torch.ones(2, 7, dtype=torch.long)
    attention_mask[1, :2] = 0
    batched = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_mode="audio", top_k=1, max_new_frames=4)
    single_long = model.generate(**long, generation_mode="audio", top_k=1, max_new_frames=4)
    single_short = model.generate(**short, generation_mode="audio", top_k=1, max_new_frames=4)
    assert torch.equal(batched.frames[0], single_long.frames[0])
    assert torch.equal(batched.frames[1], single_short.frames[0])


class ScriptedFrames(LogitsProcessor):
    """A user logits processor that makes every row produce the scripted frames (`script[row][frame]` is the one id
    of all the frame's codes): it sees the previous frames' codes of the codebook being sampled as `input_ids`."""

    def __init__(self, script):
        self.script = torch.tensor(script)

    def __call__(self, input_ids, scores):
        frame = min(input_ids.shape[1], self.script.shape[1] - 1)
        target = self.script[:, frame].to(scores.device)
        keep = torch.nn.functional.one_hot(target, scores.shape[-1]).bool()
        return scores.masked_fill(~keep, float("-inf"))


def test_audio_state_machine_with_a_user_logits_processor(model):
    reasoning = [12, 1, 2, 3]  # BOS position + 3 reasoning frames
    reconstruction = [37, 20, 21]  # BOS position + 2 reconstruction frames (+R)
    script = [reasoning + [13] + reconstruction + [36, 0]]
    out = model.generate(**_tts_prompt(), generation_mode="audio", do_sample=False, max_new_frames=50,
                         logits_processor=LogitsProcessorList([ScriptedFrames(script)]))
    assert isinstance(out, GenerateDecoderOnlyOutput) and out.frames is out.sequences
    assert out.finished.tolist() == [True]
    assert out.frames.shape == (1, 9, 8)  # stops on the all-EOS frame, which is not fed back
    assert out.frames[0, :, 0].tolist() == script[0][:9]
    assert out.frame_kinds[0].tolist() == [0, 0, 0, 0, 2, 1, 1, 1, 3]
    assert out.reasoning_codes[0].tolist() == [[1, 2, 3]] * 8
    assert out.reconstruction_codes[0].tolist() == [[4, 5]] * 8  # offset removed


def test_stopped_items_repeat_their_stop_frame(model):
    script = [[13, 20, 36, 0, 0, 0], [13, 20, 21, 22, 23, 24]]
    out = model.generate(**_tts_prompt(batch_size=2), generation_mode="audio", do_sample=False, max_new_frames=6,
                         logits_processor=LogitsProcessorList([ScriptedFrames(script)]))
    assert out.frame_kinds.tolist() == [[2, 1, 3, -1, -1, -1], [2, 1, 1, 1, 1, 1]]
    assert out.frames[0, :, 0].tolist() == [13, 20, 36, 36, 36, 36]
    assert out.finished.tolist() == [True, False]
    assert out.reconstruction_codes[1].tolist() == [[5, 6, 7, 8]] * 8


def test_reasoning_ids_are_forbidden_after_the_reasoning_eos_frame(model):
    first_frame_is_reasoning_eos = ScriptedFrames([[13]])

    class FirstFrameOnly(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return first_frame_is_reasoning_eos(input_ids, scores) if input_ids.shape[1] == 0 else scores

    out = model.generate(**_tts_prompt(), generation_mode="audio", do_sample=True, top_k=0, temperature=2.0,
                         max_new_frames=8, output_scores=True, logits_processor=LogitsProcessorList([FirstFrameOnly()]),
                         generator=torch.Generator().manual_seed(0))
    reasoning_range = slice(0, model.config.reasoning_vocab_size)
    assert bool(torch.isfinite(out.scores[0][0, 0, reasoning_range]).any())
    assert all(bool(torch.isinf(scores[..., reasoning_range]).all()) for scores in out.scores[1:])
    assert bool((out.frames[0, 1:] >= 16).all())
    assert out.frame_kinds[0, 0].item() == 2 and bool((out.frame_kinds[0, 1:] == 1).all())


def test_classifier_free_guidance_is_the_librarys_processor(model):
    prompt = _tts_prompt()
    guided = model.generate(**prompt, generation_mode="audio", top_k=1, guidance_scale=3.0, max_new_frames=2,
                            output_scores=True, output_logits=True)
    cond = model.generate(**prompt, generation_mode="audio", top_k=1, max_new_frames=1, output_logits=True)
    uncond_ids = torch.full_like(prompt["input_ids"], model.config.text_pad_token_id)
    uncond = model.generate(input_ids=uncond_ids, generation_mode="audio", top_k=1, max_new_frames=1, output_logits=True)
    # The raw logits hold the conditional rows, then the unconditional ones (codebook 0 only reads the prompt).
    raw = guided.logits[0]
    assert raw.shape == (2, 8, 40)
    torch.testing.assert_close(raw[0, 0], cond.logits[0][0, 0])
    torch.testing.assert_close(raw[1, 0], uncond.logits[0][0, 0])
    c, u = raw[0], raw[1]
    torch.testing.assert_close(guided.scores[0][0], u + 3.0 * (c - u), atol=1e-4, rtol=1e-4)
    assert guided.frames.shape[0] == 1 and not torch.allclose(guided.scores[0][0, 0], c[0])
    # guidance <= 1 is plain conditional decoding
    plain = model.generate(**prompt, generation_mode="audio", top_k=1, guidance_scale=1.0, max_new_frames=1, output_logits=True)
    torch.testing.assert_close(plain.logits[0], cond.logits[0])


def test_audio_scores_and_logits_are_the_library_warpers_output(model):
    out = model.generate(**_tts_prompt(), generation_mode="audio", depth_decoder_do_sample=True, depth_decoder_top_k=5,
                         depth_decoder_temperature=0.5, max_new_frames=3, return_dict_in_generate=True,
                         output_scores=True, output_logits=True, generator=torch.Generator().manual_seed(0))
    assert len(out.scores) == len(out.logits) == out.frames.shape[1] == 3
    for scores, logits in zip(out.scores, out.logits):
        assert scores.shape == logits.shape == (1, 8, 40)
        expected = TopKLogitsWarper(5)(None, TemperatureLogitsWarper(0.5)(None, logits[0]))
        torch.testing.assert_close(scores[0], expected)
    # every sampled code is one of its codebook's 5 kept ids
    for frame, scores in enumerate(out.scores):
        picked = scores[0].gather(-1, out.frames[0, frame].unsqueeze(-1))
        assert bool(torch.isfinite(picked).all())
    # without the flags, nothing is recorded
    plain = model.generate(**_tts_prompt(), generation_mode="audio", top_k=1, max_new_frames=2)
    assert plain.scores is None and plain.logits is None


def test_audio_repetition_penalty_reads_each_codebooks_previous_codes(model):
    out = model.generate(**_tts_prompt(), generation_mode="audio", do_sample=False, repetition_penalty=1.7,
                         max_new_frames=4, output_scores=True, output_logits=True)
    for frame in range(1, 4):
        for codebook in range(8):
            previous = out.frames[0, :frame, codebook].unsqueeze(0)
            expected = RepetitionPenaltyLogitsProcessor(1.7)(previous, out.logits[frame][:, codebook].clone())
            torch.testing.assert_close(out.scores[frame][:, codebook], expected)


def test_depth_decoder_settings_come_from_the_generation_config(model):
    prompt, seed = _tts_prompt(), 7
    greedy = model.generate(**prompt, generation_mode="audio", do_sample=False, max_new_frames=4)
    for kwargs in ({"top_k": 1}, {"depth_decoder_do_sample": False}, {"depth_decoder_top_k": 1, "do_sample": True}):
        assert torch.equal(model.generate(**prompt, generation_mode="audio", max_new_frames=4, **kwargs).frames, greedy.frames)
    explicit = {"do_sample": True, "temperature": 1.3, "top_k": 7}
    sampled = model.generate(**prompt, generation_mode="audio", max_new_frames=4, **explicit,
                             generator=torch.Generator().manual_seed(seed))
    assert not torch.equal(sampled.frames, greedy.frames)
    config = model.generation_config
    try:
        config.depth_decoder_do_sample, config.depth_decoder_temperature, config.depth_decoder_top_k = True, 1.3, 7
        stored = model.generate(**prompt, generation_mode="audio", max_new_frames=4,
                                generator=torch.Generator().manual_seed(seed))
        # the prefixed argument wins over the unprefixed one and over the stored value
        overridden = model.generate(**prompt, generation_mode="audio", max_new_frames=4, do_sample=True,
                                    depth_decoder_do_sample=False)
        config.max_new_frames = 3
        bounded = model.generate(**prompt, generation_mode="audio", depth_decoder_do_sample=False)
    finally:
        for key in ("depth_decoder_do_sample", "depth_decoder_temperature", "depth_decoder_top_k", "max_new_frames"):
            delattr(config, key)
    assert torch.equal(stored.frames, sampled.frames)
    assert torch.equal(overridden.frames, greedy.frames)
    assert torch.equal(bounded.frames, greedy.frames[:, :3])


def test_audio_streamer_receives_every_frame(model):
    class Collect(BaseStreamer):
        def __init__(self):
            self.frames, self.ended = [], 0

        def put(self, value):
            self.frames.append(value)

        def end(self):
            self.ended += 1

    streamer = Collect()
    out = model.generate(**_tts_prompt(batch_size=2), generation_mode="audio", top_k=1, max_new_frames=5, streamer=streamer)
    assert streamer.ended == 1 and len(streamer.frames) == 5
    assert all(frame.device.type == "cpu" and frame.shape == (2, 8) for frame in streamer.frames)
    assert torch.equal(torch.stack(streamer.frames, dim=1), out.frames)


def test_audio_sampling_is_reproducible_with_a_generator(model):
    prompt = _tts_prompt()
    first = model.generate(**prompt, generation_mode="audio", do_sample=True, max_new_frames=3, generator=torch.Generator().manual_seed(3))
    second = model.generate(**prompt, generation_mode="audio", do_sample=True, max_new_frames=3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.frames, second.frames)


def test_bad_generation_arguments(model):
    with pytest.raises(ValueError, match="generation_mode"):
        model.generate(**_tts_prompt(), generation_mode="video")
    with pytest.raises(ValueError, match="max_new_frames"):
        model.generate(**_tts_prompt(), generation_mode="audio", max_new_frames=0)
    with pytest.raises(ValueError, match="Unsupported.*num_beams.*beam search ranks single-token"):
        model.generate(**_tts_prompt(), generation_mode="audio", max_new_frames=2, num_beams=2)
    with pytest.raises(ValueError, match="assistant_model.*candidate verification"):
        model.generate(**_tts_prompt(), generation_mode="audio", max_new_frames=2, assistant_model=model)
    with pytest.raises(ValueError, match="max_new_tokens.*max_new_frames"):
        model.generate(**_tts_prompt(), generation_mode="audio", max_new_frames=2, max_new_tokens=5)
    with pytest.raises(ValueError, match="Unsupported.*foo"):
        model.generate(**_tts_prompt(), generation_mode="audio", max_new_frames=2, foo=1)
    with pytest.raises(ValueError, match="depth_decoder_foo"):
        model.generate(**_tts_prompt(), generation_mode="audio", max_new_frames=2, depth_decoder_foo=1)
    # a model without `max_new_frames` in its generation config needs it passed
    with pytest.raises(ValueError, match="needs `max_new_frames`"):
        model.generate(**_tts_prompt(), generation_mode="audio")
    with pytest.raises(ValueError, match="temperature"):
        model.generate(**_tts_prompt(), generation_mode="audio", max_new_frames=2, do_sample=True, temperature=0.0)
    # num_beams=1 / num_return_sequences=1 are the defaults, not beam search
    model.generate(**_tts_prompt(), generation_mode="audio", max_new_frames=1, num_beams=1, num_return_sequences=1)


def test_reasoning_bound_and_code_constraints(model):
    out = model.generate(**_tts_prompt(), generation_mode="audio", do_sample=True, top_k=0, max_new_frames=9,
                         max_reasoning_frames=3, constrain_audio_codes=True, generator=torch.Generator().manual_seed(0))
    # 3 reasoning frames, the forced reasoning-EOS frame, then reconstruction frames
    assert out.frame_kinds[0, :4].tolist() == [0, 0, 0, 2]
    assert bool((out.frames[0, 3] == 13).all())
    # Each phase opens with its BOS frame, as the grids of training do (dropped from the returned codes).
    config = model.config
    assert bool((out.frames[0, 0] == config.reasoning_bos_token_id).all())
    assert bool((out.frames[0, 4] == config.reconstruction_bos_token_id).all())
    reasoning, reconstruction = out.reasoning_codes[0], out.reconstruction_codes[0]
    assert reasoning.shape == (8, 2) and bool((reasoning < 12).all())
    # every returned reconstruction code is a codec code (no special ids), so it can be decoded
    assert reconstruction.shape[1] >= 1 and bool(((reconstruction >= 0) & (reconstruction < 20)).all())


@pytest.mark.parametrize("constrain", [False, True])
def test_min_reconstruction_frames_holds_back_the_eos(model, constrain):
    config = model.config

    def eos_first(module, args, output):
        # A model that wants to stop at once: each phase's EOS outscores every code the phase allows.
        logits = output[0]
        logits[..., config.reasoning_eos_token_id] += 2e4
        logits[..., config.reconstruction_eos_token_id] += 1e4

    handle = model.depth_decoder.register_forward_hook(eos_first)
    try:
        kwargs = {"generation_mode": "audio", "top_k": 1, "max_new_frames": 20, "constrain_audio_codes": constrain}
        eager = model.generate(**_tts_prompt(), **kwargs)
        held = model.generate(**_tts_prompt(), min_reconstruction_frames=4, **kwargs)
        model.generation_config.min_reconstruction_frames = 2
        from_config = model.generate(**_tts_prompt(), **kwargs)
    finally:
        handle.remove()
        del model.generation_config.min_reconstruction_frames
    # reasoning EOS, then the (unreturned) first reconstruction frame, then the EOS
    assert eager.reconstruction_codes[0].shape[1] == 0
    assert held.reconstruction_codes[0].shape[1] == 4
    assert from_config.reconstruction_codes[0].shape[1] == 2
    # Constrained, the reasoning phase cannot end before its BOS frame and the reconstruction phase opens with its BOS.
    assert held.frame_kinds[0].tolist() == ([0] if constrain else []) + [2, 1, 1, 1, 1, 1, 3]
    if constrain:
        assert bool((held.frames[0, 2] == config.reconstruction_bos_token_id).all())
    with pytest.raises(ValueError, match="min_reconstruction_frames"):
        model.generate(**_tts_prompt(), generation_mode="audio", max_new_frames=2, min_reconstruction_frames=-1)
