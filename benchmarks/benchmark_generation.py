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
Generation speed of `UniAudio2ForConditionalGeneration.generate()` next to a reference-style loop, in one process.

The baseline reproduces the loop of the original inference scripts (`evaluation/asr_task.py`, `tts_task.py`) with
the same weights: prefill all prompt rows but the last, then one `generate_frame` per step, which always runs both
heads (text logits *and* the 8 depth-decoder steps) whatever the task needs, and samples with the exponential-race
top-k sampler. Our `generate()` uses the transformers generation loop in text mode (no depth decoder) and the
frame loop in audio mode. Both are greedy and produce the same tokens (checked here), so the ratio is a pure
speed comparison.

    python benchmarks/benchmark_generation.py [--preset small|medium] [--new_tokens 64] [--new_frames 32]
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers.cache_utils import DynamicCache


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from uniaudio2.configuration_uniaudio2 import UniAudio2Config  # noqa: E402
from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration  # noqa: E402


PRESETS = {
    # width, layers (understanding, backbone, generation), heads, kv, decoder width, decoder layers, text vocab
    "small": (256, (1, 4, 1), 8, 2, 128, 2, 32000),
    "medium": (512, (2, 8, 1), 8, 2, 256, 4, 128256),
}


def build_model(preset: str) -> UniAudio2ForConditionalGeneration:
    width, (u, b, g), heads, kv, dec_width, dec_layers, vocab = PRESETS[preset]
    config = UniAudio2Config(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=width * 3,
        num_understanding_layers=u,
        num_backbone_layers=b,
        num_generation_layers=g,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=width // heads,
        reasoning_vocab_size=4100,
        reconstruction_vocab_size=8200,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        text_pad_token_id=3,
        depth_decoder_config=dict(
            hidden_size=dec_width,
            intermediate_size=dec_width * 3,
            num_hidden_layers=dec_layers,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=dec_width // 8,
        ),
    )
    torch.manual_seed(0)
    return UniAudio2ForConditionalGeneration(config).eval()


def _exponential_race_top1(logits: torch.Tensor) -> torch.Tensor:
    """The reference sampler with top-k = 1 (greedy): keep the top logit, sample with `argmax(p / Exp(1))`."""
    top = torch.topk(logits, 1, dim=-1)
    masked = torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)
    probs = torch.softmax(masked, dim=-1)
    return torch.argmax(probs / torch.empty_like(probs).exponential_(1), dim=-1)


@torch.no_grad()
def reference_style_generate_frame(model, row_ids, row_codes, row_is_audio, position, cache, forbid_prefix=0):
    """One `generate_frame` of the original: both heads sampled, decoder cache reset per frame."""
    config = model.config
    out = model(
        input_ids=row_ids,
        audio_codes=row_codes,
        audio_codes_mask=row_is_audio,
        position_ids=torch.tensor([[position]]),
        cache=cache,
        use_cache=True,
    )
    hidden = out.last_hidden_state[:, -1]
    text = _exponential_race_top1(model.lm_head(hidden))
    decoder_cache = DynamicCache(config=config.depth_decoder_config)
    step_input = hidden.unsqueeze(1)
    codes = []
    for k in range(config.num_codebooks):
        logits = model.depth_decoder(step_input, cache=decoder_cache, use_cache=True).logits
        logits = logits[:, -1]
        logits[:, :forbid_prefix] = float("-inf")
        code = _exponential_race_top1(logits)
        codes.append(code)
        step_input = model.model.embed_audio_tokens(code + k * config.audio_vocab_size).unsqueeze(1)
    return text, torch.stack(codes, -1), out.cache


@torch.no_grad()
def reference_style_text(model, prompt: dict, new_tokens: int) -> list[int]:
    ids, codes, is_audio = prompt["input_ids"], prompt["audio_codes"], prompt["audio_codes_mask"]
    cache = DynamicCache(config=model.config)
    length = ids.shape[1]
    model(input_ids=ids[:, :-1], audio_codes=codes[:, :-1], audio_codes_mask=is_audio[:, :-1], cache=cache, use_cache=True)
    row = (ids[:, -1:], codes[:, -1:], is_audio[:, -1:])
    tokens = []
    for step in range(new_tokens):
        text, _, cache = reference_style_generate_frame(model, *row, length - 1 + step, cache)
        tokens.append(text.item())
        row = (text[:, None], torch.zeros(1, 1, 8, dtype=torch.long), torch.zeros(1, 1, dtype=torch.bool))
    return tokens


