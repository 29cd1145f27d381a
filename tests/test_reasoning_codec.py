"""Tests of the ReasoningCodec encode side, the top-level model and the conversion script.

Fixture-based tests skip cleanly when `../shared` is absent; everything else runs on tiny random configurations.
"""

import csv
import importlib.util
import json
import math
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import fixture_dir_or_skip


REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from uniaudio2.configuration_reasoning_codec import (  # noqa: E402
    ReasoningCodecConfig,
    ReasoningCodecMusicSSLConfig,
    ReasoningCodecReasoningConfig,
    ReasoningCodecReconstructionConfig,
)
from uniaudio2.modeling_reasoning_codec import (  # noqa: E402
    ReasoningCodecFrozenFeatures,
    ReasoningCodecModel,
    resample_waveform,
    sinc_resample_kernel,
    upsample_reasoning,
)


SAMPLING_RATE = 24000


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The models here are tiny: one intra-op thread is fastest and avoids oversubscription on a shared 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _load_conversion_module():
    path = REPO_ROOT / "conversion_scripts" / "convert_reasoning_codec_to_hf.py"
    spec = importlib.util.spec_from_file_location("convert_reasoning_codec_to_hf", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert = _load_conversion_module()


# ---------------------------------------------------------------------------------------------------------------------
# Tiny random model
# ---------------------------------------------------------------------------------------------------------------------


def tiny_config(**overrides) -> ReasoningCodecConfig:
    kwargs = {
        "whisper_config": {
            "d_model": 16,
            "encoder_layers": 1,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 32,
            "decoder_layers": 1,
            "decoder_attention_heads": 2,
            "decoder_ffn_dim": 32,
            "vocab_size": 8,
            "max_target_positions": 8,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "decoder_start_token_id": 1,
        },
        "wavlm_config": {
            "hidden_size": 16,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "conv_dim": [8] * 7,
            "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 2,
            "num_buckets": 16,
            "max_bucket_distance": 32,
        },
        "music_ssl_config": {
            "hidden_size": 16,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "conv_dim": 4,
            "conv_depthwise_kernel_size": 3,
            "acoustic_layer": 1,
            "semantic_layer": 2,
        },
        "reasoning_config": {
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "head_dim": 16,
            "rotary_dim": 8,
            "codebook_size": 16,
            "codebook_dim": 4,
        },
        "reconstruction_config": {
            "hidden_size": 32,
            "codebook_size": 16,
            "codebook_dim": 4,
            "wavlm_layer_start": 1,
            "wavlm_layer_end": 3,
        },
        "decoder_config": {
            "hidden_size": 32,
            "dit_num_hidden_layers": 1,
            "dit_num_attention_heads": 2,
            "dit_attention_head_dim": 8,
            "sq_init_channel": 2,
            "num_inference_steps": 2,
        },
    }
    kwargs.update(overrides)
    return ReasoningCodecConfig(**kwargs)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw every weight with unit-gain scales so that all terms matter and codes are diverse."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if tensor.dtype not in (torch.float32,) or name.endswith(("inv_freq", "window", "mel_filters")):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith(".embed") or "query_token" in name:
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            elif tensor.ndim >= 2:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan_in))
            else:
                tensor.copy_(1.0 + 0.1 * torch.randn(tensor.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def tiny_codec():
    torch.manual_seed(0)
    return randomize_(ReasoningCodecModel(tiny_config()).eval())


def make_signal(seconds: float, seed: int = 0) -> torch.Tensor:
    num_samples = int(round(seconds * SAMPLING_RATE))
    t = torch.arange(num_samples, dtype=torch.float64) / SAMPLING_RATE
    generator = torch.Generator().manual_seed(seed)
    wave = 0.3 * torch.sin(2 * math.pi * (180 + 40 * seed) * t) + 0.05 * torch.randn(num_samples, generator=generator)
    return wave.float()


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------


def test_default_config_is_released_codec():
    config = ReasoningCodecConfig()
    assert (config.whisper_config.d_model, config.whisper_config.encoder_layers) == (1024, 24)
    assert (config.whisper_config.encoder_attention_heads, config.whisper_config.encoder_ffn_dim) == (16, 4096)
    assert (config.wavlm_config.hidden_size, config.wavlm_config.num_hidden_layers) == (768, 12)
    music = config.music_ssl_config
    assert (music.hidden_size, music.num_hidden_layers, music.conv_dim, music.num_mel_bins) == (1024, 12, 512, 128)
    assert (music.n_fft, music.hop_length, music.acoustic_layer, music.semantic_layer) == (2048, 240, 4, 11)
    reasoning = config.reasoning_config
    assert (reasoning.hidden_size, reasoning.num_hidden_layers, reasoning.head_dim, reasoning.rotary_dim) == (
        768, 5, 128, 64,
    )  # fmt: skip
    assert (reasoning.codebook_size, reasoning.codebook_dim, reasoning.num_quantizers) == (4096, 64, 8)
    assert reasoning.query_interval == 5 and reasoning.intermediate_size == 3072
    rec = config.reconstruction_config
    assert (rec.codebook_size, rec.codebook_dim, rec.num_quantizers) == (8192, 32, 8)
    assert (rec.num_phone_quantizers, rec.num_semantic_quantizers, rec.num_acoustic_quantizers) == (1, 1, 6)
    decoder = config.decoder_config
    assert (decoder.dit_num_hidden_layers, decoder.dit_num_attention_heads, decoder.dit_attention_head_dim) == (32, 24, 64)
    assert (decoder.dit_in_channels, decoder.dit_out_channels, decoder.hop_length) == (1040, 136, 960)
    assert config.sampling_rate == 24000 and config.reconstruction_frame_rate == 12.5 and config.reasoning_frame_rate == 5


@pytest.mark.parametrize(
    "config_factory",
    [ReasoningCodecConfig, tiny_config, lambda: ReasoningCodecConfig(reconstruction_config={"codebook_size": 1024})],
    ids=["released", "tiny", "codebook_1024"],
)
def test_config_round_trip(tmp_path, config_factory):
    config = config_factory()
    config.save_pretrained(tmp_path)
    reloaded = ReasoningCodecConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert type(reloaded.music_ssl_config) is ReasoningCodecMusicSSLConfig
    assert type(reloaded.reasoning_config) is ReasoningCodecReasoningConfig
    assert type(reloaded.reconstruction_config) is ReasoningCodecReconstructionConfig
    assert reloaded.reconstruction_config.codebook_size == config.reconstruction_config.codebook_size


def test_config_rejects_inconsistent_widths():
    with pytest.raises(ValueError, match="reasoning branch width"):
        ReasoningCodecConfig(reasoning_config={"hidden_size": 512, "head_dim": 128})
    with pytest.raises(ValueError, match="decoder_config.hidden_size"):
        ReasoningCodecConfig(decoder_config={"hidden_size": 512})
    with pytest.raises(ValueError, match="divisible"):
        ReasoningCodecReasoningConfig(hidden_size=100, head_dim=64)


def test_model_save_load_round_trip(tmp_path, tiny_codec):
    tiny_codec.save_pretrained(tmp_path)
    reloaded = ReasoningCodecModel.from_pretrained(tmp_path).eval()
    wave = make_signal(0.4)[None, None]
    a = tiny_codec.encode(wave, exact_length=True)
    b = reloaded.encode(wave, exact_length=True)
    assert torch.equal(a.reasoning_codes, b.reasoning_codes)
    assert torch.equal(a.reconstruction_codes, b.reconstruction_codes)
    for name, buffer in tiny_codec.named_buffers():
        assert torch.equal(buffer, reloaded.get_buffer(name)), name


def test_remote_code_round_trip(tmp_path, tiny_codec):
    from transformers import AutoModel

    tiny_codec.save_pretrained(tmp_path)
    for name in ("configuration_reasoning_codec.py", "modeling_reasoning_codec.py", "modeling_reasoning_codec_decoder.py"):
        assert (tmp_path / name).is_file(), name
    reloaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert type(reloaded).__name__ == "ReasoningCodecModel"
    wave = make_signal(0.4)[None, None]
    a = tiny_codec.encode(wave, exact_length=True)
    b = reloaded.encode(wave, exact_length=True)
    assert torch.equal(a.reconstruction_codes, b.reconstruction_codes)


def test_half_precision_runs(tiny_codec):
    model = ReasoningCodecModel(tiny_codec.config).eval()
    model.load_state_dict(tiny_codec.state_dict())
    model = model.to(torch.bfloat16)
    out = model.encode(make_signal(0.4)[None, None], exact_length=True)
    assert out.reconstruction_codes.shape == (1, 8, 5)  # 0.4 s: min(int(0.4 * 12.5) + 1, 10 // 2)
    audio = model.decode(out.reconstruction_codes, num_steps=1, generator=torch.Generator().manual_seed(0))
    assert audio.audio_values.shape == (1, 1, 5 * 1920)


# ---------------------------------------------------------------------------------------------------------------------
# Signal processing
# ---------------------------------------------------------------------------------------------------------------------


def test_resampler_matches_band_limited_sine():
    # A 1 kHz sine resampled 24 kHz -> 16 kHz must equal the 1 kHz sine sampled at 16 kHz away from the edges.
    t24 = torch.arange(24000, dtype=torch.float64) / 24000
    t16 = torch.arange(16000, dtype=torch.float64) / 16000
    out = resample_waveform(torch.sin(2 * math.pi * 1000 * t24).float(), 24000, 16000)
    assert out.shape == (16000,)
    assert (out[200:-200] - torch.sin(2 * math.pi * 1000 * t16[200:-200]).float()).abs().max() < 2e-3
    kernel, width = sinc_resample_kernel(24000, 16000)
    assert kernel.shape == (2, 1, 23) and width == 10


def test_reasoning_upsampling_pattern():
    features = torch.arange(4, dtype=torch.float32)[None, :, None]
    up = upsample_reasoning(features, 10)[0, :, 0]
    assert up.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]


# ---------------------------------------------------------------------------------------------------------------------
# Encode on the tiny model
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.4, 1.0, 7.3, 31.0])
def test_encode_shapes_and_rates(tiny_codec, seconds):
    wave = make_signal(seconds)[None, None]
    out = tiny_codec.encode(wave)
    num_samples = wave.shape[-1]
    expected_reasoning = int(num_samples / 24000 * 5) + 1
    expected_reconstruction = int(num_samples / 24000 * 12.5) + 1
    assert out.reasoning_codes.shape == (1, 8, expected_reasoning)
    assert out.reconstruction_codes.shape == (1, 8, expected_reconstruction)
    assert out.reasoning_codes.dtype == torch.long
    assert out.reasoning_padding_mask.all() and out.reconstruction_padding_mask.all()
    assert 0 <= out.reasoning_codes.min() and out.reasoning_codes.max() < 16
    assert 0 <= out.reconstruction_codes.min() and out.reconstruction_codes.max() < 16
    # The random model must produce non-trivial codes, otherwise the equality tests below prove nothing.
    assert out.reconstruction_codes.unique().numel() > 1
    if seconds <= 30:
        exact = tiny_codec.encode(wave, exact_length=True)
        assert exact.reasoning_codes.shape[-1] <= expected_reasoning
        assert exact.reconstruction_codes.shape[-1] <= expected_reconstruction


