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
ReasoningCodec cost, ours next to the reference-equivalent windowing, measured in one process on the same weights.

* Encode: our `encode()` computes only the 30 s windows whose codes are kept; the original LLM pipeline
  (`audio2token`) tiles a clip to at least one window and encodes `floor(length / 30 s) + 1` windows (2 for any
  clip under 30 s). Reported as seconds of compute per second of audio, for 1 s and 10 s clips.
* Decode: cost of one flow-matching step for 10 s of codes, our exact-length decoding next to the reference's
  tiling of short inputs to a full 20 s window.
* Peak memory: the peak resident set size during each measurement (sampled every 5 ms), above the baseline.

    python benchmarks/benchmark_codec.py [--preset small|medium] [--repeats 2]
"""

import argparse
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from uniaudio2.configuration_reasoning_codec import ReasoningCodecConfig  # noqa: E402
from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel  # noqa: E402


def preset_config(preset: str) -> ReasoningCodecConfig:
    """Reduced depths with the released structure (the full model needs minutes per 30 s window on 2 CPU cores)."""
    width = {"small": 64, "medium": 256}[preset]
    layers = {"small": 2, "medium": 4}[preset]
    return ReasoningCodecConfig(
        whisper_config={
            "d_model": width, "encoder_layers": layers, "encoder_attention_heads": 4, "encoder_ffn_dim": 4 * width,
            "decoder_layers": 1, "decoder_attention_heads": 4, "decoder_ffn_dim": 4 * width, "vocab_size": 8,
            "max_target_positions": 8, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
            "decoder_start_token_id": 1,
        },
        wavlm_config={
            "hidden_size": width, "num_hidden_layers": layers + 2, "num_attention_heads": 4,
            "intermediate_size": 4 * width, "conv_dim": [width] * 7, "num_conv_pos_embeddings": 32,
            "num_conv_pos_embedding_groups": 4,
        },
        music_ssl_config={
            "hidden_size": width, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 4 * width,
            "conv_dim": 32, "conv_depthwise_kernel_size": 31, "acoustic_layer": 1, "semantic_layer": 2,
        },
        reasoning_config={"hidden_size": 2 * width, "num_hidden_layers": 2, "head_dim": 64, "codebook_size": 1024,
                          "codebook_dim": 64},
        reconstruction_config={"hidden_size": 2 * width, "codebook_size": 1024, "codebook_dim": 32,
                               "wavlm_layer_start": 1, "wavlm_layer_end": layers + 1},
        decoder_config={"hidden_size": 2 * width, "dit_num_hidden_layers": layers, "dit_num_attention_heads": 4,
                        "dit_attention_head_dim": 64, "sq_init_channel": 8},
    )


def _release_free_memory():
    """Give freed heap memory back to the OS (glibc), so that RSS growth measures the block's working set."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def peak_rss():
    """Yield a dict whose `"peak_mb"` is the peak RSS above the starting RSS while the block ran."""
    _release_free_memory()
    process, result, stop = psutil.Process(), {"peak_mb": 0.0}, threading.Event()
    start = process.memory_info().rss

    def sample():
        peak = start
        while not stop.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)
        result["peak_mb"] = (max(peak, process.memory_info().rss) - start) / 2**20

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()


def timed(fn, repeats):
    times = []
    with peak_rss() as memory:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times), memory["peak_mb"]


def timed_pair(ours, reference, repeats):
    """Median time and peak memory of two functions, measured alternately so that load drift hits both alike."""
    results = {"ours": ([], 0.0), "reference": ([], 0.0)}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("reference", reference)):
            elapsed, peak = timed(fn, 1)
            times, best = results[name]
            times.append(elapsed)
            results[name] = (times, max(best, peak))
    return {name: (statistics.median(times), peak) for name, (times, peak) in results.items()}


@torch.no_grad()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", choices=["small", "medium"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--decode_seconds", type=float, default=10.0)
    parser.add_argument("--decode_steps", type=int, default=10)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = ReasoningCodecModel(preset_config(args.preset)).eval()
    rate = model.config.sampling_rate
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"preset={args.preset} params={params:.1f}M threads={torch.get_num_threads()} torch={torch.__version__}")

    for seconds in (1.0, 10.0):
        clip = 0.1 * torch.randn(int(seconds * rate), generator=torch.Generator().manual_seed(0))
        ours_windows = model.pipeline_windows(clip)
        reference_windows = model.pipeline_windows(clip, reference_equivalent=True)
        model.encode(clip[None, None])  # warm-up
        measured = timed_pair(
            lambda: model.encode(clip[None, None]),
            lambda: model._encode_waveforms(reference_windows, model.config.encode_batch_size),
            args.repeats,
        )
        (ours_t, ours_mb), (ref_t, ref_mb) = measured["ours"], measured["reference"]
        print(
            f"encode {seconds:4.1f}s clip: ours {ours_t / seconds:7.3f} s/s ({ours_windows.shape[0]} window, "
            f"peak +{ours_mb:.0f} MB) | reference-equivalent {ref_t / seconds:7.3f} s/s "
            f"({reference_windows.shape[0]} windows, peak +{ref_mb:.0f} MB) | ratio {ref_t / ours_t:4.2f}x cheaper"
        )

    frames = int(args.decode_seconds * model.config.reconstruction_frame_rate)
    codebook_size = model.config.reconstruction_config.codebook_size
    codes = torch.randint(0, codebook_size, (1, model.config.num_reconstruction_quantizers, frames),
                          generator=torch.Generator().manual_seed(0))

    # Time every call of the DiT velocity network (one per Euler step without guidance) with forward hooks.
    dit_times = []
    dit = model.decoder.dit
    dit.register_forward_pre_hook(lambda module, args: dit_times.append(-time.perf_counter()))
    dit.register_forward_hook(lambda module, args, output: dit_times.__setitem__(-1, dit_times[-1] + time.perf_counter()))

    def decode(tile):
        model.decode(codes, num_steps=args.decode_steps, guidance_scale=1.0, tile_short_inputs=tile,
                     generator=torch.Generator().manual_seed(0))

    results = {}
    for tile in (False, True):
        decode(tile)  # warm-up (first calls allocate and pick kernels)
        dit_times.clear()
        total, memory = timed(lambda: decode(tile), args.repeats)
        results[tile] = (statistics.median(dit_times), total, memory)
    (ours_step, ours_total, ours_mb), (ref_step, ref_total, ref_mb) = results[False], results[True]
    print(
        f"decode {args.decode_seconds:.0f}s of codes, {args.decode_steps} steps: ours {ours_step:.3f} s/step, "
        f"{ours_total:.2f} s total (peak +{ours_mb:.0f} MB) | reference-equivalent (short input tiled to a 20 s "
        f"window) {ref_step:.3f} s/step, {ref_total:.2f} s total (peak +{ref_mb:.0f} MB) | ratio per step "
        f"{ref_step / ours_step:4.2f}x cheaper"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
