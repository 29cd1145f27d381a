"""Tests of the ReasoningCodec decode side: conditioning, flow-matching DiT, SQ-codec, windowing and weight conversion.

Fixture tests compare against the reference fixtures in `../shared/fixtures/reference_codec` (skipped when absent);
the other tests use tiny random configurations.
"""

import json
import math

import pytest
import torch
from conftest import fixture_dir_or_skip
from safetensors.torch import load_file

from uniaudio2.configuration_reasoning_codec_decoder import ReasoningCodecDecoderConfig
from uniaudio2.modeling_reasoning_codec_decoder import (
    ReasoningCodecDecoder,
    convert_decoder_state_dict,
    infer_sq_codec_config_from_state_dict,
    select_decoder_keys,
    sinusoidal_position_table,
)


FIXTURE = "reference_codec"
ATOL = 1e-4


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These tests run many tiny ops; one intra-op thread avoids thread contention on small shared CPUs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------


def tiny_config(**overrides):
    kwargs = {
        "hidden_size": 16,
        "latent_dim": 8,
        "dit_num_hidden_layers": 2,
        "dit_num_attention_heads": 2,
        "dit_attention_head_dim": 8,
        "dit_max_position_embeddings": 64,
        "num_inference_steps": 3,
        "decode_window_frames": 16,
        "decode_overlap_frames": 6,
        "decode_context_frames": 3,
        "sq_init_channel": 2,
        "sq_num_samples": 2,
        "sq_upsample_factors": [2, 2],
        "sq_sampling_rate": 800,
    }
    kwargs.update(overrides)
    return ReasoningCodecDecoderConfig(**kwargs)


def tiny_decoder(seed=0, **overrides):
    torch.manual_seed(seed)
    decoder = ReasoningCodecDecoder(tiny_config(**overrides)).eval()
    # make the conditioning and the SQ-codec output matter (default inits are tiny for some layers)
    with torch.no_grad():
        decoder.sq_codec.decoder.output_conv.weight.mul_(5.0)
    return decoder