def test_encode_uses_only_needed_windows(tiny_codec, monkeypatch):
    calls = []
    original = tiny_codec.extract_features

    def counting(waveform, **kwargs):
        calls.append(waveform.shape[0])
        return original(waveform, **kwargs)

    monkeypatch.setattr(tiny_codec, "extract_features", counting)
    tiny_codec.encode(make_signal(1.0)[None, None])
    assert sum(calls) == 1  # the reference spends two 30 s windows on a 1 s clip
    calls.clear()
    tiny_codec.encode(make_signal(31.0)[None, None])
    assert sum(calls) == 2


@pytest.mark.parametrize("seconds, ours, reference", [(1.0, 1, 2), (10.0, 1, 2), (30.0, 2, 3), (31.0, 2, 2)])
def test_pipeline_window_counts(tiny_codec, seconds, ours, reference):
    clip = make_signal(seconds)
    windows = tiny_codec.pipeline_windows(clip)
    reference_windows = tiny_codec.pipeline_windows(clip, reference_equivalent=True)
    assert (windows.shape[0], reference_windows.shape[0]) == (ours, reference)
    assert torch.equal(windows, reference_windows[:ours])


def test_batch_equals_single(tiny_codec):
    clips = [make_signal(1.0, seed=1), make_signal(2.3, seed=2), make_signal(0.5, seed=3)]
    max_len = max(c.shape[0] for c in clips)
    batch = torch.zeros(len(clips), 1, max_len)
    mask = torch.zeros(len(clips), max_len, dtype=torch.long)
    for i, clip in enumerate(clips):
        batch[i, 0, : clip.shape[0]] = clip
        mask[i, : clip.shape[0]] = 1
    for exact in (False, True):
        batched = tiny_codec.encode(batch, padding_mask=mask, exact_length=exact)
        for i, clip in enumerate(clips):
            single = tiny_codec.encode(clip[None, None], exact_length=exact)
            n_r = single.reasoning_codes.shape[-1]
            n_c = single.reconstruction_codes.shape[-1]
            assert torch.equal(batched.reasoning_codes[i, :, :n_r], single.reasoning_codes[0])
            assert torch.equal(batched.reconstruction_codes[i, :, :n_c], single.reconstruction_codes[0])
            assert batched.reconstruction_padding_mask[i].sum() == n_c
            assert batched.reasoning_padding_mask[i].sum() == n_r
            assert (batched.reconstruction_codes[i, :, n_c:] == 0).all()