@torch.no_grad()
def reference_style_audio(model, prompt_ids: torch.Tensor, new_frames: int) -> torch.Tensor:
    cache = DynamicCache(config=model.config)
    length = prompt_ids.shape[1]
    model(input_ids=prompt_ids[:, :-1], cache=cache, use_cache=True)
    row = (prompt_ids[:, -1:], torch.zeros(1, 1, 8, dtype=torch.long), torch.zeros(1, 1, dtype=torch.bool))
    frames, forbid = [], 0
    for step in range(new_frames):
        _, frame, cache = reference_style_generate_frame(model, *row, length - 1 + step, cache, forbid)
        if bool((frame == model.config.reconstruction_eos_token_id).all()):
            break
        if bool((frame == model.config.reasoning_eos_token_id).all()):
            forbid = model.config.reasoning_vocab_size
        frames.append(frame)
        row = (torch.zeros(1, 1, dtype=torch.long), frame[:, None], torch.ones(1, 1, dtype=torch.bool))
    return torch.cat(frames)


def _timed_pair(ours, reference, repeats):
    """Median times (and last results) of two functions measured alternately, so that load drift hits both alike."""
    times, results = {"ours": [], "reference": []}, {}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("reference", reference)):
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in times}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--new_frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args.preset)
    generator = torch.Generator().manual_seed(0)
    prompt_len, audio_len = 16, 48
    seq = prompt_len + audio_len
    prompt = {
        "input_ids": torch.randint(4, 1000, (1, seq), generator=generator),
        "audio_codes": torch.randint(0, model.config.audio_vocab_size, (1, seq, 8), generator=generator),
        "audio_codes_mask": torch.arange(seq)[None] >= prompt_len,
    }
    tts_prompt = torch.randint(4, 1000, (1, 24), generator=generator)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"preset={args.preset} params={params:.1f}M torch={torch.__version__} threads={torch.get_num_threads()} "
          f"cpu={platform.processor() or platform.machine()}")

    # warm-up
    model.generate(**prompt, do_sample=False, max_new_tokens=2, eos_token_id=None)
    reference_style_text(model, prompt, 2)

    measured = _timed_pair(
        lambda: model.generate(**prompt, do_sample=False, max_new_tokens=args.new_tokens, eos_token_id=None),
        lambda: reference_style_text(model, prompt, args.new_tokens),
        args.repeats,
    )
    (ours_t, ours_tokens), (ref_t, ref_tokens) = measured["ours"], measured["reference"]
    same_text = ours_tokens[0, seq:].tolist() == ref_tokens
    ours_tps, ref_tps = args.new_tokens / ours_t, args.new_tokens / ref_t
    print(f"text  : ours {ours_tps:8.1f} tokens/s | reference-style {ref_tps:8.1f} tokens/s | "
          f"ratio {ours_tps / ref_tps:5.2f}x | same tokens: {same_text}")

    measured = _timed_pair(
        lambda: model.generate(input_ids=tts_prompt, generation_mode="audio", do_sample=False,
                               max_new_frames=args.new_frames),
        lambda: reference_style_audio(model, tts_prompt, args.new_frames),
        args.repeats,
    )
    (ours_t, ours_audio), (ref_t, ref_frames) = measured["ours"], measured["reference"]
    same_audio = torch.equal(ours_audio.frames[0, : ref_frames.shape[0]], ref_frames)
    ours_fps = ours_audio.frames.shape[1] / ours_t
    ref_fps = ref_frames.shape[0] / ref_t
    print(f"audio : ours {ours_fps:8.1f} frames/s | reference-style {ref_fps:8.1f} frames/s | "
          f"ratio {ours_fps / ref_fps:5.2f}x | same frames: {same_audio}")
    return 0 if same_text and same_audio else 1


if __name__ == "__main__":
    sys.exit(main())
