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
"""Command line interface: `uniaudio2 <command>` (also `python -m uniaudio2.cli <command>`)."""

import argparse
import os
import sys
import time
from pathlib import Path


def _tiny_lm_config(seed: int):
    from .configuration_uniaudio2 import UniAudio2Config

    # Tiny shapes, but the real Llama-3 special ids and the codec layout (8 codebooks, reasoning block first).
    return UniAudio2Config(
        vocab_size=128256,
        hidden_size=64,
        intermediate_size=128,
        num_understanding_layers=1,
        num_backbone_layers=2,
        num_generation_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        reasoning_vocab_size=64,
        reconstruction_vocab_size=72,
        reasoning_bos_token_id=60,
        reasoning_eos_token_id=61,
        reasoning_pad_token_id=63,
        reconstruction_bos_token_id=64 + 65,
        reconstruction_eos_token_id=64 + 64,
        reconstruction_pad_token_id=64 + 66,
        depth_decoder_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8
        ),
    )


def build_tiny_lm(seed: int = 0):
    """A tiny, untrained UniAudio 2.0 language model built deterministically from `seed`."""
    import torch

    from .modeling_uniaudio2 import UniAudio2ForConditionalGeneration

    torch.manual_seed(seed)
    model = UniAudio2ForConditionalGeneration(_tiny_lm_config(seed)).eval()
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = model.config.pad_token_id
    model.generation_config.do_sample = False
    return model


def run_demo(args) -> int:
    """Build the tiny default, save it, reload it with the Auto classes offline and generate text and audio."""
    import torch
    from transformers import AutoModelForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    output_dir = Path(args.output_dir)
    model_dir = output_dir / "tiny-uniaudio2"
    print("UniAudio 2.0 demo on the embedded tiny default. Its weights are RANDOM (untrained): outputs mean nothing.")
    start = time.perf_counter()
    build_tiny_lm(args.seed).save_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    print(f"saved and reloaded {type(model).__name__} from {model_dir} in {time.perf_counter() - start:.2f}s")

    config = model.config
    generator = torch.Generator().manual_seed(args.seed)
    # ASR-style prompt: text rows, then a reasoning segment and a reconstruction segment of an audio clip.
    prompt_text = torch.tensor([[config.bos_token_id, 1000, 2000, 3000, 271, config.eos_token_id]])
    reasoning = torch.randint(0, 60, (4, 8), generator=generator)
    reconstruction = torch.randint(0, 64, (7, 8), generator=generator) + config.reasoning_vocab_size
    frames = torch.cat([
        torch.full((1, 8), config.reasoning_bos_token_id), reasoning, torch.full((1, 8), config.reasoning_eos_token_id),
        torch.full((1, 8), config.reconstruction_bos_token_id), reconstruction,
        torch.full((1, 8), config.reconstruction_eos_token_id),
    ])
    input_ids = torch.cat([prompt_text, torch.zeros(1, frames.shape[0], dtype=torch.long)], 1)
    audio_codes = torch.cat([torch.zeros(1, prompt_text.shape[1], 8, dtype=torch.long), frames[None]], 1)
    audio_codes_mask = torch.arange(input_ids.shape[1])[None] >= prompt_text.shape[1]
    start = time.perf_counter()
    text = model.generate(input_ids=input_ids, audio_codes=audio_codes, audio_codes_mask=audio_codes_mask, max_new_tokens=16)
    elapsed = time.perf_counter() - start
    new_tokens = text[0, input_ids.shape[1]:].tolist()
    print(f"text mode (audio → text): {len(new_tokens)} tokens in {elapsed:.2f}s: {new_tokens}")

    start = time.perf_counter()
    audio = model.generate(
        input_ids=prompt_text, generation_mode="audio", max_new_frames=args.max_new_frames,
        generator=torch.Generator().manual_seed(args.seed),
    )
    elapsed = time.perf_counter() - start
    print(
        f"audio mode (text → audio): {audio.frames.shape[1]} frames in {elapsed:.2f}s; reasoning codes "
        f"{tuple(audio.reasoning_codes[0].shape)}, reconstruction codes {tuple(audio.reconstruction_codes[0].shape)}"
    )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="uniaudio2", description="UniAudio 2.0 for Hugging Face Transformers.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the whole chain on the embedded tiny default")
    demo.add_argument("--output_dir", default="outputs/demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--max_new_frames", type=int, default=20)
    demo.set_defaults(func=run_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"uniaudio2 {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