def test_resampled_batch_equals_single_whatever_the_padding(tiny_codec):
    """A padded batch at another rate: each clip is resampled alone (the filter never sees the padding, whatever its
    values) and gets the codes it gets alone."""
    clips = [make_signal(s, seed=i)[: int(s * 16000)] for i, s in enumerate((0.9, 2.3, 0.5))]
    max_len = max(c.shape[0] for c in clips)
    batch = torch.full((len(clips), 1, max_len), 0.7)  # non-zero padding
    mask = torch.zeros(len(clips), max_len, dtype=torch.bool)
    for i, clip in enumerate(clips):
        batch[i, 0, : clip.shape[0]] = clip
        mask[i, : clip.shape[0]] = True
    for exact in (False, True):
        batched = tiny_codec.encode(batch, padding_mask=mask, sampling_rate=16000, resample=True, exact_length=exact)
        for i, clip in enumerate(clips):
            single = tiny_codec.encode(clip[None, None], sampling_rate=16000, resample=True, exact_length=exact)
            n_r, n_c = single.reasoning_codes.shape[-1], single.reconstruction_codes.shape[-1]
            assert batched.reasoning_padding_mask[i].sum() == n_r and batched.reconstruction_padding_mask[i].sum() == n_c
            assert torch.equal(batched.reasoning_codes[i, :, :n_r], single.reasoning_codes[0])
            assert torch.equal(batched.reconstruction_codes[i, :, :n_c], single.reconstruction_codes[0])


