import logging

import pytest
import torch

from conftest import random_grid, tiny_uniaudio2_config
from uniaudio2.generation_uniaudio2 import UniAudio2GenerationMixin
from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration


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


def _scripted_sampler(frames):
    frames = iter(frames)

    def sample(self, last_hidden, forbid_reasoning, **kwargs):
        frame = torch.tensor(next(frames)).unsqueeze(0).expand(last_hidden.shape[0], -1)
        return frame, torch.zeros(frame.shape[0], 8, 40)

    return sample


def test_audio_state_machine(model, monkeypatch):
    reasoning = [[i] * 8 for i in (12, 1, 2, 3)]  # BOS position + 3 reasoning frames
    reconstruction = [[37] * 8] + [[16 + i] * 8 for i in (4, 5)]  # BOS position + 2 reconstruction frames (+R)
    script = reasoning + [[13] * 8] + reconstruction + [[36] * 8, [0] * 8]
    monkeypatch.setattr(UniAudio2GenerationMixin, "_sample_audio_frame", _scripted_sampler(script))
    out = model.generate(**_tts_prompt(), generation_mode="audio", max_new_frames=50)
    assert out.finished.tolist() == [True]
    assert out.frames.shape[1] == 9  # stops on the all-EOS frame, which is not fed back
    assert out.frame_kinds[0].tolist() == [0, 0, 0, 0, 2, 1, 1, 1, 3]
    assert out.reasoning_codes[0].tolist() == [[1, 2, 3]] * 8
    assert out.reconstruction_codes[0].tolist() == [[4, 5]] * 8  # offset removed


def test_reasoning_ids_are_forbidden_after_the_reasoning_eos_frame(model, monkeypatch):
    original = UniAudio2GenerationMixin._sample_audio_frame
    calls = {"n": 0, "forbid": []}

    def first_frame_is_reasoning_eos(self, last_hidden, forbid_reasoning, **kwargs):
        calls["forbid"].append(forbid_reasoning.tolist())
        frame, scores = original(self, last_hidden, forbid_reasoning, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            frame = torch.full_like(frame, 13)
        return frame, scores

    monkeypatch.setattr(UniAudio2GenerationMixin, "_sample_audio_frame", first_frame_is_reasoning_eos)
    torch.manual_seed(0)
    out = model.generate(**_tts_prompt(), generation_mode="audio", do_sample=True, top_k=0, temperature=2.0, max_new_frames=8)
    assert calls["forbid"][0] == [False] and all(f == [True] for f in calls["forbid"][1:])
    assert bool((out.frames[0, 1:] >= 16).all())
    assert out.frame_kinds[0, 0].item() == 2 and bool((out.frame_kinds[0, 1:] == 1).all())


def test_classifier_free_guidance_is_applied(model):
    prompt = _tts_prompt()
    guided = model.generate(**prompt, generation_mode="audio", top_k=1, guidance_scale=3.0, max_new_frames=2, output_scores=True)
    cond = model.generate(**prompt, generation_mode="audio", top_k=1, max_new_frames=1, output_scores=True)
    uncond_ids = torch.full_like(prompt["input_ids"], model.config.text_pad_token_id)
    uncond = model.generate(input_ids=uncond_ids, generation_mode="audio", top_k=1, max_new_frames=1, output_scores=True)
    c, u = cond.audio_scores[0, 0, 0], uncond.audio_scores[0, 0, 0]
    torch.testing.assert_close(guided.audio_scores[0, 0, 0], u + 3.0 * (c - u), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(guided.audio_scores[0, 0, 0], c)
    # guidance <= 1 is plain conditional decoding
    plain = model.generate(**prompt, generation_mode="audio", top_k=1, guidance_scale=1.0, max_new_frames=1, output_scores=True)
    torch.testing.assert_close(plain.audio_scores, cond.audio_scores)


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
    with pytest.raises(ValueError, match="Unsupported"):
        model.generate(**_tts_prompt(), generation_mode="audio", num_beams=2)


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
        logits = output[0].clone()
        logits[..., config.reasoning_eos_token_id] += 2e4
        logits[..., config.reconstruction_eos_token_id] += 1e4
        return (logits, *output[1:])

    handle = model.depth_decoder.register_forward_hook(eos_first)
    try:
        kwargs = {"generation_mode": "audio", "top_k": 1, "max_new_frames": 20, "constrain_audio_codes": constrain}
        eager = model.generate(**_tts_prompt(), **kwargs)
        held = model.generate(**_tts_prompt(), min_reconstruction_frames=4, **kwargs)
        model.generation_config.min_reconstruction_frames = 2
        from_config = model.generate(**_tts_prompt(), **kwargs)
    finally:
        handle.remove()
        model.generation_config.min_reconstruction_frames = None
    # reasoning EOS, then the (unreturned) first reconstruction frame, then the EOS
    assert eager.reconstruction_codes[0].shape[1] == 0
    assert held.reconstruction_codes[0].shape[1] == 4
    assert from_config.reconstruction_codes[0].shape[1] == 2
    # Constrained, the reasoning phase cannot end before its BOS frame and the reconstruction phase opens with its BOS.
    assert held.frame_kinds[0].tolist() == ([0] if constrain else []) + [2, 1, 1, 1, 1, 1, 3]
    if constrain:
        assert bool((held.frames[0, 2] == config.reconstruction_bos_token_id).all())
    with pytest.raises(ValueError, match="min_reconstruction_frames"):
        model.generate(**_tts_prompt(), generation_mode="audio", min_reconstruction_frames=-1)
