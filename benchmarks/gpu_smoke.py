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
GPU smoke check: what the CPU tests cannot prove, run on one CUDA device in a few minutes.

It loads the trained tiny bundle (`pretrained/tiny-uniaudio2`, remote code) and runs the checks listed by
`--dry-run`: a split device map (GPU + CPU offload) for forward/loss and both generation modes, both pipelines on the
device with seeds, static cache + `torch.compile`, bf16 sdpa left-padded batches, the codec in float32 and bf16 (codes,
decode SNR, batched pre-tokenizing on the device), one LoRA step of the full-size model under a 22 GB memory cap, and
the host syncs per generated audio frame (`torch.cuda.set_sync_debug_mode`). Each check prints one line
`name: PASS|FAIL|SKIP detail`; the last line is `gpu_smoke: passed=N failed=M skipped=K`; the exit code is 1 when a
check failed.

    python benchmarks/gpu_smoke.py                 # on cuda (default); a one-line error and exit 2 without CUDA
    python benchmarks/gpu_smoke.py --dry-run       # list the checks, needs no GPU
    python benchmarks/gpu_smoke.py --device cpu    # every check that means something on CPU (CUDA-only ones SKIP)
    python benchmarks/gpu_smoke.py --only codec_bf16_codes_and_decode_snr,host_syncs_per_audio_frame

On CPU the split map puts every module on the CPU, compilation uses the `aot_eager` backend, and the full-size LoRA
step is replaced by the same step on the small configuration of `benchmark_full_size.py --smoke` (reported as SKIP
with its outcome).
"""

import argparse
import gc
import math
import sys
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch


REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_DIR = Path(__file__).resolve().parent
for _path in (REPO_ROOT, BENCHMARKS_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import benchmark_full_size  # noqa: E402  (the full-size configuration and the LoRA recipe's settings)


DEFAULT_BUNDLE = REPO_ROOT / "pretrained" / "tiny-uniaudio2"
HELDOUT = REPO_ROOT / "examples" / "heldout"
SPEECH_CLIPS = ("test-speech-00000.wav", "test-speech-00001.wav", "test-speech-00002.wav")
MEMORY_CAP_GB = benchmark_full_size.TARGET_GPU_GB
MIN_BF16_DECODE_SNR_DB = 25.0  # as tests/test_codec_precision_uniaudio2.py (the shipped codec measured 32.7-40.3 dB)
# Modules the split map sends to the CPU (offloaded: accelerate keeps their weights on the host and runs them on the
# GPU). The depth decoder stays on the GPU: the pipelines' seeded generator lives on its codebook heads' device.
OFFLOADED = ("model.understanding_layers", "model.generation_layers")


class Skip(Exception):
    """Raised by a check that does not apply on this device (its message is the reason)."""


# ----------------------------------------------------------------------------------------------------------------------
# Shared state: the bundle, loaded once per variant
# ----------------------------------------------------------------------------------------------------------------------


class Context:
    def __init__(self, bundle: Path, device: torch.device, recipe: Path):
        self.bundle, self.device, self.recipe = bundle, device, recipe
        self.cuda = device.type == "cuda"
        self._cache = {}

    def cached(self, key, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def processor(self):
        def build():
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(self.bundle, trust_remote_code=True)
            processor.feature_extractor.place_codec(self.device)
            return processor

        return self.cached("processor", build)

    def model(self, **kwargs):
        """The bundle's language model on the device (`kwargs` go to `from_pretrained`)."""
        from transformers import AutoModelForCausalLM

        def build():
            model = AutoModelForCausalLM.from_pretrained(self.bundle, trust_remote_code=True, **kwargs).eval()
            return model if "device_map" in kwargs else model.to(self.device)

        return self.cached(("model", repr(sorted(kwargs.items()))), build)

    def codec(self, dtype=None):
        from transformers import AutoModel

        def build():
            kwargs = {} if dtype is None else {"dtype": dtype}
            codec = AutoModel.from_pretrained(self.bundle, subfolder="codec", trust_remote_code=True, **kwargs)
            return codec.eval().to(self.device)

        return self.cached(("codec", dtype), build)

    @property
    def clips(self) -> list[np.ndarray]:
        def build():
            import soundfile

            clips = []
            for name in SPEECH_CLIPS:
                audio, rate = soundfile.read(HELDOUT / name, dtype="float32", always_2d=False)
                if rate != 24000:
                    raise ValueError(f"{name}: expected 24 kHz audio, got {rate} Hz")
                clips.append(audio)
            return clips

        return self.cached("clips", build)

    @property
    def codes(self):
        """`(reasoning, reconstruction)` codes of the held-out clips (the processor's codec, on the device)."""
        return self.cached("codes", lambda: self.processor.feature_extractor.encode(self.clips[:2], sampling_rate=24000))

    def to_device(self, batch, device=None):
        return {key: value.to(device or self.device) for key, value in batch.items()}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.cpu(), b.cpu())