def test_encode_is_deterministic(tiny_codec):
    wave = make_signal(1.0)[None, None]
    torch.manual_seed(1)
    a = tiny_codec.encode(wave)
    torch.manual_seed(2)
    b = tiny_codec.encode(wave)
    assert torch.equal(a.reasoning_codes, b.reasoning_codes)
    assert torch.equal(a.reconstruction_codes, b.reconstruction_codes)


def test_pipeline_windows_tile_the_clip(tiny_codec):
    # The pipeline path encodes the clip repeated to a 30 s window: encoding that window explicitly gives the codes.
    clip = make_signal(0.8)
    out = tiny_codec.encode(clip[None, None])
    window = clip.repeat(math.ceil(tiny_codec.config.encode_window_samples / clip.shape[0]))
    window = window[: tiny_codec.config.encode_window_samples]
    reasoning, reconstruction = tiny_codec.quantize_features(tiny_codec.extract_features(window[None]))
    assert torch.equal(out.reasoning_codes[0], reasoning[0, : out.reasoning_codes.shape[-1]].T)
    assert torch.equal(out.reconstruction_codes[0], reconstruction[0, : out.reconstruction_codes.shape[-1]].T)


def test_encode_bad_inputs(tiny_codec):
    wave = make_signal(0.5)
    with pytest.raises(ValueError, match="24000 Hz"):
        tiny_codec.encode(wave[None, None], sampling_rate=16000)
    with pytest.raises(ValueError, match="mono"):
        tiny_codec.encode(torch.stack([wave, wave])[None])
    with pytest.raises(TypeError, match="int16"):
        tiny_codec.encode((wave * 32767).to(torch.int16)[None, None])
    with pytest.raises(ValueError, match="empty"):
        tiny_codec.encode(torch.zeros(1, 1, 0))
    for bad in (float("nan"), float("inf")):
        broken = wave.clone()
        broken[10] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            tiny_codec.encode(broken[None, None])
    with pytest.raises(ValueError, match="batch_size, 1, num_samples"):
        tiny_codec.encode(wave[None])
    with pytest.raises(ValueError, match="empty"):
        tiny_codec.encode(wave[None, None], padding_mask=torch.zeros(1, wave.shape[0]))
    left_padded = torch.ones(1, wave.shape[0])
    left_padded[0, :5] = 0
    with pytest.raises(ValueError, match="right-padded"):
        tiny_codec.encode(wave[None, None], padding_mask=left_padded)
    with pytest.raises(ValueError, match="at most 30 s"):
        tiny_codec.encode(make_signal(31.0)[None, None], exact_length=True)


