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
Training throughput and peak memory of `UniAudio2ForConditionalGeneration`, with and without activation (gradient)
checkpointing, measured in the same run on the same batches.

One training step is forward (text + codebook losses) + backward + AdamW on a batch of synthetic multi-task grids
(ASR, TTS, audio captioning, text-to-audio) packed to `--seq_len` rows, built with the real data pipeline
(`uniaudio2.data_uniaudio2`). Throughput counts grid rows ("tokens": a text token or an audio frame of 8 codes).
Memory: on CUDA the peak allocated memory of each variant (optimizer states included); on CPU each variant runs in
its own child process and reports its peak resident memory above the level before the first step; both report the
peak of the activations autograd keeps for the backward pass (saved-tensor hooks), the part checkpointing reduces.
Throughput uses the median step time, which is robust to other processes sharing the CPU.

    python benchmarks/benchmark_training.py [--preset small|medium] [--batch_size 4] [--seq_len 512] [--steps 5]
"""

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from uniaudio2.configuration_uniaudio2 import UniAudio2Config  # noqa: E402
from uniaudio2.data_uniaudio2 import (  # noqa: E402
    UniAudio2DataCollator,
    encode_grids,
    examples_to_dataset,
    pack_grids,
    synthetic_examples,
    synthetic_special_ids,
)
from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration  # noqa: E402


PRESETS = {
    # width, layers (understanding, backbone, generation), heads, kv, decoder width, decoder layers, text vocab
    "small": (256, (1, 4, 1), 8, 2, 128, 2, 32000),
    "medium": (512, (2, 8, 1), 8, 2, 256, 4, 128256),
}


def build_model(preset: str) -> UniAudio2ForConditionalGeneration:
    width, (u, b, g), heads, kv, dec_width, dec_layers, vocab = PRESETS[preset]
    config = UniAudio2Config(
        vocab_size=vocab, hidden_size=width, intermediate_size=width * 3, num_understanding_layers=u,
        num_backbone_layers=b, num_generation_layers=g, num_attention_heads=heads, num_key_value_heads=kv,
        head_dim=width // heads, reasoning_vocab_size=4100, reconstruction_vocab_size=8200, bos_token_id=vocab - 256,
        eos_token_id=vocab - 255, pad_token_id=vocab - 236, text_pad_token_id=vocab - 236, use_cache=False,
        depth_decoder_config=dict(hidden_size=dec_width, intermediate_size=dec_width * 3, num_hidden_layers=dec_layers,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=dec_width // 4),
    )
    torch.manual_seed(0)
    return UniAudio2ForConditionalGeneration(config)


def build_batches(config, batch_size: int, seq_len: int, steps: int) -> list[dict]:
    ids = synthetic_special_ids(config)
    rows = synthetic_examples(
        config, ids, num_examples=batch_size * steps * 12, tasks=("ASR", "TTS", "audio_caption", "TTA"), seed=0,
        text_length=(8, 24), reasoning_frames=(10, 40),
    )
    packed = pack_grids(encode_grids(examples_to_dataset(rows), ids, max_length=seq_len), seq_len)
    packed = packed.sort("length", reverse=True).select(range(batch_size * steps))
    collator = UniAudio2DataCollator(ids, seed=0, pad_to_multiple_of=seq_len)
    return [collator([packed[i] for i in range(s * batch_size, (s + 1) * batch_size)]) for s in range(steps)]


class SavedActivations:
    """Tracks the bytes of the tensors autograd saves for backward (peak over a step)."""

    def __init__(self):
        self.current = self.peak = 0

    def pack(self, tensor):
        size = tensor.numel() * tensor.element_size()
        self.current += size
        self.peak = max(self.peak, self.current)
        return tensor, size

    def unpack(self, packed):
        tensor, size = packed
        return tensor


def run_variant(preset: str, checkpointing: bool, batch_size: int, seq_len: int, steps: int, warmup: int, device: str) -> dict:
    model = build_model(preset).to(device).train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = build_batches(model.config, batch_size, seq_len, warmup + steps)
    batches = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in batches]
    saved = SavedActivations()

    def step(batch):
        saved.current = 0
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    # Baselines before the first step: the model, optimizer-free state and the batches are resident.
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for batch in batches[:warmup]:
        step(batch)
    times, rows, losses = [], 0, []
    for batch in batches[warmup:]:
        start = time.perf_counter()
        losses.append(float(step(batch)))
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        rows += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
    result = {
        "checkpointing": checkpointing,
        # Median step time: robust to other processes sharing the CPU.
        "tokens_per_second": rows / len(times) / statistics.median(times),
        "step_seconds_median": statistics.median(times),
        "saved_activations_mib": saved.peak / 2**20,
        "first_loss": losses[0],
    }
    if device == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["peak_memory_mib"] = max(rss_after - rss_before, 0) / 2**20
        result["peak_rss_mib"] = rss_after / 2**20
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variant", choices=["plain", "checkpointing"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.variant is not None:
        result = run_variant(args.preset, args.variant == "checkpointing", args.batch_size, args.seq_len, args.steps,
                             args.warmup, args.device)
        print(json.dumps(result))
        return 0

    results = []
    for variant in ("plain", "checkpointing"):
        if args.device == "cuda":
            results.append(run_variant(args.preset, variant == "checkpointing", args.batch_size, args.seq_len,
                                       args.steps, args.warmup, args.device))
            torch.cuda.empty_cache()
        else:
            # One process per variant: the peak resident memory of a process never goes down.
            command = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--variant", variant]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))

    plain, checkpointed = results
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"UniAudio 2.0 training step, preset {args.preset}, batch {args.batch_size} x {args.seq_len} rows, "
          f"{args.steps} timed steps after {args.warmup} warm-up; torch {torch.__version__}, {args.device} ({device}, "
          f"{torch.get_num_threads()} threads)")
    memory = "peak allocated" if args.device == "cuda" else "peak RSS increase"
    print(f"{'variant':<24}{'tokens/s':>12}{'step s':>10}{memory + ' MiB':>26}{'saved activations MiB':>24}")
    for name, result in (("plain", plain), ("activation checkpointing", checkpointed)):
        print(f"{name:<24}{result['tokens_per_second']:>12.1f}{result['step_seconds_median']:>10.3f}"
              f"{result['peak_memory_mib']:>26.1f}{result['saved_activations_mib']:>24.1f}")
    print(f"ratios (checkpointing / plain): throughput {checkpointed['tokens_per_second'] / plain['tokens_per_second']:.2f}, "
          f"saved activations {checkpointed['saved_activations_mib'] / max(plain['saved_activations_mib'], 1e-9):.2f}, "
          f"peak memory {checkpointed['peak_memory_mib'] / max(plain['peak_memory_mib'], 1e-9):.2f}")
    if abs(plain["first_loss"] - checkpointed["first_loss"]) > 1e-3 * max(1.0, abs(plain["first_loss"])):
        print("warning: the two variants computed different losses", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
