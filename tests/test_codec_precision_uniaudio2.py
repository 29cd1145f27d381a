"""Precision policy of the ReasoningCodec: the codes are the float32 codes whatever dtype the codec is loaded or cast
in (the tokenizing path stays float32); only the decoder runs in half precision."""

import numpy as np
import pytest
import soundfile
import soxr
import torch

from conftest import REPO_ROOT


CODEC_DIR = REPO_ROOT / "pretrained" / "tiny-uniaudio2" / "codec"
CLIPS = ["examples/hello.wav", "examples/heldout/test-speech-00000.wav", "examples/heldout/test-sound-00000.wav"]
# bf16 decoding of the shipped codec measured 32.7 dB (hello.wav), 34.3 dB (speech) and 40.3 dB (sound) SNR against
# float32 decoding with the same noise; the bound leaves about 8 dB of margin.
MIN_BF16_DECODE_SNR_DB = 25.0


def _load_clip(name: str) -> torch.Tensor:
    audio, rate = soundfile.read(REPO_ROOT / name, dtype="float32", always_2d=False)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != 24000:
        audio = soxr.resample(audio, rate, 24000).astype(np.float32)
    return torch.from_numpy(audio)[None, None]


def _snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - estimate).pow(2).sum()))


@pytest.fixture(scope="module")
def codecs():
    from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel

    if not (CODEC_DIR / "config.json").is_file():
        pytest.skip(f"the shipped tiny codec is missing at {CODEC_DIR}")
    float32 = ReasoningCodecModel.from_pretrained(CODEC_DIR).eval()
    bfloat16 = ReasoningCodecModel.from_pretrained(CODEC_DIR, dtype=torch.bfloat16).eval()
    return float32, bfloat16


def _tokenizing_dtypes(model) -> set:
    from uniaudio2.modeling_reasoning_codec import FLOAT32_MODULES

    return {
        tensor.dtype
        for name in FLOAT32_MODULES
        for tensor in list(getattr(model, name).parameters()) + list(getattr(model, name).buffers())
        if tensor.is_floating_point()
    }


def test_bf16_loaded_codec_keeps_the_tokenizing_path_in_float32(codecs):
    _, bfloat16 = codecs
    assert _tokenizing_dtypes(bfloat16) == {torch.float32}
    assert bfloat16.whisper_feature_extractor.window.dtype == torch.float32
    assert bfloat16.music_ssl_encoder.mel.mel_filters.dtype == torch.float32
    assert {p.dtype for p in bfloat16.decoder.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("name", CLIPS)
def test_bf16_loaded_codec_gives_the_float32_codes(codecs, name):
    float32, bfloat16 = codecs
    clip = _load_clip(name)
    expected, got = float32.encode(clip), bfloat16.encode(clip)
    assert torch.equal(got.reasoning_codes, expected.reasoning_codes)
    assert torch.equal(got.reconstruction_codes, expected.reconstruction_codes)


def test_bf16_codes_of_a_padded_batch_and_under_autocast(codecs):
    float32, bfloat16 = codecs
    clips = [_load_clip(name)[0, 0] for name in CLIPS[:2]]
    length = max(clip.shape[0] for clip in clips)
    batch = torch.zeros(len(clips), 1, length)
    mask = torch.zeros(len(clips), length, dtype=torch.long)
    for row, clip in enumerate(clips):
        batch[row, 0, : clip.shape[0]], mask[row, : clip.shape[0]] = clip, 1
    expected = float32.encode(batch, padding_mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = bfloat16.encode(batch, padding_mask=mask)
        autocast_float32 = float32.encode(batch, padding_mask=mask)
    for output in (got, autocast_float32):
        assert torch.equal(output.reasoning_codes, expected.reasoning_codes)
        assert torch.equal(output.reconstruction_codes, expected.reconstruction_codes)


@pytest.mark.parametrize("cast", ["to_bfloat16", "half"])
def test_casting_a_loaded_codec_casts_only_the_decoder(codecs, cast):
    from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel

    float32, _ = codecs
    model = ReasoningCodecModel.from_pretrained(CODEC_DIR).eval()
    model = model.to(torch.bfloat16) if cast == "to_bfloat16" else model.half()
    half = torch.bfloat16 if cast == "to_bfloat16" else torch.float16
    assert _tokenizing_dtypes(model) == {torch.float32}
    assert {p.dtype for p in model.decoder.parameters()} == {half}
    clip = _load_clip(CLIPS[2])
    assert torch.equal(model.encode(clip).reconstruction_codes, float32.encode(clip).reconstruction_codes)
    model.float()
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_bf16_decode_is_finite_and_close_to_float32(codecs):
    float32, bfloat16 = codecs
    codes = float32.encode(_load_clip(CLIPS[0])).reconstruction_codes
    reference = float32.decode(codes, generator=torch.Generator().manual_seed(0)).audio_values
    audio = bfloat16.decode(codes, generator=torch.Generator().manual_seed(0)).audio_values
    assert audio.dtype == torch.float32 and audio.shape == reference.shape
    assert bool(torch.isfinite(audio).all())
    assert _snr_db(reference, audio) >= MIN_BF16_DECODE_SNR_DB


def test_processor_loads_its_codec_in_bf16_with_the_float32_codes():
    from uniaudio2.processing_uniaudio2 import UniAudio2Processor

    bundle = CODEC_DIR.parent
    clip = _load_clip(CLIPS[2])[0, 0].numpy()
    expected = UniAudio2Processor.from_pretrained(bundle, trust_remote_code=True).feature_extractor.encode(clip, sampling_rate=24000)
    processor = UniAudio2Processor.from_pretrained(bundle, trust_remote_code=True, dtype=torch.bfloat16)
    codec = processor.feature_extractor.codec
    assert codec.decoder.sq_codec.decoder.input_conv.weight.dtype == torch.bfloat16
    assert _tokenizing_dtypes(codec) == {torch.float32}
    got = processor.feature_extractor.encode(clip, sampling_rate=24000)
    for (reasoning, reconstruction), (reasoning_ref, reconstruction_ref) in zip(got, expected):
        assert torch.equal(reasoning, reasoning_ref) and torch.equal(reconstruction, reconstruction_ref)