def test_encode_resamples_when_opted_in(tiny_codec):
    wave_16k = make_signal(0.6)[:9600]
    out = tiny_codec.encode(wave_16k[None, None], sampling_rate=16000, resample=True, exact_length=True)
    resampled = resample_waveform(wave_16k, 16000, 24000)
    ref = tiny_codec.encode(resampled[None, None], exact_length=True)
    assert torch.equal(out.reconstruction_codes, ref.reconstruction_codes)
    assert out.reconstruction_codes.shape[-1] == int(resampled.shape[0] / 24000 * 12.5) + 1


# ---------------------------------------------------------------------------------------------------------------------
# Decode through the top-level model (the decoder itself is tested in test_reasoning_codec_decoder.py)
# ---------------------------------------------------------------------------------------------------------------------


def test_decode_shapes_and_reproducibility(tiny_codec):
    codes = tiny_codec.encode(make_signal(0.8)[None, None])
    rec, reason = codes.reconstruction_codes, codes.reasoning_codes
    audio = tiny_codec.decode(rec, generator=torch.Generator().manual_seed(0)).audio_values
    assert audio.shape == (1, 1, rec.shape[-1] * 1920)
    again = tiny_codec.decode(rec, generator=torch.Generator().manual_seed(0)).audio_values
    assert torch.equal(audio, again)
    with_reasoning = tiny_codec.decode(rec, reasoning_codes=reason, guidance_scale=1.0, num_steps=1).audio_values
    assert with_reasoning.shape == audio.shape and torch.isfinite(with_reasoning).all()