def _audio_kwargs(frames: int):
    # Greedy, every frame decodable, reasoning bounded, no early stop: a fixed number of frames.
    return dict(generation_mode="audio", do_sample=False, max_new_frames=frames, constrain_audio_codes=True,
                max_reasoning_frames=3, min_reconstruction_frames=frames)


def _tts_prompt(ctx: Context):
    return ctx.processor(text=["four young girls walk to the kitchen after lunch"], task="TTS")


def _asr_prompt(ctx: Context, rows=(0,)):
    return ctx.processor(audio_codes=[ctx.codes[i] for i in rows], task="ASR")


def _loss_batch(ctx: Context):
    texts = ["the dark mouse helps a piece of bread", "nine clever fishs walk to the forest after lunch"]
    return ctx.processor(text=texts, audio_codes=ctx.codes, task="TTS", output_labels=True)


def _continuation(sequence: torch.Tensor, prompt_length: int, eos_token_id: int, pad_token_id: int | None) -> list[int]:
    """Generated tokens after the prompt, up to and including the first EOS."""
    tokens = sequence[prompt_length:].tolist()
    if eos_token_id in tokens:
        tokens = tokens[: tokens.index(eos_token_id) + 1]
    return tokens


# ----------------------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------------------


def split_device_map(ctx: Context) -> dict:
    """A `device_map` over the model's top-level modules: `OFFLOADED` on the CPU, the rest on the device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(ctx.bundle, trust_remote_code=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    names = [f"model.{name}" for name, _ in model.model.named_children()]
    names += [name for name, _ in model.named_children() if name != "model"]
    gpu = (ctx.device.index or 0) if ctx.cuda else "cpu"
    return {name: ("cpu" if name in OFFLOADED else gpu) for name in names}


def check_split_device_map(ctx: Context) -> str:
    device_map = split_device_map(ctx)
    split = ctx.model(device_map=device_map)
    whole = ctx.model()
    # transformers records no `hf_device_map` when the whole map is one device (CPU runs).
    placed = Counter(str(device) for device in getattr(split, "hf_device_map", device_map).values())
    batch = _loss_batch(ctx)
    with torch.no_grad():
        out_split = split(**ctx.to_device(batch, split.device))
        out_whole = whole(**ctx.to_device(batch))
    losses = (float(out_split.loss), float(out_whole.loss))
    assert math.isfinite(losses[0]), f"loss {losses[0]}"
    assert math.isclose(*losses, rel_tol=1e-4, abs_tol=1e-5), f"split loss {losses[0]:.6f} != {losses[1]:.6f}"

    prompt = _asr_prompt(ctx)
    text_split = split.generate(**ctx.to_device(prompt, split.device), do_sample=False, max_new_tokens=20)
    text_whole = whole.generate(**ctx.to_device(prompt), do_sample=False, max_new_tokens=20)
    assert _same(text_split, text_whole), "text generation differs between the split and the single-device model"

    tts = _tts_prompt(ctx)
    audio_split = split.generate(**ctx.to_device(tts, split.device), **_audio_kwargs(12))
    audio_whole = whole.generate(**ctx.to_device(tts), **_audio_kwargs(12))
    assert _same(audio_split.frames, audio_whole.frames), "audio frames differ between the split and the single-device model"
    where = ", ".join(f"{count} on {device}" for device, count in sorted(placed.items()))
    return (f"map {where} ({'+'.join(OFFLOADED)} offloaded)" if ctx.cuda else f"map {where} (no accelerator: no split)") + (
        f"; loss {losses[0]:.4f} == single device; text ({text_split.shape[1]} tokens) and audio "
        f"({audio_split.frames.shape[1]} frames) generation == single device")


def check_pipelines(ctx: Context) -> str:
    import transformers
    from transformers import pipeline

    device = (ctx.device.index or 0) if ctx.cuda else -1
    asr = pipeline("audio-to-text", model=str(ctx.bundle), trust_remote_code=True, device=device)
    codec_device = asr.processor.feature_extractor.codec.device
    assert asr.model.device == ctx.device or not ctx.cuda, asr.model.device
    assert codec_device.type == ctx.device.type, f"the pipeline's codec is on {codec_device}"
    clip = {"array": ctx.clips[0], "sampling_rate": 24000}
    greedy = asr(clip)["text"]
    assert greedy, "empty transcription"
    # Text sampling draws from torch's global generator (audio-to-text takes no `seed=`): seeded twice, equal.
    sampled = []
    for _ in range(2):
        transformers.set_seed(0)
        sampled.append(asr(clip, generate_kwargs={"do_sample": True, "top_k": 50})["text"])
    assert sampled[0] == sampled[1], sampled

    tts = pipeline("text-to-audio", model=str(ctx.bundle), trust_remote_code=True, device=device)
    assert tts.processor.feature_extractor.codec.device.type == ctx.device.type
    outputs = [tts("the dark mouse helps a piece of bread", seed=1234, max_new_frames=40) for _ in range(2)]
    assert np.array_equal(outputs[0]["audio"], outputs[1]["audio"]), "seed=1234 twice gave different audio"
    other = tts("the dark mouse helps a piece of bread", seed=4321, max_new_frames=40)
    differs = other["audio"].shape != outputs[0]["audio"].shape or not np.array_equal(other["audio"], outputs[0]["audio"])
    assert differs, "another seed gave the same audio"
    return (f"models and codecs on {codec_device}; audio-to-text {greedy!r} (greedy; sampling after set_seed(0) "
            f"twice: equal); text-to-audio seed=1234 twice: same {outputs[0]['audio'].shape[0] / 24000:.2f} s, another seed "
            "differs")


def _compile_config(ctx: Context, fullgraph: bool):
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=fullgraph, **({} if ctx.cuda else {"backend": "aot_eager", "dynamic": False}))
    if not ctx.cuda:
        config._compile_all_devices = True  # transformers compiles automatically on accelerators only
    return config


def check_static_cache_compile(ctx: Context) -> str:
    """Same tokens as the dynamic cache; the compiled decoding step is compiled once (a recompilation raises)."""
    model = ctx.model()
    prompt = ctx.to_device(_asr_prompt(ctx, rows=(0, 1)))
    text = dict(do_sample=False, max_new_tokens=16)
    dynamic = model.generate(**prompt, **text)
    static = model.generate(**prompt, **text, cache_implementation="static")
    assert _same(dynamic, static), "text: static cache tokens != dynamic cache tokens"
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = model.generate(**prompt, **text, cache_implementation="static",
                                  compile_config=_compile_config(ctx, False))
    assert _same(dynamic, compiled), "text: compiled static cache tokens != dynamic cache tokens"

    # One item, as the text-to-audio pipeline generates.
    tts = ctx.to_device(_tts_prompt(ctx))
    start = time.perf_counter()
    audio_dynamic = model.generate(**tts, **_audio_kwargs(16))
    dynamic_s = time.perf_counter() - start
    audio_static = model.generate(**tts, **_audio_kwargs(16), cache_implementation="static")
    assert _same(audio_dynamic.frames, audio_static.frames), "audio: static cache frames != dynamic cache frames"
    config = _compile_config(ctx, True)
    torch._dynamo.reset()
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            model.generate(**tts, **_audio_kwargs(16), cache_implementation="static", compile_config=config)  # compiles
            start = time.perf_counter()
            audio_compiled = model.generate(**tts, **_audio_kwargs(16), cache_implementation="static",
                                            compile_config=config)
            compiled_s = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001
        raise AssertionError(f"compiled audio steps (1 item): {type(error).__name__}: {str(error).splitlines()[0]}") from error
    assert _same(audio_dynamic.frames, audio_compiled.frames), "audio: compiled frames != dynamic cache frames"
    return (f"text {dynamic.shape[1]} tokens x2 rows and audio {audio_dynamic.frames.shape[1]} frames x1 item: static "
            f"== compiled ({config.backend}; audio steps fullgraph; no recompilation) == dynamic; audio "
            f"{dynamic_s:.2f} s dynamic, {compiled_s:.2f} s compiled (after warm-up)")


def check_bf16_sdpa_left_padded(ctx: Context) -> str:
    model = ctx.model(dtype=torch.bfloat16, attn_implementation="sdpa")
    assert model.lm_head.weight.dtype == torch.bfloat16
    eos, pad = model.generation_config.eos_token_id, model.generation_config.pad_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    batch = _asr_prompt(ctx, rows=(0, 1))
    assert (batch["attention_mask"][:, 0] == 0).any(), "the batch is not left-padded"
    generated = model.generate(**ctx.to_device(batch), do_sample=False, max_new_tokens=24)
    width = batch["input_ids"].shape[1]
    details = []
    for row in range(2):
        single = _asr_prompt(ctx, rows=(row,))
        alone = model.generate(**ctx.to_device(single), do_sample=False, max_new_tokens=24)
        expected = _continuation(alone[0], single["input_ids"].shape[1], eos, pad)
        got = _continuation(generated[row], width, eos, pad)
        assert got == expected, f"row {row}: batched {got} != single {expected}"
        details.append(len(expected))
    text = ctx.processor.batch_decode(generated[:, width:], skip_special_tokens=True)
    return f"bf16 weights, sdpa; 2 left-padded rows == each alone ({details} tokens): {[t.strip() for t in text]}"


def _snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    reference, estimate = reference.float().cpu(), estimate.float().cpu()
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - estimate).pow(2).sum()))


def check_codec_bf16(ctx: Context) -> str:
    float32, bfloat16 = ctx.codec(), ctx.codec(torch.bfloat16)
    assert bfloat16.decoder_dtype == torch.bfloat16 and float32.decoder_dtype == torch.float32
    snrs = []
    for clip in ctx.clips[: 2 if ctx.cuda else 1]:
        values = torch.from_numpy(clip)[None, None].to(ctx.device)
        reference, codes = float32.encode(values), bfloat16.encode(values)
        assert _same(reference.reasoning_codes, codes.reasoning_codes), "bf16-loaded reasoning codes differ"
        assert _same(reference.reconstruction_codes, codes.reconstruction_codes), "bf16-loaded reconstruction codes differ"
        decoded = [codec.decode(reference.reconstruction_codes,
                                generator=torch.Generator(device=ctx.device).manual_seed(0)).audio_values
                   for codec in (float32, bfloat16)]
        assert bool(torch.isfinite(decoded[1]).all()), "bf16 decode is not finite"
        snrs.append(_snr_db(*decoded))
    assert min(snrs) >= MIN_BF16_DECODE_SNR_DB, f"bf16 decode SNR {min(snrs):.1f} dB < {MIN_BF16_DECODE_SNR_DB} dB"
    return (f"codes of a bf16-loaded codec == float32 codes ({len(snrs)} clips); bf16 decode SNR "
            f"{', '.join(f'{snr:.1f}' for snr in snrs)} dB (>= {MIN_BF16_DECODE_SNR_DB:.0f})")


def check_codec_batched_pretokenizing(ctx: Context) -> str:
    import datasets

    from uniaudio2.data_uniaudio2 import codec_encode_fn, tokenize_audio_dataset

    codec = ctx.codec()
    import soxr

    # Clips of different lengths (one cut to 0.9 s), one given at 16 kHz (resampled by the codec, clip by clip).

    clips = [ctx.clips[0], ctx.clips[1][:21600]] + ([ctx.clips[2]] if ctx.cuda else [])
    rows = [{"audio": {"array": clip, "sampling_rate": 24000}} for clip in clips]
    rows.append({"audio": {"array": soxr.resample(ctx.clips[2], 24000, 16000).astype(np.float32), "sampling_rate": 16000}})
    datasets.disable_progress_bars()
    encoded = tokenize_audio_dataset(datasets.Dataset.from_list(rows), codec_encode_fn(codec), batch_size=len(rows))
    for index, row in enumerate(rows):
        audio = row["audio"]
        values = torch.as_tensor(audio["array"])[None, None].to(ctx.device)
        alone = codec.encode(values, sampling_rate=audio["sampling_rate"], resample=True)
        assert encoded[index]["reason_seq"] == alone.reasoning_codes[0].tolist(), f"clip {index}: reasoning codes"
        assert encoded[index]["semantic_seq"] == alone.reconstruction_codes[0].tolist(), f"clip {index}: reconstruction codes"
    return f"tokenize_audio_dataset + codec_encode_fn on {codec.device}: {len(rows)} clips (two rates) batched == alone"


def _lora_step(config, settings: dict, device: torch.device) -> dict:
    """One LoRA training step of `config` in bf16 as the recipe runs it (see benchmark_full_size.lora_memory_figures)."""
    from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration

    config.use_cache = False
    with torch.device(device):
        model = UniAudio2ForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model = benchmark_full_size._with_recipe_lora(model, settings).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings["learning_rate"], weight_decay=settings["weight_decay"],
                                  fused=device.type == "cuda" and "fused" in settings["optim"])
    batch = benchmark_full_size._audio_dense_batch(config, settings["per_device_train_batch_size"], settings["max_length"])
    batch = {key: value.to(device) for key, value in batch.items()}
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings["bf16"]):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"loss": float(loss.detach()), "seconds": time.perf_counter() - start, "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in trainable), "rows": f"{batch['input_ids'].shape[0]} x {batch['input_ids'].shape[1]}"}


def check_full_size_lora_step(ctx: Context) -> str:
    settings = benchmark_full_size._recipe_settings(ctx.recipe)
    if not ctx.cuda:
        settings = dict(settings, max_length=128)
        result = _lora_step(benchmark_full_size.smoke_config(), settings, ctx.device)
        assert math.isfinite(result["loss"]), result
        raise Skip(f"needs CUDA (the same step on the smoke configuration ran: {result['rows']} rows, "
                   f"loss {result['loss']:.3f}, {result['seconds']:.1f} s)")
    device = ctx.device
    ctx._cache.clear()  # free the tiny models first
    gc.collect()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, MEMORY_CAP_GB * 1e9 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        result = _lora_step(benchmark_full_size.full_size_config(), settings, device)
    except torch.cuda.OutOfMemoryError as error:
        raise AssertionError(f"out of memory under the {MEMORY_CAP_GB:.0f} GB cap: {str(error).splitlines()[0]}") from None
    finally:
        peak, reserved = torch.cuda.max_memory_allocated(device) / 1e9, torch.cuda.max_memory_reserved(device) / 1e9
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
    assert math.isfinite(result["loss"]), result
    assert peak <= MEMORY_CAP_GB, f"peak allocated {peak:.2f} GB > {MEMORY_CAP_GB} GB"
    return (f"{result['parameters'] / 1e9:.2f} B parameters (bf16), {result['trainable'] / 1e6:.1f} M LoRA, "
            f"{result['rows']} audio-dense rows, recipe {ctx.recipe.name}: loss {result['loss']:.3f}, "
            f"{result['seconds']:.1f} s; peak allocated {peak:.2f} GB, reserved {reserved:.2f} GB "
            f"(cap {MEMORY_CAP_GB:.0f} GB = {fraction:.3f} of the card; FakeTensor estimate 13.36 GB)")


def _count_syncs(ctx: Context, model, prompt, frames: int) -> tuple[int, Counter]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = model.generate(**prompt, **_audio_kwargs(frames))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert out.frames.shape[1] == frames, f"generation stopped after {out.frames.shape[1]} of {frames} frames"
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    return len(syncs), Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)


def check_host_syncs(ctx: Context) -> str:
    if not ctx.cuda:
        raise Skip("needs CUDA (torch.cuda.set_sync_debug_mode)")
    model = ctx.model()
    prompt = ctx.to_device(_tts_prompt(ctx))
    model.generate(**prompt, **_audio_kwargs(4))  # warm-up
    short, _ = _count_syncs(ctx, model, prompt, 8)
    long, where = _count_syncs(ctx, model, prompt, 24)
    per_frame = (long - short) / 16
    sites = ", ".join(f"{site} x{count}" for site, count in where.most_common(3))
    assert per_frame <= 1.0, f"{per_frame:.2f} host syncs per audio frame (at most 1, the stop check): {sites}"
    return f"{per_frame:.2f} host syncs per audio frame ({short} for 8 frames, {long} for 24; most at {sites})"


CHECKS = [
    ("split_device_map", "tiny bundle loaded with a device_map dict (stacks offloaded to cpu): forward/loss, text "
     "and audio generation == the single-device model", check_split_device_map, False),
    ("pipelines_on_device_seeded", "pipeline('audio-to-text') and pipeline('text-to-audio') with device=0: model and "
     "codec on the device; seed= twice gives the same audio", check_pipelines, False),
    ("static_cache_compile", "static cache and torch.compile: text and audio tokens == dynamic cache",
     check_static_cache_compile, False),
    ("bf16_sdpa_left_padded_batch", "bf16 weights, sdpa: a left-padded batch of 2 ASR prompts generates what each "
     "prompt generates alone", check_bf16_sdpa_left_padded, False),
    ("codec_bf16_codes_and_decode_snr", "codec loaded in bf16: codes == float32 codes; bf16 decode SNR >= 25 dB",
     check_codec_bf16, False),
    ("codec_batched_pretokenizing", "tokenize_audio_dataset + codec_encode_fn on the device: padded batches of "
     "clips of different lengths and rates == each clip alone", check_codec_batched_pretokenizing, False),
    ("host_syncs_per_audio_frame", "torch.cuda.set_sync_debug_mode('warn') during audio generation: host syncs per "
     "frame <= 1", check_host_syncs, True),
    ("full_size_lora_step", f"one LoRA step of the full-size model (bf16, recipe settings) under a "
     f"{MEMORY_CAP_GB:.0f} GB memory cap", check_full_size_lora_step, True),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--model", default=str(DEFAULT_BUNDLE), help="the bundle (default: pretrained/tiny-uniaudio2)")
    parser.add_argument("--recipe", default=str(benchmark_full_size.RECIPE_CONFIG),
                        help="LoRA recipe of the full-size step (default: recipes/configs/finetune_lora.yaml)")
    parser.add_argument("--only", default=None, help="comma-separated check names")
    parser.add_argument("--dry-run", action="store_true", help="list the checks and exit (no GPU needed)")
    args = parser.parse_args(argv)

    checks = CHECKS
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(wanted) - {name for name, *_ in CHECKS})
        if unknown:
            parser.error(f"unknown checks {unknown}; known: {[name for name, *_ in CHECKS]}")
        checks = [check for check in CHECKS if check[0] in wanted]
    if args.dry_run:
        for name, description, _, cuda_only in checks:
            print(f"{name}: {description}{' [CUDA only]' if cuda_only else ''}")
        print(f"gpu_smoke: dry run, {len(checks)} checks")
        return 0

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: error: CUDA is not available (--dry-run lists the checks; --device cpu runs the ones that "
              "mean something on CPU)", file=sys.stderr)
        return 2
    if device.type not in ("cuda", "cpu"):
        parser.error(f"--device must be cuda, cuda:N or cpu, got {args.device}")
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU"
    print(f"gpu_smoke: {device} ({name}), torch {torch.__version__}, bundle {args.model}", flush=True)
    ctx = Context(Path(args.model), device, Path(args.recipe))
    counts = Counter()
    for name, _, check, _ in checks:
        start = time.perf_counter()
        try:
            detail, status = check(ctx), "PASS"
        except Skip as reason:
            detail, status = str(reason), "SKIP"
        except Exception as error:  # noqa: BLE001  (a failed check must not stop the others)
            where = [f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(error.__traceback__)][-3:]
            detail, status = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} at {where}", "FAIL"
        counts[status] += 1
        print(f"{name}: {status} {detail} ({time.perf_counter() - start:.1f} s)", flush=True)
    print(f"gpu_smoke: passed={counts['PASS']} failed={counts['FAIL']} skipped={counts['SKIP']}")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