class FixtureSet:
    def __init__(self, path):
        self.path = path
        self.config = json.loads((path / "config.json").read_text())
        self.codec = load_file(str(path / "weights" / "reasoning_codec.safetensors"))
        self.sq = load_file(str(path / "weights" / "sqcodec.safetensors"))

    @property
    def num_steps(self):
        """Euler steps of the e2e decodes."""
        return int(self.config["fixture_sizes"]["euler_steps"])

    @property
    def guidance_scale(self):
        return float(self.config["tokenizer"]["guidance_scale"])

    def data(self, name):
        return load_file(str(self.path / "data" / f"{name}.safetensors"))

    def decoder_config(self):
        sq, dit = self.config["sq"], self.config["dit"]
        # the pipeline decode window (20 s) in latent frames
        hop = sq["num_samples"] * math.prod(sq["upsample_factors"])
        window = round(self.config["tokenizer"]["decode_no_reason_window_seconds"] * sq["sample_rate"] / hop)
        return ReasoningCodecDecoderConfig(
            hidden_size=self.config["codec"]["AudioDiffusion1D"]["codec_dim"],
            latent_dim=sq["latent_hidden_dim"],
            dit_num_hidden_layers=dit["num_layers"],
            dit_num_attention_heads=dit["num_attention_heads"],
            dit_attention_head_dim=dit["attention_head_dim"],
            dit_norm_eps=dit["norm_eps"],
            dit_attention_bias=dit["attention_bias"],
            guidance_scale=self.config["tokenizer"]["guidance_scale"],
            decode_window_frames=window,
            decode_overlap_frames=min(125, window // 4),
            decode_context_frames=min(32, window // 4),
            sq_sampling_rate=sq["sample_rate"],
            sq_num_bands=sq["num_bands"],
            sq_init_channel=sq["init_channel"],
            sq_num_samples=sq["num_samples"],
            sq_upsample_factors=sq["upsample_factors"],
            sq_upsample_kernel_sizes=sq["upsample_kernel_sizes"],
            sq_downsample_factors=sq["downsample_factors"],
            sq_downsample_kernel_sizes=sq["downsample_kernel_sizes"],
            sq_causal=sq["causal"],
            sq_delay_kernel_size=sq["delay_kernel_size"],
            sq_residual_kernel_size=sq["res_kernel_size"],
            sq_kernel_size=sq["default_kernel_size"],
        )

    def decoder(self):
        decoder = ReasoningCodecDecoder(self.decoder_config()).eval()
        decoder.load_state_dict(convert_decoder_state_dict(select_decoder_keys(self.codec), self.sq), strict=True)
        return decoder

    # Plain look-ups in the original codebooks (the RVQs belong to the encode side; this is only test glue).
    def lookup(self, prefix, codes):
        """codes (B, T, n_q) -> project_out(sum_l embed_l[codes_l])."""
        quantized = sum(
            self.codec[f"{prefix}.layers.{level}._codebook.embed"][0][codes[..., level]]
            for level in range(codes.shape[-1])
        )
        return quantized @ self.codec[f"{prefix}.project_out.weight"].T + self.codec[f"{prefix}.project_out.bias"]

    def reconstruction_embeddings(self, codes):
        """Tokenizer-layout codes (B, 8, T_c) -> [phone, semantic, acoustic] look-ups."""
        codes = codes.transpose(1, 2)
        return [
            self.lookup("vq_pronunciation_semantic", codes[..., 0:1]),
            self.lookup("vq_structure_semantic", codes[..., 1:2]),
            self.lookup("vq_acoustic", codes[..., 2:]),
        ]

    def reasoning_embeddings(self, codes):
        quantized = self.lookup("audio_thinking.reasoning_vq", codes.transpose(1, 2))
        return quantized @ self.codec["reason_adaptor.weight"].T + self.codec["reason_adaptor.bias"]


@pytest.fixture(scope="module")
def fixtures():
    return FixtureSet(fixture_dir_or_skip(FIXTURE))


@pytest.fixture(scope="module")
def fixture_decoder(fixtures):
    return fixtures.decoder()


# ---------------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------------


def test_config_defaults_are_the_released_codec():
    config = ReasoningCodecDecoderConfig()
    assert config.dit_hidden_size == 1536
    assert config.dit_num_hidden_layers == 32
    assert config.dit_in_channels == 1040 and config.dit_out_channels == 136
    assert config.dit_intermediate_size == 6144
    assert config.hop_length == 960 and config.sampling_rate == 24000
    assert config.latent_frame_rate == 25.0 and config.frame_rate == 12.5
    assert config.sigma_min == 1e-4 and config.guidance_scale == 1.5
    assert config.decode_window_frames == 500  # 20 s


def test_config_round_trip(tmp_path):
    config = tiny_config(guidance_scale=2.0, tile_short_inputs=True)
    config.save_pretrained(tmp_path)
    loaded = ReasoningCodecDecoderConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.hop_length == config.hop_length == 8


@pytest.mark.parametrize(
    "overrides",
    [
        {"dit_in_channels": 100},
        {"dit_out_channels": 3},
        {"decode_overlap_frames": 20},
        {"decode_overlap_frames": 9},
        {"decode_context_frames": 7},
        {"sq_upsample_kernel_sizes": [3, 4]},
        {"decode_window_frames": 100},
    ],
)
def test_config_rejects_inconsistent_sizes(overrides):
    with pytest.raises(Exception, match="must|needs"):
        tiny_config(**overrides)


# ---------------------------------------------------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------------------------------------------------


def test_conversion_is_strict(fixtures):
    codec = select_decoder_keys(fixtures.codec)
    assert not any(k.startswith(("vq_", "audio_thinking", "reason_adaptor")) for k in codec)
    converted = convert_decoder_state_dict(codec, fixtures.sq)
    decoder = ReasoningCodecDecoder(fixtures.decoder_config())
    assert set(converted) == set(decoder.state_dict())
    for key, value in decoder.state_dict().items():
        assert converted[key].shape == value.shape, key

    with pytest.raises(KeyError, match="vq_acoustic.project_out.weight"):
        convert_decoder_state_dict({**codec, "vq_acoustic.project_out.weight": torch.zeros(1)}, fixtures.sq)
    with pytest.raises(KeyError, match="cfm_wrapper.estimator.bogus"):
        convert_decoder_state_dict({**codec, "cfm_wrapper.estimator.bogus": torch.zeros(1)}, fixtures.sq)
    missing = dict(codec)
    del missing["cfm_wrapper.estimator.transformer_blocks.1.attn1.to_v.weight"]
    with pytest.raises(KeyError, match="transformer_blocks.1.attn1.to_v.weight"):
        convert_decoder_state_dict(missing, fixtures.sq)
    with pytest.raises(KeyError, match="decoder.99.weight"):
        convert_decoder_state_dict(codec, {**fixtures.sq, "decoder.99.weight": torch.zeros(1)})
    missing_sq = dict(fixtures.sq)
    del missing_sq["decoder.3.convs.2.conv1.weight_g"]
    with pytest.raises(KeyError, match="decoder.3.convs.2.conv1.weight_g"):
        convert_decoder_state_dict(codec, missing_sq)
    broken_prelu = dict(fixtures.sq)
    broken_prelu["encoder.4.down_conv.activation.weight"] = broken_prelu["encoder.4.down_conv.activation.weight"] + 1
    with pytest.raises(ValueError, match="shared"):
        convert_decoder_state_dict(codec, broken_prelu)
    broken_pe = dict(codec)
    broken_pe["cfm_wrapper.estimator.pos_embed.pe"] = broken_pe["cfm_wrapper.estimator.pos_embed.pe"] * 1.01
    with pytest.raises(ValueError, match="pos_embed.pe"):
        convert_decoder_state_dict(broken_pe, fixtures.sq)


def test_weight_norm_is_folded_exactly(fixtures):
    converted = convert_decoder_state_dict(select_decoder_keys(fixtures.codec), fixtures.sq)
    # ConvTranspose1d: weight norm over dims (1, 2) for every INPUT channel (dim 0)
    g, v = fixtures.sq["decoder.2.up_conv.layer.weight_g"], fixtures.sq["decoder.2.up_conv.layer.weight_v"]
    expected = g * v / v.norm(dim=(1, 2), keepdim=True)
    assert max_diff(converted["sq_codec.decoder.blocks.1.upsample.weight"], expected) < 1e-6
    g, v = fixtures.sq["encoder.7.weight_g"], fixtures.sq["encoder.7.weight_v"]
    expected = g * v / v.norm(dim=(1, 2), keepdim=True)
    assert max_diff(converted["sq_codec.encoder.output_conv.weight"], expected) < 1e-6
    stored_pe = fixtures.codec["cfm_wrapper.estimator.pos_embed.pe"]
    # Equal up to float32 rounding of the angles (a few ulps of the largest one, `length`).
    angle_rounding = 8 * torch.finfo(torch.float32).eps * stored_pe.shape[1]
    assert max_diff(sinusoidal_position_table(stored_pe.shape[1], stored_pe.shape[2]), stored_pe) < angle_rounding


def test_sq_codec_geometry_is_read_from_shapes(fixtures):
    inferred = infer_sq_codec_config_from_state_dict(fixtures.sq)
    config = fixtures.decoder_config()
    for key, value in inferred.items():
        assert getattr(config, key) == value, key


def _manifest_rows(path):
    rows = {}
    for line in path.read_text().splitlines()[1:]:
        fields = line.split("\t")
        rows[fields[0]] = tuple(int(x) for x in fields[1].strip("()").split(",") if x.strip())
    return rows


def test_full_size_manifest_maps_completely(fixtures):
    """The released (full-size) decode-side keys convert completely, with the shapes of the default config."""
    manifests = fixtures.path / "manifests"
    full = _manifest_rows(manifests / "full_size_AudioDiffusion1D_state_dict.tsv")
    codec = {k: torch.empty(shape, device="meta") for k, shape in select_decoder_keys(full).items()}
    sq = {
        k: torch.empty(shape, device="meta")
        for k, shape in _manifest_rows(manifests / "sqcodec_state_dict_structure.tsv").items()
    }
    assert len(codec) > 32 * 10
    converted = convert_decoder_state_dict(codec, sq)
    sq_geometry = infer_sq_codec_config_from_state_dict(sq)
    sq_geometry.pop("latent_dim")
    with torch.device("meta"):
        decoder = ReasoningCodecDecoder(ReasoningCodecDecoderConfig(**sq_geometry))
    expected = decoder.state_dict()
    assert set(converted) == set(expected)
    for key, value in expected.items():
        assert tuple(converted[key].shape) == tuple(value.shape), key
    dit_parameters = sum(v.numel() for k, v in expected.items() if k.startswith("dit."))
    assert abs(dit_parameters - 931.8e6) < 0.1e6  # spec: 931.8 M parameters (the stored 4.6 M `pe` buffer excluded)


# ---------------------------------------------------------------------------------------------------------------------
# fixture parity
# ---------------------------------------------------------------------------------------------------------------------


def test_c5_sq_codec_decode_and_encode(fixtures, fixture_decoder):
    data = fixtures.data("c5_sqcodec")
    sq_codec = fixture_decoder.sq_codec
    assert torch.equal(sq_codec.quantize(data["input.latents"]), data["decode.rounded"])

    captured = []
    post_processor = [sq_codec.decoder.post_act] if sq_codec.decoder.num_samples > 1 else []
    modules = [sq_codec.decoder.input_conv, *sq_codec.decoder.blocks, *post_processor, sq_codec.decoder.output_conv]
    hooks = [m.register_forward_hook(lambda _m, _i, out: captured.append(out)) for m in modules]
    try:
        with torch.no_grad():
            wav = sq_codec.decode(data["input.latents"])
    finally:
        for hook in hooks:
            hook.remove()
    assert wav.shape == data["decode.wav"].shape
    assert max_diff(wav, data["decode.wav"]) < ATOL
    for i, out in enumerate(captured):
        assert max_diff(out[:1], data[f"decode.layer_out.{i}"]) < ATOL, i

    with torch.no_grad():
        latents = sq_codec.encode(data["input.wav"])
    assert latents.shape == data["encode.latents"].shape
    assert max_diff(latents, data["encode.latents"]) < ATOL


def test_c4_dit_single_call(fixtures, fixture_decoder):
    data = fixtures.data("c4_dit_flow_matching")
    dit = fixture_decoder.dit
    timestep = data["input.single.timestep"]
    with torch.no_grad():
        t_freq = dit.time_embedding.timestep_features(timestep)
        embedded = dit.time_embedding(timestep, torch.float32)
        adaln = dit.adaln_proj(torch.nn.functional.silu(embedded))
        proj_in = dit.input_proj(data["input.single.hidden_states"])
        velocity = dit(data["input.single.hidden_states"], timestep)
    assert max_diff(t_freq, data["single.t_freq"]) < ATOL
    assert max_diff(embedded, data["single.embedded_timestep"]) < ATOL
    assert max_diff(adaln, data["single.adaln_timestep"]) < ATOL
    assert max_diff(proj_in, data["single.proj_in"]) < ATOL
    assert velocity.shape == data["single.velocity"].shape
    assert max_diff(velocity, data["single.velocity"]) < ATOL


@pytest.mark.parametrize("scenario", ["seg", "ctx"])
def test_c4_euler_flow_matching(fixtures, fixture_decoder, scenario):
    data = fixtures.data("c4_dit_flow_matching")
    calls = []
    hook = fixture_decoder.dit.register_forward_hook(lambda _m, args, out: calls.append((args[0], args[1], out)))
    try:
        latents = fixture_decoder.solve_flow(
            data[f"input.{scenario}.noise"],
            data[f"input.{scenario}.mu"],
            num_steps=int(data["input.num_steps"]),
            guidance_scale=float(data["input.guidance_scale"]),
            incontext_latents=data[f"input.{scenario}.incontext_latents"],
            incontext_length=int(data[f"input.{scenario}.incontext_length"]),
        )
    finally:
        hook.remove()
    assert len(calls) == int(data["input.num_steps"])
    for step, (dit_in, timestep, dit_out) in enumerate(calls):
        assert max_diff(dit_in, data[f"{scenario}.dit_in"][step]) < ATOL, step
        assert max_diff(timestep, data[f"{scenario}.dit_timestep"][step]) < 1e-6, step
        assert max_diff(dit_out, data[f"{scenario}.dit_out"][step]) < ATOL, step
    assert max_diff(latents, data[f"{scenario}.latents"]) < ATOL


@pytest.mark.parametrize("scenario", ["seg", "ctx"])
def test_c3_decode_condition(fixtures, fixture_decoder, scenario):
    data = fixtures.data("c3_decode_condition")
    branches = [data[f"{scenario}.lookup.{b}"] for b in ("phone", "semantic", "acoustic")]
    reasoning = data["seg.reasoning_adapted"] if scenario == "seg" else None
    # the test-side codebook look-up reproduces the fixture look-ups (so the e2e test below is meaningful)
    looked_up = fixtures.reconstruction_embeddings(data[f"input.{scenario}.codes_reconstruction"])
    for ours, ref in zip(looked_up, branches):
        assert max_diff(ours, ref) < ATOL
    with torch.no_grad():
        condition = fixture_decoder.compute_condition(branches, reasoning)
        cond_feature_emb = fixture_decoder.condition_proj(data[f"{scenario}.cond_in"])
    assert max_diff(cond_feature_emb, data[f"{scenario}.cond_feature_emb"]) < ATOL
    assert max_diff(condition[:, ::2], data[f"{scenario}.cond_feature_emb"]) < ATOL

    num_frames = condition.shape[1]
    latent_length = int(data[f"input.{scenario}.latent_length"])
    incontext_length = int(data[f"input.{scenario}.incontext_length"])
    mask = torch.zeros(1, num_frames, dtype=torch.long)
    mask[:, :latent_length] = 2
    mask[:, :incontext_length] = 1
    assert torch.equal(mask, data[f"{scenario}.latent_masks"])
    with torch.no_grad():
        mu = fixture_decoder.mask_condition(condition, mask)
    assert max_diff(mu, data[f"{scenario}.mu"]) < ATOL


def test_e2e_decode_segment(fixtures, fixture_decoder):
    """`decode_segment(reasoning, reconstruction)`: exact length, reasoning added, guidance 1.5, 4 steps."""
    data = fixtures.data("e2e")
    output = fixture_decoder(
        fixtures.reconstruction_embeddings(data["reconstruction_codes"]),
        fixtures.reasoning_embeddings(data["reasoning_codes"]),
        num_steps=fixtures.num_steps,
        guidance_scale=fixtures.guidance_scale,
        noise=data["input.noise_decode"],
    )
    assert output.audio_values.shape == (1, 1, data["decode.wav"].shape[-1])
    assert max_diff(output.latents, data["decode.latents"]) < ATOL
    assert max_diff(output.audio_values[:, 0], data["decode.wav"]) < ATOL


def test_e2e_pipeline_detokenize_no_reason(fixtures, fixture_decoder):
    """`detokenize_no_reason`: reconstruction codes only, tiled to one 20 s window, output cut back."""
    data = fixtures.data("e2e")
    codes = data["pipeline.reconstruction_codes"]
    output = fixture_decoder(
        fixtures.reconstruction_embeddings(codes),
        num_steps=fixtures.num_steps,
        guidance_scale=fixtures.guidance_scale,
        noise=data["input.pipeline.noise"],
        tile_short_inputs=True,
    )
    assert output.audio_values.shape == (1, 1, data["pipeline.wav"].shape[-1])
    assert output.latents.shape[1] == 2 * codes.shape[-1]
    assert max_diff(output.latents, data["pipeline.latents"][:, : output.latents.shape[1]]) < ATOL
    assert max_diff(output.audio_values[:, 0], data["pipeline.wav"]) < ATOL
    # the whole tiled window (500 latent frames) matches, not only the part that is kept
    with torch.no_grad():
        condition = fixture_decoder.compute_condition(fixtures.reconstruction_embeddings(codes))
        window = fixture_decoder.config.decode_window_frames
        condition = condition.repeat(1, -(-window // condition.shape[1]), 1)[:, :window]
    latents = fixture_decoder.solve_flow(
        data["input.pipeline.noise"], condition, num_steps=fixtures.num_steps, guidance_scale=fixtures.guidance_scale
    )
    assert latents.shape == data["pipeline.latents"].shape
    assert max_diff(latents, data["pipeline.latents"]) < ATOL


# ---------------------------------------------------------------------------------------------------------------------
# tiny random configurations
# ---------------------------------------------------------------------------------------------------------------------


def test_decode_shapes_and_lists():
    decoder = tiny_decoder()
    features = [torch.randn(2, 5, 16) for _ in range(3)]
    generator = torch.Generator().manual_seed(1)
    output = decoder(features, generator=generator)
    assert output.audio_values.shape == (2, 1, 5 * 2 * 8)
    assert output.latents.shape == (2, 10, 8)
    assert torch.isfinite(output.audio_values).all()
    summed = decoder(sum(features), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(summed.audio_values, output.audio_values, atol=1e-6)
    audio, latents = decoder(sum(features), generator=torch.Generator().manual_seed(1), return_dict=False)
    assert torch.equal(audio, summed.audio_values) and torch.equal(latents, summed.latents)


def test_generator_reproducibility():
    decoder = tiny_decoder()
    features = torch.randn(1, 6, 16)
    first = decoder(features, generator=torch.Generator().manual_seed(123)).audio_values
    torch.randn(10)  # the global RNG must not matter
    second = decoder(features, generator=torch.Generator().manual_seed(123)).audio_values
    other = decoder(features, generator=torch.Generator().manual_seed(124)).audio_values
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)
    noise = torch.randn(1, 12, 8, generator=torch.Generator().manual_seed(123))
    assert torch.equal(decoder(features, noise=noise).audio_values, first)


def test_guidance_at_most_one_runs_conditional_branch_only():
    decoder = tiny_decoder()
    features = torch.randn(2, 4, 16)
    noise = torch.randn(2, 8, 8)
    batch_sizes = []
    hook = decoder.dit.register_forward_hook(lambda _m, args, _o: batch_sizes.append(args[0].shape[0]))
    try:
        out_1 = decoder(features, noise=noise, guidance_scale=1.0, num_steps=2)
        assert batch_sizes == [2, 2]
        batch_sizes.clear()
        out_low = decoder(features, noise=noise, guidance_scale=0.5, num_steps=2)
        assert batch_sizes == [2, 2]
        batch_sizes.clear()
        # g = 1 + tiny runs the CFG batch; its guided velocity v_u + g (v_c - v_u) is then ~ v_c
        out_cfg = decoder(features, noise=noise, guidance_scale=1.0 + 1e-6, num_steps=2)
        assert batch_sizes == [4, 4]
    finally:
        hook.remove()
    assert torch.isfinite(out_1.audio_values).all()
    assert torch.equal(out_1.audio_values, out_low.audio_values)
    assert max_diff(out_1.latents, out_cfg.latents) < 1e-4
    out_2 = decoder(features, noise=noise, guidance_scale=2.0, num_steps=2)
    assert max_diff(out_1.latents, out_2.latents) > 1e-3  # guidance changes the result


def test_batch_equals_single():
    decoder = tiny_decoder()
    features = torch.randn(3, 7, 16)
    reasoning = torch.randn(3, 3, 16)
    noise = torch.randn(3, 14, 8)
    batched = decoder(features, reasoning, noise=noise)
    for i in range(3):
        single = decoder(features[i : i + 1], reasoning[i : i + 1], noise=noise[i : i + 1])
        assert max_diff(batched.audio_values[i], single.audio_values[0]) < 1e-5
        assert max_diff(batched.latents[i], single.latents[0]) < 1e-5


def test_reasoning_upsampling_matches_nearest_interpolation():
    decoder = tiny_decoder()
    features = torch.zeros(1, 12, 16)
    reasoning = torch.randn(1, 5, 16)
    with torch.no_grad():
        condition = decoder.compute_condition(features, reasoning)
        up = torch.nn.functional.interpolate(reasoning.transpose(1, 2), scale_factor=2.5, mode="nearest")
        expected = decoder.condition_proj(up.transpose(1, 2)[:, :12]).repeat_interleave(2, dim=1)
        assert max_diff(condition, expected) < 1e-6
        # a reasoning sequence too short for the reconstruction frames repeats its last frame
        short = decoder.compute_condition(torch.zeros(1, 4, 16), reasoning[:, :1])
        assert max_diff(short, decoder.condition_proj(reasoning[:, :1]).expand(1, 8, 16)) < 1e-6


def test_short_input_tiling_keeps_length():
    decoder = tiny_decoder()
    features = torch.randn(1, 3, 16)
    tiled = decoder(features, generator=torch.Generator().manual_seed(0), tile_short_inputs=True)
    exact = decoder(features, generator=torch.Generator().manual_seed(0), tile_short_inputs=False)
    assert tiled.audio_values.shape == exact.audio_values.shape == (1, 1, 6 * 8)
    with pytest.raises(ValueError, match="noise"):
        decoder(features, noise=torch.randn(1, 6, 8), tile_short_inputs=True)  # one full window (16) is generated


def test_long_audio_windowing_alignment_and_crossfade():
    decoder = tiny_decoder()
    config = decoder.config
    num_code_frames = 20  # 40 latent frames > window of 16
    features = torch.randn(1, num_code_frames, 16)
    num_frames = 2 * num_code_frames
    starts = decoder.window_starts(num_frames)
    assert starts == [0, 10, 20, 30]

    window_latents, window_audio = [], []
    original_solve, original_decode = decoder.solve_flow, decoder.sq_codec.decode

    def record_solve(*args, **kwargs):
        out = original_solve(*args, **kwargs)
        window_latents.append((kwargs.get("incontext_length", 0), out))
        return out

    def record_decode(latents):
        out = original_decode(latents)
        window_audio.append(out)
        return out

    decoder.solve_flow, decoder.sq_codec.decode = record_solve, record_decode
    try:
        output = decoder(features, generator=torch.Generator().manual_seed(0), show_progress=False)
    finally:
        del decoder.solve_flow, decoder.sq_codec.decode
    hop = config.hop_length
    assert output.audio_values.shape == (1, 1, num_frames * hop)
    assert output.latents.shape == (1, num_frames, config.latent_dim)
    assert len(window_latents) == len(starts)

    for k in range(1, len(starts)):
        incontext_length, current = window_latents[k]
        _, previous = window_latents[k - 1]
        offset = starts[k] - starts[k - 1]
        assert incontext_length == config.decode_context_frames
        # the prefix is the previous window's latents at the same time positions
        assert torch.equal(current[:, :incontext_length], previous[:, offset : offset + incontext_length])
        # linear cross-fade over the whole overlap, previous -> current
        begin, end = starts[k] * hop, (starts[k - 1] + config.decode_window_frames) * hop
        ramp = torch.linspace(0, 1, end - begin)
        if k == len(starts) - 1:
            blended = output.audio_values[..., begin:end]
            expected = (
                window_audio[k - 1][..., offset * hop :] * (1 - ramp) + window_audio[k][..., : end - begin] * ramp
            )
            assert max_diff(blended, expected) < 1e-5
    # Continuity at the joins: the fade starts on the previous window alone and ends on the current one alone, and
    # outside the overlaps the output is exactly the window waveform, so no sample of the output is a hard splice.
    audio = output.audio_values
    window = config.decode_window_frames
    for k in range(1, len(starts)):
        begin, end = starts[k] * hop, (starts[k - 1] + window) * hop
        offset = (starts[k] - starts[k - 1]) * hop
        assert torch.equal(audio[..., begin], window_audio[k - 1][..., offset])
        assert max_diff(audio[..., end - 1], window_audio[k][..., end - 1 - begin]) < 1e-6
    for k, start in enumerate(starts):
        own_begin = (starts[k - 1] + window) * hop if k > 0 else 0
        own_end = starts[k + 1] * hop if k + 1 < len(starts) else num_frames * hop
        assert torch.equal(
            audio[..., own_begin:own_end], window_audio[k][..., own_begin - start * hop : own_end - start * hop]
        )
    assert torch.equal(output.latents[:, : starts[1]], window_latents[0][1][:, : starts[1]])


def test_long_audio_progress_bar_and_generator(capsys):
    decoder = tiny_decoder()
    features = torch.randn(1, 12, 16)  # 24 latent frames -> 2 windows
    first = decoder(features, generator=torch.Generator().manual_seed(5), show_progress=True)
    second = decoder(features, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first.audio_values, second.audio_values)
    assert "ReasoningCodec decode" in capsys.readouterr().err


def test_windowing_with_window_sized_and_one_frame_longer_inputs():
    decoder = tiny_decoder()
    for num_code_frames, expected_windows in ((8, 1), (9, 2)):
        assert len(decoder.window_starts(2 * num_code_frames)) == expected_windows
        output = decoder(torch.randn(1, num_code_frames, 16), generator=torch.Generator().manual_seed(0))
        assert output.audio_values.shape[-1] == 2 * num_code_frames * decoder.config.hop_length
        assert torch.isfinite(output.audio_values).all()


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"reconstruction_embeddings": torch.randn(1, 4, 15)}, ValueError),
        ({"reconstruction_embeddings": torch.randn(4, 16)}, ValueError),
        ({"reconstruction_embeddings": torch.randn(1, 0, 16)}, ValueError),
        ({"reconstruction_embeddings": torch.zeros(1, 4, 16, dtype=torch.long)}, TypeError),
        (
            {"reconstruction_embeddings": torch.randn(1, 4, 16), "reasoning_embeddings": torch.randn(2, 2, 16)},
            ValueError,
        ),
        ({"reconstruction_embeddings": torch.randn(1, 4, 16), "num_steps": 0}, ValueError),
        ({"reconstruction_embeddings": torch.randn(1, 4, 16), "noise": torch.randn(1, 4, 8)}, ValueError),
        ({"reconstruction_embeddings": [torch.randn(1, 4, 16), torch.randn(1, 5, 16)]}, ValueError),
        ({"reconstruction_embeddings": torch.full((1, 4, 16), float("nan"))}, ValueError),
        (
            {
                "reconstruction_embeddings": torch.randn(1, 4, 16),
                "reasoning_embeddings": torch.full((1, 2, 16), float("inf")),
            },
            ValueError,
        ),
    ],
)
def test_bad_inputs(kwargs, error):
    decoder = tiny_decoder()
    with pytest.raises(error):
        decoder(**kwargs)