def test_decode_bad_codes(tiny_codec):
    codes = torch.zeros(1, 8, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        tiny_codec.decode(codes + 16)
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        tiny_codec.decode(codes - 1)
    with pytest.raises(ValueError, match="8, num_frames"):
        tiny_codec.decode(codes[:, :6])
    with pytest.raises(TypeError, match="integer"):
        tiny_codec.decode(codes.float())
    with pytest.raises(ValueError, match="reasoning_codes"):
        tiny_codec.decode(codes, reasoning_codes=torch.full((1, 8, 2), 99))


# ---------------------------------------------------------------------------------------------------------------------
# Reference fixtures
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_model():
    fixture_dir = fixture_dir_or_skip("reference_codec")
    config, state_dicts = convert.load_fixture_dir(fixture_dir)
    converted, _, components = convert.convert_state_dicts(config, **state_dicts)
    model = ReasoningCodecModel(config).eval()
    convert.load_into_model(model, converted, components)
    return model, fixture_dir, components


def _fixture_data(fixture_dir: Path, stem: str) -> dict:
    return convert.load_safetensors(fixture_dir / "data" / f"{stem}.safetensors")


@pytest.mark.parametrize(
    "stem", ["c6_frozen_encoders", "c1_reasoning_encoder", "c2_reconstruction_encoder", "c3_decode_condition"]
)
def test_fixture_component_parity(fixture_model, stem):
    model, fixture_dir, components = fixture_model
    _, _, verifier = convert.VERIFIERS[stem]
    report = convert.ParityReport(atol=1e-5)
    with torch.no_grad():
        ok = verifier(model, _fixture_data(fixture_dir, stem), report)
    assert ok and report.codes_equal, "\n".join(report.lines)
    assert report.max_abs_diff <= 1e-5, "\n".join(report.lines)


def test_fixture_parity_check_detects_a_wrong_weight(fixture_model):
    model, fixture_dir, _ = fixture_model
    data = _fixture_data(fixture_dir, "c1_reasoning_encoder")
    bias = model.reasoning_encoder.merge_proj.bias
    original = bias.detach().clone()
    try:
        with torch.no_grad():
            bias.add_(1e-3)
            report = convert.ParityReport(atol=1e-4)
            assert not convert.verify_reasoning(model, data, report)
            assert report.max_abs_diff > 1e-4
    finally:
        with torch.no_grad():
            bias.copy_(original)


def test_fixture_end_to_end_encode(fixture_model):
    model, fixture_dir, _ = fixture_model
    data = _fixture_data(fixture_dir, "e2e")
    wav = data["input.wav"][:, None]
    segment = model.encode(wav, exact_length=True)
    assert torch.equal(segment.reasoning_codes, data["reasoning_codes"])
    assert torch.equal(segment.reconstruction_codes, data["reconstruction_codes"])
    pipeline = model.encode(wav)
    assert torch.equal(pipeline.reasoning_codes, data["pipeline.reasoning_codes"])
    assert torch.equal(pipeline.reconstruction_codes, data["pipeline.reconstruction_codes"])


def test_fixture_film_drop_is_not_applied(fixture_model):
    # The reference's random zero-condition draw changes codes when it fires; our FiLM is deterministic and equals the
    # draw-free output, which differs from the recorded drop-enabled codes.
    model, fixture_dir, _ = fixture_model
    data = _fixture_data(fixture_dir, "c2_reconstruction_encoder")
    with torch.no_grad():
        reasoning = model.reasoning_encoder(data["input.whisper_embeds"], data["input.music_ssl_layer11"])
        out = model.reconstruction_encoder(
            data["input.whisper_embeds"],
            data["input.wavlm_embeds"],
            data["input.music_ssl_layer4"],
            data["input.music_ssl_layer11"],
            reasoning.quantized,
        )
    assert torch.equal(out.codes, data["merge_codes"])
    if data["drop.mask"].any():
        assert not torch.equal(out.codes, data["drop.merge_codes"])


def test_conversion_script_end_to_end(tmp_path, capsys):
    fixture_dir = fixture_dir_or_skip("reference_codec")
    output_dir = tmp_path / "converted"
    code = convert.main(
        ["--fixture_dir", str(fixture_dir), "--output_dir", str(output_dir), "--verify_against", str(fixture_dir)]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0, "\n".join(lines[-60:])
    assert re.fullmatch(r"parity: codes_equal=True max_abs_diff=\S+ components=(\d+)/\1", lines[-1]), lines[-1]
    assert (output_dir / "config.json").is_file() and (output_dir / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    saved = json.loads((output_dir / "config.json").read_text())
    assert saved["model_type"] == "reasoning_codec"


def test_conversion_of_a_partial_fixture(tmp_path, capsys):
    """A fixture directory holding only some components: those present are converted and verified, the others are
    reported and skipped."""
    import shutil

    fixture_dir = fixture_dir_or_skip("reference_codec")
    partial = tmp_path / "partial"
    (partial / "weights").mkdir(parents=True)
    shutil.copy(fixture_dir / "config.json", partial / "config.json")
    (partial / "data").mkdir()
    for stem in ("c1_reasoning_encoder", "c2_reconstruction_encoder", "c5_sqcodec"):
        shutil.copy(fixture_dir / "data" / f"{stem}.safetensors", partial / "data")
    for name in ("reasoning_codec", "whisper_encoder", "wavlm", "music_ssl"):
        shutil.copy(fixture_dir / "weights" / f"{name}.safetensors", partial / "weights")
    code = convert.main(["--fixture_dir", str(partial), "--output_dir", str(tmp_path / "out"), "--verify_against", str(partial)])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "components absent from the input (left randomly initialised): ['decoder']" in out
    assert "[c5] skipped" in out
    assert re.search(r"^parity: codes_equal=True max_abs_diff=\S+ components=2/2$", out, re.MULTILINE)


def test_conversion_is_strict_about_keys(fixture_model):
    fixture_dir = fixture_dir_or_skip("reference_codec")
    config, state_dicts = convert.load_fixture_dir(fixture_dir)
    codec = dict(state_dicts["codec"])
    codec["audio_thinking.mystery.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="audio_thinking.mystery.weight"):
        convert.convert_state_dicts(config, **{**state_dicts, "codec": codec})
    codec = dict(state_dicts["codec"])
    del codec["time_film_phone.weight"]
    with pytest.raises(KeyError, match="time_film_phone.weight"):
        convert.convert_state_dicts(config, **{**state_dicts, "codec": codec})
    music = dict(state_dicts["music_ssl"])
    del music["model.conv.linear.weight"]
    converted, _, components = convert.convert_state_dicts(config, **{**state_dicts, "music_ssl": music})
    with pytest.raises(KeyError, match="music_ssl_encoder.proj.weight"):
        convert.load_into_model(ReasoningCodecModel(config), converted, components)


# ---------------------------------------------------------------------------------------------------------------------
# Full-size key manifests (meta device, no weights)
# ---------------------------------------------------------------------------------------------------------------------


def _parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text))


def test_full_size_manifest_maps_completely():
    fixture_dir = fixture_dir_or_skip("reference_codec")
    manifest = fixture_dir / "manifests" / "full_size_AudioDiffusion1D_state_dict.tsv"
    sq_manifest = fixture_dir / "manifests" / "sqcodec_state_dict_structure.tsv"
    sources = {"codec": {}, "whisper": {}, "wavlm": {}, "music_ssl": {}, "sq_codec": {}}
    source_names = {
        "ReasoningCodec.checkpoint": "codec",
        "whisper-medium (HF)": "whisper",
        "wavlm (HF)": "wavlm",
        "music_ssl.pt": "music_ssl",
    }
    with open(manifest) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        source = source_names[row["source_checkpoint"]]
        key = row["key_in_source_checkpoint"] if source != "codec" else row["key"]
        sources[source][key] = torch.empty(_parse_shape(row["shape"]), device="meta")
    assert sum(len(v) for v in sources.values()) == 1736
    with open(sq_manifest) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            sources["sq_codec"][row["key (this set's config)"]] = torch.empty(
                _parse_shape(row["shape in this set"]), device="meta"
            )
    reference = json.loads((fixture_dir / "config.json").read_text())
    sq = convert.infer_sq_codec_config_from_state_dict(sources["sq_codec"])
    config = ReasoningCodecConfig(decoder_config={**sq, "sq_causal": bool(reference["sq"]["causal"])})
    # DiT position table and other buffers are only shape-checked on the meta device.
    with torch.device("meta"):
        model = ReasoningCodecModel(config)
    converted, report, components = convert.convert_state_dicts(config, **sources)
    assert set(components) == {"codec", "decoder", "whisper", "wavlm", "music_ssl"}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(converted)) == []
    assert sorted(set(converted) - set(expected)) == []
    mismatched = {k: (tuple(v.shape), expected[k]) for k, v in converted.items() if tuple(v.shape) != expected[k]}
    assert mismatched == {}
    # Every original key is accounted for: converted, checked buffer, or explicitly dropped with a reason.
    dropped = set(report.dropped) | set(report.checked)
    assert any("structure_semantic_decoder" in k for k in dropped)
    assert any(k.startswith("wavlm:encoder.layers.11.") for k in dropped)
    assert any(k.startswith("music_ssl:model.conformer.layers.11.") for k in dropped)


def test_conversion_from_released_layout(tmp_path, capsys):
    """The released-file layout (torch pickles + HF folders), rebuilt from the fixture weights, converts with sizes read
    back from the tensors and reaches the same parity."""
    from safetensors.torch import save_file

    fixture_dir = fixture_dir_or_skip("reference_codec")
    reference = json.loads((fixture_dir / "config.json").read_text())
    weights = fixture_dir / "weights"
    release = tmp_path / "uniaudio2_ckpt"
    release.mkdir()
    codec = {"module." + k: v for k, v in convert.load_safetensors(weights / "reasoning_codec.safetensors").items()}
    torch.save({"model": codec, "epoch": 3}, release / "ReasoningCodec.checkpoint")
    torch.save({"codec_model": convert.load_safetensors(weights / "sqcodec.safetensors")}, release / "sqcodec.pth")
    # fairseq checkpoints also pickle their omegaconf `cfg`: emulate it with a class whose module is gone at load time.
    fake_module = types.ModuleType("_vanished_omegaconf")
    fake_config = type("DictConfig", (), {"__module__": "_vanished_omegaconf"})
    fake_module.DictConfig = fake_config
    sys.modules["_vanished_omegaconf"] = fake_module
    cfg = fake_config()
    cfg.model = {"_name": "musicfm"}
    try:
        music = convert.load_safetensors(weights / "music_ssl.safetensors")
        torch.save({"cfg": cfg, "model": music}, release / "music_ssl.pt")
    finally:
        del sys.modules["_vanished_omegaconf"]
    (release / "model_config.json").write_text(json.dumps(reference["dit"]))
    sq = {k: reference["sq"][k] for k in ("sample_rate", "causal", "num_samples")}
    (release / "sqcodec_config.yaml").write_text(
        "generator:\n  config:\n" + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in sq.items())
    )
    for folder, config_key, file in (("whisper-medium", "whisper", "whisper_encoder"), ("wavlm", "wavlm", "wavlm")):
        (release / folder).mkdir()
        (release / folder / "config.json").write_text(json.dumps(reference[config_key]))
        save_file(convert.load_safetensors(weights / f"{file}.safetensors"), str(release / folder / "model.safetensors"))
    # Every component fixture except the end-to-end one (covered by test_conversion_script_end_to_end).
    verify_dir = tmp_path / "verify"
    (verify_dir / "data").mkdir(parents=True)
    for path in (fixture_dir / "data").glob("c*.safetensors"):
        (verify_dir / "data" / path.name).symlink_to(path)
    code = convert.main(
        ["--checkpoint_dir", str(release), "--output_dir", str(tmp_path / "out"), "--verify_against", str(verify_dir)]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0, "\n".join(lines[-60:])
    assert re.fullmatch(r"parity: codes_equal=True max_abs_diff=\S+ components=6/6", lines[-1]), lines[-1]


def test_music_ssl_last_layer_uses_final_layer_norm():
    """When the semantic layer is the last conformer layer, the original reads `LayerNorm(last output)` (the encoder's
    final hidden state): check against transformers' own Wav2Vec2-Conformer encoder."""
    from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import Wav2Vec2ConformerEncoder

    from uniaudio2.modeling_reasoning_codec import ReasoningCodecMusicSSLEncoder

    config = ReasoningCodecMusicSSLConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=4,
        conv_depthwise_kernel_size=3, acoustic_layer=1, semantic_layer=2,
    )  # fmt: skip
    encoder = randomize_(ReasoningCodecMusicSSLEncoder(config).eval())
    assert encoder.final_layer_norm is not None
    reference = Wav2Vec2ConformerEncoder(encoder.layers[0].self_attn.config).eval()
    reference.layers = encoder.layers
    reference.embed_positions = encoder.rotary_embedding
    reference.layer_norm = encoder.final_layer_norm
    wave = make_signal(0.8)[None]
    with torch.no_grad():
        acoustic, semantic = encoder(wave)
        hidden = encoder.compute_mel(wave)
        for block in encoder.blocks:
            hidden = block(hidden)
        hidden = encoder.proj(hidden.permute(0, 3, 1, 2).flatten(2))
        expected = reference(hidden).last_hidden_state
    torch.testing.assert_close(semantic, expected.transpose(1, 2), rtol=1e-5, atol=1e-5)
    assert acoustic.shape == semantic.shape == (1, 16, 20)


def test_full_size_encode_shapes_on_meta_device():
    """The released geometry, built on the meta device (no memory, no weights), maps one 30 s pipeline window to
    150 reasoning and 375 reconstruction frames through every encoder."""
    config = ReasoningCodecConfig()
    with torch.device("meta"):
        model = ReasoningCodecModel(config).eval()
        window = torch.empty(2, config.encode_window_samples)
        acoustic, semantic = model.music_ssl_encoder(window)
        whisper = model.whisper_encoder(torch.empty(2, 80, 3000)).last_hidden_state
        states = model.wavlm_hidden_states(torch.empty(2, 480160 + config.wavlm_extra_samples))
        frozen = ReasoningCodecFrozenFeatures(
            whisper=whisper.transpose(1, 2),
            wavlm=states[-1].transpose(1, 2),
            music_acoustic=acoustic,
            music_semantic=semantic,
        )
        reasoning, reconstruction = model.quantize_features(frozen)
    assert acoustic.shape == semantic.shape == (2, 1024, 750)
    assert whisper.shape == (2, 1500, 1024)
    assert len(states) == 10 and states[-1].shape == (2, 1500, 768)
    assert reasoning.shape == (2, 150, 8) and reconstruction.shape == (2, 375, 8)