def test_sq_codec_round_trip_shapes():
    decoder = tiny_decoder()
    waveform = torch.randn(2, 1, 8 * 10)
    with torch.no_grad():
        latents = decoder.sq_codec.encode(waveform)
        assert latents.shape == (2, 8, 10)
        assert latents.abs().max() <= 1
        assert decoder.sq_codec.decode(latents).shape == (2, 1, 80)
    assert math.isclose(decoder.config.latent_frame_rate, 100.0)


def test_padded_batch_gives_each_clip_its_own_decode():
    decoder = tiny_decoder()
    lengths = [5, 9, 12]  # 12 code frames = 24 latent frames: two windows
    features = torch.randn(3, 12, 16)
    reasoning = torch.randn(3, 5, 16)
    reasoning_lengths = [2, 4, 5]
    noise = torch.randn(3, 24, 8)
    mask = torch.arange(12)[None] < torch.tensor(lengths)[:, None]
    reasoning_mask = torch.arange(5)[None] < torch.tensor(reasoning_lengths)[:, None]
    batched = decoder(
        features, reasoning, noise=noise, padding_mask=mask, reasoning_padding_mask=reasoning_mask, show_progress=False
    )
    hop = decoder.config.hop_length
    assert batched.audio_values.shape == (3, 1, 24 * hop)
    for i, (length, reasoning_length) in enumerate(zip(lengths, reasoning_lengths)):
        alone = decoder(
            features[i : i + 1, :length],
            reasoning[i : i + 1, :reasoning_length],
            noise=noise[i : i + 1, : 2 * length],
            show_progress=False,
        )
        assert torch.equal(batched.audio_values[i, :, : 2 * length * hop], alone.audio_values[0])
        assert torch.equal(batched.latents[i, : 2 * length], alone.latents[0])
        assert not batched.audio_values[i, :, 2 * length * hop :].any()
    # a full mask is the plain batched decode
    full = decoder(features, reasoning, noise=noise, padding_mask=torch.ones(3, 12, dtype=torch.bool))
    assert torch.equal(full.audio_values, decoder(features, reasoning, noise=noise).audio_values)
    with pytest.raises(ValueError, match="prefix"):
        decoder(features, padding_mask=torch.ones(3, 12, dtype=torch.bool).index_fill(1, torch.tensor([3]), False))
    with pytest.raises(ValueError, match="shape"):
        decoder(features, padding_mask=torch.ones(3, 11, dtype=torch.bool))


@pytest.mark.parametrize(
    "overrides",
    [
        {"sq_causal": False, "sq_upsample_factors": [3, 2], "sq_num_samples": 1},
        {"sq_causal": True, "sq_upsample_factors": [2, 3, 2], "sq_num_samples": 3, "sq_delay_kernel_size": 3},
    ],
)
def test_other_sq_codec_geometries(overrides):
    decoder = tiny_decoder(**overrides)
    hop = decoder.config.hop_length
    output = decoder(torch.randn(2, 11, 16), generator=torch.Generator().manual_seed(0), show_progress=False)
    assert output.audio_values.shape == (2, 1, 22 * hop)  # two windows, cross-faded
    assert torch.isfinite(output.audio_values).all()
    with torch.no_grad():
        assert decoder.sq_codec.encode(torch.randn(1, 1, 5 * hop)).shape == (1, 8, 5)
