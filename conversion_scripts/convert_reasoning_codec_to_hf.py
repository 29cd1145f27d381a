# Copyright 2026 The UniAudio2 integration authors.
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
Convert the original UniAudio 2.0 ReasoningCodec checkpoints to a transformers `ReasoningCodecModel` folder.

Two input layouts are supported:

* `--checkpoint_dir DIR`: the released files, `ReasoningCodec.checkpoint` (or `ReasoningCodec_1024.checkpoint`, see
  `--codec_checkpoint`), `sqcodec.pth` (+ optional `sqcodec_config.yaml`), `music_ssl.pt`, `whisper-medium/`, `wavlm/`
  (+ optional `model_config.json` of the DiT). All sizes (including the 8192 / 1024 codebook variants and the
  unreleased SQ-codec geometry) are read back from the tensor shapes. Pickles are read with
  `torch.load(weights_only=True)`; the omegaconf `cfg` inside the fairseq `music_ssl.pt` is replaced by inert stand-ins.
* `--fixture_dir DIR`: the reference-fixture layout (`weights/*.safetensors` with original key names and a
  `config.json` describing every sub-model). A fixture directory may hold only some components; the model is built
  from what is present (missing encoders keep their random initialisation and are reported).

The key mapping is strict: every original key is either mapped, checked-and-dropped (recomputable buffers) or listed
as a dropped training-only / dead weight; anything else raises an error naming the keys. With `--verify_against DIR`
the converted model is run on every component fixture found in `DIR/data/` and on the end-to-end fixture, and the
script prints a final line `parity: codes_equal=<bool> max_abs_diff=<float> components=<ok>/<n>`; the exit code is
non-zero when codes differ or a float output differs by more than `--atol` (1e-4). Log-mel front ends are compared
as power spectra relative to their peak, and the two music-SSL features computed from the end-to-end audio carry the
float32 STFT round-off of its empty mel bands and are held to 1e-2; `max_abs_diff` covers the other float checks.

Example:

    python conversion_scripts/convert_reasoning_codec_to_hf.py --fixture_dir ../shared/fixtures/reference_codec \\
        --output_dir /tmp/reasoning_codec --verify_against ../shared/fixtures/reference_codec
"""

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch


REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from uniaudio2.configuration_reasoning_codec import ReasoningCodecConfig  # noqa: E402
from uniaudio2.configuration_reasoning_codec_decoder import ReasoningCodecDecoderConfig  # noqa: E402
from uniaudio2.modeling_reasoning_codec import (  # noqa: E402
    ReasoningCodecModel,
    htk_mel_filter_bank,
    sinc_resample_kernel,
)
from uniaudio2.modeling_reasoning_codec_decoder import (  # noqa: E402
    ORIGINAL_CODEC_DECODER_PREFIXES,
    convert_decoder_state_dict,
    infer_sq_codec_config_from_state_dict,
)


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------

WHISPER_FIELDS = (
    "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins", "max_source_positions",
    "activation_function", "scale_embedding", "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim",
    "max_target_positions", "vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id",
)  # fmt: skip
WAVLM_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act", "conv_dim",
    "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "feat_extract_activation", "do_stable_layer_norm",
    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "num_buckets", "max_bucket_distance", "layer_norm_eps",
)  # fmt: skip


def config_from_reference(reference: dict, sq_from_weights: dict | None = None) -> ReasoningCodecConfig:
    """
    Build a `ReasoningCodecConfig` from the reference-fixture `config.json` (original field names: `whisper`, `wavlm`,
    `musicfm`, `w2v2`, `dit`, `sq`, `codec`, `tokenizer`).
    """
    codec = reference["codec"]
    diffusion = codec["AudioDiffusion1D"]
    thinking = codec["AudioThinking"]
    block = thinking["TransformerBlock"]
    reasoning_vq = thinking["reasoning_vq"]
    whisper = {k: reference["whisper"][k] for k in WHISPER_FIELDS if k in reference["whisper"]}
    wavlm = {k: reference["wavlm"][k] for k in WAVLM_FIELDS if k in reference["wavlm"]}
    musicfm, w2v2 = reference["musicfm"], reference["w2v2"]
    layers = diffusion.get("bestrq_layers", [4, 11])
    music_ssl = {
        "hidden_size": musicfm["encoder_dim"],
        "num_hidden_layers": musicfm["encoder_depth"],
        "conv_dim": musicfm["conv_dim"],
        "num_mel_bins": musicfm["n_mels"],
        "hop_length": musicfm["hop_length"],
        "frame_rate": musicfm.get("label_rate", 25),
        "num_attention_heads": w2v2["num_attention_heads"],
        "intermediate_size": w2v2["intermediate_size"],
        "conv_depthwise_kernel_size": w2v2["conv_depthwise_kernel_size"],
        "hidden_act": w2v2["hidden_act"],
        "layer_norm_eps": w2v2["layer_norm_eps"],
        "rotary_embedding_base": w2v2["rotary_embedding_base"],
        "acoustic_layer": layers[0],
        "semantic_layer": layers[1],
    }
    reasoning = {
        "hidden_size": thinking["dim"],
        "num_hidden_layers": thinking["encoder_depth"],
        "head_dim": block["dim_heads"],
        "rotary_dim": block.get("rope_dim"),
        "intermediate_size": int(thinking["dim"] * block.get("ff_kwargs", {}).get("mult", 4)),
        "query_interval": thinking["interval"],
        "codebook_size": reasoning_vq["codebook_size"],
        "codebook_dim": reasoning_vq["codebook_dim"],
        "num_quantizers": reasoning_vq["num_quantizers"],
    }
    reconstruction = {
        "hidden_size": diffusion["codec_dim"],
        "codebook_size": codec["vq_acoustic"]["codebook_size"],
        "codebook_dim": codec["vq_acoustic"]["codebook_dim"],
        "num_phone_quantizers": codec["vq_pronunciation_semantic"]["num_quantizers"],
        "num_semantic_quantizers": codec["vq_structure_semantic"]["num_quantizers"],
        "num_acoustic_quantizers": codec["vq_acoustic"]["num_quantizers"],
        "film_gamma": diffusion.get("gamma", 0.1),
    }
    for name in ("vq_pronunciation_semantic", "vq_structure_semantic"):
        if codec[name]["codebook_size"] != reconstruction["codebook_size"]:
            raise ValueError("All reconstruction RVQs must share one codebook size.")
    dit, sq = reference["dit"], reference["sq"]
    decoder = {
        "hidden_size": diffusion["codec_dim"],
        "latent_dim": dit["out_channels"],
        "dit_num_hidden_layers": dit["num_layers"],
        "dit_num_attention_heads": dit["num_attention_heads"],
        "dit_attention_head_dim": dit["attention_head_dim"],
        "dit_norm_eps": dit["norm_eps"],
        "dit_attention_bias": dit["attention_bias"],
        "sq_sampling_rate": sq["sample_rate"],
        "sq_num_bands": sq["num_bands"],
        "sq_init_channel": sq["init_channel"],
        "sq_num_samples": sq["num_samples"],
        "sq_upsample_factors": list(sq["upsample_factors"]),
        "sq_upsample_kernel_sizes": list(sq["upsample_kernel_sizes"]),
        "sq_downsample_factors": list(sq["downsample_factors"]),
        "sq_downsample_kernel_sizes": list(sq["downsample_kernel_sizes"]),
        "sq_causal": sq["causal"],
        "sq_delay_kernel_size": sq["delay_kernel_size"],
        "sq_residual_kernel_size": sq["res_kernel_size"],
        "sq_kernel_size": sq["default_kernel_size"],
    }
    tokenizer = reference.get("tokenizer", {})
    if "guidance_scale" in tokenizer:
        decoder["guidance_scale"] = float(tokenizer["guidance_scale"])
    if "decode_no_reason_window_seconds" in tokenizer:
        latent_rate = tokenizer.get("sq_codec_hz", 25)
        decoder["decode_window_frames"] = int(tokenizer["decode_no_reason_window_seconds"] * latent_rate)
    if sq_from_weights:
        for key, value in sq_from_weights.items():
            if key in decoder and decoder[key] != value:
                raise ValueError(f"SQ-codec config field {key}={decoder[key]} contradicts the weights ({value}).")
    return ReasoningCodecConfig(
        whisper_config=whisper,
        wavlm_config=wavlm,
        music_ssl_config=music_ssl,
        reasoning_config=reasoning,
        reconstruction_config=reconstruction,
        decoder_config=ReasoningCodecDecoderConfig(**decoder),
        sampling_rate=tokenizer.get("sample_rate", 24000),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Key mapping
# ---------------------------------------------------------------------------------------------------------------------


class ConversionReport:
    """Book-keeping of what happened to every original key."""

    def __init__(self):
        self.dropped: dict[str, str] = {}
        self.checked: dict[str, str] = {}

    def drop(self, key: str, reason: str):
        self.dropped[key] = reason

    def check(self, key: str, what: str):
        self.checked[key] = what

    def summary(self) -> str:
        reasons: dict[str, list[str]] = {}
        for key, reason in self.dropped.items():
            reasons.setdefault(reason, []).append(key)
        lines = [f"checked and dropped recomputable buffers: {len(self.checked)}"]
        for key, what in sorted(self.checked.items()):
            lines.append(f"  {key}: {what}")
        lines.append(f"dropped weights: {len(self.dropped)}")
        for reason, keys in sorted(reasons.items()):
            collapsed = sorted({re.sub(r"\.\d+\.", ".{i}.", k) for k in keys})
            lines.append(f"  [{reason}] {len(keys)} keys: " + ", ".join(collapsed))
        return "\n".join(lines)


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """`w = g * v / ||v||` (norm over all dims except `dim`), computed exactly as torch's weight norm does."""
    return torch._weight_norm(v.float(), g.float(), dim)


def _check_buffer(report: ConversionReport, key: str, stored: torch.Tensor, expected: torch.Tensor, atol: float):
    if stored.device.type == "meta":
        report.check(key, "shape only (meta)")
        if tuple(stored.shape) != tuple(expected.shape):
            raise ValueError(f"{key}: shape {tuple(stored.shape)} != recomputed {tuple(expected.shape)}")
        return
    diff = (stored.float() - expected.float()).abs().max().item() if stored.numel() else 0.0
    if tuple(stored.shape) != tuple(expected.shape) or diff > atol:
        raise ValueError(f"Recomputable buffer {key} does not match its formula (max diff {diff:.3e}).")
    report.check(key, f"matches the recomputed buffer (max diff {diff:.1e})")


def convert_whisper(state_dict: dict, report: ConversionReport) -> dict:
    """HF whisper checkpoint (`model.encoder.*`, `encoder.*`; decoder keys dropped) -> `whisper_encoder.*`."""
    converted = {}
    for key, value in state_dict.items():
        match = re.match(r"^(?:model\.)?encoder\.(.+)$", key)
        if match:
            converted["whisper_encoder." + match.group(1)] = value
        elif re.match(r"^(?:model\.)?decoder\.|^proj_out\.", key):
            report.drop("whisper:" + key, "Whisper decoder (unused by the codec)")
        else:
            raise KeyError(f"Unknown Whisper key: {key}")
    return converted


def convert_wavlm(state_dict: dict, config: ReasoningCodecConfig, report: ConversionReport) -> dict:
    """HF WavLM checkpoint -> `wavlm_encoder.*` (layers after the last averaged one are dropped)."""
    num_layers = min(config.reconstruction_config.wavlm_layer_end - 1, config.wavlm_config.num_hidden_layers)
    converted = {}
    for key, value in state_dict.items():
        key = key[len("wavlm.") :] if key.startswith("wavlm.") else key
        layer = re.match(r"^encoder\.layers\.(\d+)\.", key)
        if key == "masked_spec_embed":
            report.drop("wavlm:" + key, "training only (SpecAugment)")
        elif layer and int(layer.group(1)) >= num_layers:
            report.drop("wavlm:" + key, f"dead (WavLM layers after {num_layers} never reach the codes)")
        elif key.endswith("pos_conv_embed.conv.weight_g"):
            converted["wavlm_encoder." + key.replace("weight_g", "parametrizations.weight.original0")] = value
        elif key.endswith("pos_conv_embed.conv.weight_v"):
            converted["wavlm_encoder." + key.replace("weight_v", "parametrizations.weight.original1")] = value
        elif re.match(r"^(feature_extractor|feature_projection|encoder)\.", key):
            converted["wavlm_encoder." + key] = value
        else:
            raise KeyError(f"Unknown WavLM key: {key}")
    return converted


def convert_music_ssl(state_dict: dict, config: ReasoningCodecConfig, report: ConversionReport) -> dict:
    """fairseq `music_ssl.pt['model']` (`model.<MusicFM25Hz key>`) -> `music_ssl_encoder.*`."""
    music = config.music_ssl_config
    converted = {}
    for original_key, value in state_dict.items():
        key = re.sub(r"^(pretrained_model\.model\.model\.|model\.)", "", original_key)
        tag = "music_ssl:" + original_key
        layer = re.match(r"^conformer\.layers\.(\d+)\.(.+)$", key)
        block = re.match(r"^conv\.conv\.(\d+)\.(.+)$", key)
        if key == "preprocessor_melspec_2048.mel_stft.spectrogram.window":
            _check_buffer(report, tag, value, torch.hann_window(music.n_fft), 1e-6)
        elif key == "preprocessor_melspec_2048.mel_stft.mel_scale.fb":
            expected = htk_mel_filter_bank(music.n_fft // 2 + 1, music.num_mel_bins, music.sampling_rate)
            _check_buffer(report, tag, value, expected, 1e-6)
        elif block:
            converted[f"music_ssl_encoder.blocks.{block.group(1)}.{block.group(2)}"] = value
        elif key.startswith("conv.linear."):
            converted["music_ssl_encoder.proj." + key[len("conv.linear.") :]] = value
        elif key == "conformer.embed_positions.inv_freq":
            converted["music_ssl_encoder.rotary_embedding.inv_freq"] = value
        elif layer:
            if int(layer.group(1)) < music.num_used_layers:
                converted[f"music_ssl_encoder.layers.{layer.group(1)}.{layer.group(2)}"] = value
            else:
                report.drop(tag, f"dead (conformer layers after {music.num_used_layers} are not read)")
        elif key.startswith("conformer.layer_norm.") and music.num_used_layers == music.num_hidden_layers:
            converted["music_ssl_encoder.final_layer_norm." + key[len("conformer.layer_norm.") :]] = value
        elif key.startswith("conformer.layer_norm."):
            report.drop(tag, "dead (final conformer LayerNorm is applied after the read layers)")
        elif key.startswith("conformer.pos_conv_embed."):
            report.drop(tag, "dead (positional convolution not applied by the rotary conformer encoder)")
        elif key.startswith(("linear.", "quantizer_")) or key == "cls_token":
            report.drop(tag, "training only (BEST-RQ pre-training head)")
        else:
            raise KeyError(f"Unknown music-SSL key: {original_key}")
    return converted


def _quantizer(prefix: str, new_prefix: str, codec: dict, used: set, converted: dict, report: ConversionReport):
    for name in ("project_in", "project_out"):
        for param in ("weight", "bias"):
            key = f"{prefix}.{name}.{param}"
            converted[f"{new_prefix}.{name}.{param}"] = codec[key]
            used.add(key)
    levels = sorted({int(m.group(1)) for k in codec if (m := re.match(re.escape(prefix) + r"\.layers\.(\d+)\.", k))})
    for level in levels:
        key = f"{prefix}.layers.{level}._codebook.embed"
        embed = codec[key]
        converted[f"{new_prefix}.layers.{level}.embed"] = embed.reshape(embed.shape[-2], embed.shape[-1])
        used.add(key)
        for state in ("embed_avg", "cluster_size", "initted"):
            state_key = f"{prefix}.layers.{level}._codebook.{state}"
            if state_key in codec:
                used.add(state_key)
                report.drop(state_key, "training only (EMA codebook state)")


def convert_codec(codec: dict, config: ReasoningCodecConfig, report: ConversionReport) -> tuple[dict, dict]:
    """
    `ReasoningCodec.checkpoint['model']` (an `AudioDiffusion1D` state dict) -> encoder-side weights, plus the frozen
    encoder overrides it may contain (returned separately as `(converted, overrides)`). Decode-side keys are left to
    `convert_decoder_state_dict`.
    """
    converted, used = {}, set()

    def take(original: str, new: str):
        converted[new] = codec[original]
        used.add(original)

    def linear(original: str, new: str, bias: bool = True):
        take(original + ".weight", new + ".weight")
        if bias:
            take(original + ".bias", new + ".bias")

    def weight_norm_linear(original: str, new: str, bias: bool):
        g, v = codec[original + ".parametrizations.weight.original0"], codec[original + ".parametrizations.weight.original1"]
        converted[new + ".weight"] = fold_weight_norm(g, v, 0) if g.device.type != "meta" else torch.empty_like(v)
        used.update((original + ".parametrizations.weight.original0", original + ".parametrizations.weight.original1"))
        if bias:
            take(original + ".bias", new + ".bias")

    reasoning = config.reasoning_config
    take("audio_thinking.cls_token", "reasoning_encoder.query_token")
    linear("audio_thinking.down_sampling_layer_whisper", "reasoning_encoder.whisper_downsample")
    linear("audio_thinking.semantic_merge_proj", "reasoning_encoder.merge_proj")
    blocks = sorted({int(m.group(1)) for k in codec if (m := re.match(r"audio_thinking\.encoder_transformers\.(\d+)\.", k))})
    if len(blocks) != reasoning.num_hidden_layers:
        raise ValueError(f"Checkpoint has {len(blocks)} reasoning blocks, config expects {reasoning.num_hidden_layers}.")
    for i in blocks:
        old, new = f"audio_thinking.encoder_transformers.{i}", f"reasoning_encoder.layers.{i}"
        weight_norm_linear(f"{old}.self_attn.to_qkv", f"{new}.qkv_proj", bias=False)
        weight_norm_linear(f"{old}.self_attn.to_out", f"{new}.out_proj", bias=False)
        linear(f"{old}.self_attn.q_norm", f"{new}.q_norm")
        linear(f"{old}.self_attn.k_norm", f"{new}.k_norm")
        take(f"{old}.self_attn_scale.scale", f"{new}.attention_scale")
        weight_norm_linear(f"{old}.ff.ff.0.proj", f"{new}.gate_proj", bias=True)
        weight_norm_linear(f"{old}.ff.ff.2", f"{new}.down_proj", bias=True)
        take(f"{old}.ff_scale.scale", f"{new}.feed_forward_scale")
        rope_key = f"{old}.rope.inv_freq"
        if rope_key in codec:
            expected = 1.0 / (
                reasoning.rope_theta ** (torch.arange(0, reasoning.rotary_dim, 2).float() / reasoning.rotary_dim)
            )
            _check_buffer(report, rope_key, codec[rope_key], expected, 1e-7)
            used.add(rope_key)
    _quantizer("audio_thinking.reasoning_vq", "reasoning_encoder.quantizer", codec, used, converted, report)

    rec = "reconstruction_encoder"
    for original, new in (
        ("d_conv_whisper", "whisper_downsample"),
        ("d_conv_wavlm", "wavlm_downsample"),
        ("d_conv_embedding_semantic", "semantic_downsample"),
        ("d_conv_embedding_acoustic", "acoustic_downsample"),
        ("cond_fusion_layer_phone", "phone_proj"),
        ("cond_fusion_layer_semantic", "semantic_proj"),
        ("cond_fusion_layer_acoustic", "acoustic_proj"),
        ("time_film_phone", "phone_film"),
        ("time_film_semantic", "semantic_film"),
        ("time_film_acoustic", "acoustic_film"),
        ("reason_adaptor", "reasoning_adaptor"),
    ):
        linear(original, f"{rec}.{new}")
    _quantizer("vq_pronunciation_semantic", f"{rec}.phone_quantizer", codec, used, converted, report)
    _quantizer("vq_structure_semantic", f"{rec}.semantic_quantizer", codec, used, converted, report)
    _quantizer("vq_acoustic", f"{rec}.acoustic_quantizer", codec, used, converted, report)

    if "wavlm_transfer.kernel" in codec:
        expected, _ = sinc_resample_kernel(
            config.sampling_rate, config.ssl_sampling_rate, config.resampling_lowpass_filter_width, config.resampling_rolloff
        )
        _check_buffer(report, "wavlm_transfer.kernel", codec["wavlm_transfer.kernel"], expected, 1e-7)
        used.add("wavlm_transfer.kernel")

    overrides = {"whisper": {}, "wavlm": {}, "music_ssl": {}}
    for key in codec:
        if key in used or key.startswith(ORIGINAL_CODEC_DECODER_PREFIXES):
            continue
        if key.startswith(("structure_semantic_decoder.", "pronunciation_decoder.")):
            report.drop(key, "training only (auxiliary feature-reconstruction decoder)")
        elif key.startswith("whisper_encoder."):
            overrides["whisper"]["encoder." + key[len("whisper_encoder.") :]] = codec[key]
        elif key.startswith("wavlm_encoder."):
            overrides["wavlm"][key[len("wavlm_encoder.") :]] = codec[key]
        elif key.startswith("pretrained_model.model.model."):
            overrides["music_ssl"]["model." + key[len("pretrained_model.model.model.") :]] = codec[key]
        else:
            raise KeyError(f"Unknown ReasoningCodec checkpoint key: {key}")
    return converted, overrides


def convert_state_dicts(
    config: ReasoningCodecConfig,
    codec: dict | None,
    sq_codec: dict | None = None,
    whisper: dict | None = None,
    wavlm: dict | None = None,
    music_ssl: dict | None = None,
) -> tuple[dict, ConversionReport, list[str]]:
    """
    Convert all available original state dicts. Returns the converted state dict (transformers names), the report of
    checked/dropped keys, and the list of components that were converted.
    """
    report = ConversionReport()
    converted, components = {}, []
    overrides = {"whisper": {}, "wavlm": {}, "music_ssl": {}}
    if codec is not None:
        codec = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in codec.items()}
        encoder_side, overrides = convert_codec(codec, config, report)
        converted.update(encoder_side)
        components.append("codec")
        decoder_keys = {k: v for k, v in codec.items() if k.startswith(ORIGINAL_CODEC_DECODER_PREFIXES)}
        if sq_codec is not None and decoder_keys:
            decoder = convert_decoder_state_dict(decoder_keys, sq_codec)
            converted.update({"decoder." + k: v for k, v in decoder.items()})
            components.append("decoder")
        else:
            for key in decoder_keys:
                report.drop(key, "decoder weights not converted: no SQ-codec state dict in the input")
    # Keys stored inside the codec checkpoint override the separately loaded encoders (the reference loads the codec
    # checkpoint last, with strict=False).
    whisper = {**(whisper or {}), **overrides["whisper"]} or None
    wavlm = {**(wavlm or {}), **overrides["wavlm"]} or None
    music_ssl = {**(music_ssl or {}), **overrides["music_ssl"]} or None
    if whisper:
        converted.update(convert_whisper(whisper, report))
        components.append("whisper")
    if wavlm:
        converted.update(convert_wavlm(wavlm, config, report))
        components.append("wavlm")
    if music_ssl:
        converted.update(convert_music_ssl(music_ssl, config, report))
        components.append("music_ssl")
    return converted, report, components


def load_into_model(model: ReasoningCodecModel, converted: dict, components: list[str], strict_components: bool = True):
    """Load `converted` into `model`, failing on unexpected keys, on shape mismatches, and on missing keys of the
    converted components (keys of absent components are allowed to stay missing)."""
    expected = model.state_dict()
    unexpected = sorted(set(converted) - set(expected))
    if unexpected:
        raise KeyError(f"Converted keys unknown to ReasoningCodecModel: {unexpected}")
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise ValueError("Shape mismatches:\n  " + "\n  ".join(mismatched))
    prefixes = {
        "codec": ("reasoning_encoder.", "reconstruction_encoder."),
        "decoder": ("decoder.",),
        "whisper": ("whisper_encoder.",),
        "wavlm": ("wavlm_encoder.",),
        "music_ssl": ("music_ssl_encoder.",),
    }
    covered = tuple(p for c in components for p in prefixes[c])
    missing = sorted(k for k in expected if k.startswith(covered) and k not in converted)
    if missing and strict_components:
        raise KeyError(f"Keys of the converted components missing from the checkpoints: {missing}")
    absent = sorted({c for c in prefixes if c not in components})
    model.load_state_dict(converted, strict=False, assign=False)
    return absent


# ---------------------------------------------------------------------------------------------------------------------
# Loading the original files
# ---------------------------------------------------------------------------------------------------------------------


def load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_fixture_dir(fixture_dir: Path) -> tuple[ReasoningCodecConfig, dict]:
    reference = json.loads((fixture_dir / "config.json").read_text())
    weights = fixture_dir / "weights"
    files = {
        "codec": "reasoning_codec.safetensors",
        "sq_codec": "sqcodec.safetensors",
        "whisper": "whisper_encoder.safetensors",
        "wavlm": "wavlm.safetensors",
        "music_ssl": "music_ssl.safetensors",
    }
    state_dicts = {name: load_safetensors(weights / f) if (weights / f).is_file() else None for name, f in files.items()}
    sq_shapes = infer_sq_codec_config_from_state_dict(state_dicts["sq_codec"]) if state_dicts["sq_codec"] else None
    return config_from_reference(reference, sq_shapes), state_dicts


def _inert_class(qualified_name: str) -> type:
    """A do-nothing stand-in for a class referenced by a pickle (e.g. fairseq's omegaconf `cfg`): it only stores the
    arguments it is given, so no code from the checkpoint's libraries ever runs."""
    module, _, name = qualified_name.rpartition(".")

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    return type(name, (), {"__init__": __init__, "__setstate__": __setstate__, "__module__": module, "__qualname__": name})


def torch_load_weights_only(path: Path):
    """
    `torch.load(path, weights_only=True)`. Checkpoints that also pickle configuration objects (the fairseq
    `music_ssl.pt` holds an omegaconf `cfg`) are read by allow-listing inert stand-ins for exactly the classes the
    pickle names; tensors are restored normally and no third-party code is executed.
    """
    import pickle

    stand_ins = []
    for _ in range(256):
        try:
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            match = re.search(r"Unsupported global: GLOBAL (\S+) was not an allowed global", str(error))
            if match is None:
                raise
            stand_ins.append(_inert_class(match.group(1)))
    raise RuntimeError(f"{path}: too many non-tensor classes in the pickle.")


def _load_checkpoint_file(path: Path, key: str | None) -> dict:
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    data = torch_load_weights_only(path)
    if key is not None and isinstance(data, dict) and key in data:
        data = data[key]
    return data


def _load_hf_folder(folder: Path) -> dict:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"No weights found in {folder}")
    state_dict = {}
    for f in files:
        state_dict.update(load_safetensors(f) if f.suffix == ".safetensors" else torch_load_weights_only(f))
    return state_dict


def _count(state_dict: dict, pattern: str) -> int:
    return len({m.group(1) for k in state_dict if (m := re.match(pattern, k))})


def config_from_state_dicts(
    codec: dict,
    sq_codec: dict,
    music_ssl: dict,
    whisper_config: dict,
    wavlm_config: dict,
    dit_config: dict | None = None,
    sq_config: dict | None = None,
) -> ReasoningCodecConfig:
    """
    Build the configuration of a released checkpoint. Everything that the tensor shapes determine (widths, depths,
    codebook sizes -- e.g. the 8192 and 1024 variants --, SQ-codec geometry) is read from the weights; the rest comes
    from the shipped configs (`whisper-medium/config.json`, `wavlm/config.json`, `model_config.json`,
    `sqcodec_config.yaml`) or the released defaults.
    """
    codec_dim = codec["reason_adaptor.weight"].shape[0]
    thinking = "audio_thinking.encoder_transformers.0."
    rope_key = thinking + "rope.inv_freq"
    reasoning = {
        "hidden_size": codec_dim,
        "num_hidden_layers": _count(codec, r"audio_thinking\.encoder_transformers\.(\d+)\."),
        "head_dim": codec[thinking + "self_attn.q_norm.weight"].shape[0],
        "intermediate_size": codec[thinking + "ff.ff.2.parametrizations.weight.original1"].shape[1],
        "codebook_size": codec["audio_thinking.reasoning_vq.layers.0._codebook.embed"].shape[-2],
        "codebook_dim": codec["audio_thinking.reasoning_vq.layers.0._codebook.embed"].shape[-1],
        "num_quantizers": _count(codec, r"audio_thinking\.reasoning_vq\.layers\.(\d+)\."),
    }
    if rope_key in codec:
        reasoning["rotary_dim"] = 2 * codec[rope_key].shape[0]
    embed = codec["vq_acoustic.layers.0._codebook.embed"]
    reconstruction = {
        "hidden_size": codec_dim,
        "codebook_size": embed.shape[-2],
        "codebook_dim": embed.shape[-1],
        "num_phone_quantizers": _count(codec, r"vq_pronunciation_semantic\.layers\.(\d+)\."),
        "num_semantic_quantizers": _count(codec, r"vq_structure_semantic\.layers\.(\d+)\."),
        "num_acoustic_quantizers": _count(codec, r"vq_acoustic\.layers\.(\d+)\."),
    }
    music = {re.sub(r"^(pretrained_model\.model\.model\.|model\.)", "", k): v for k, v in music_ssl.items()}
    hidden = music["conv.linear.weight"].shape[0]
    conv_dim = music["conv.conv.0.conv1.weight"].shape[0]
    music_config = {
        "hidden_size": hidden,
        "conv_dim": conv_dim,
        "num_mel_bins": music["conv.linear.weight"].shape[1] // conv_dim * 4,
        "num_hidden_layers": _count(music, r"conformer\.layers\.(\d+)\."),
        "intermediate_size": music["conformer.layers.0.ffn1.intermediate_dense.weight"].shape[0],
        "conv_depthwise_kernel_size": music["conformer.layers.0.conv_module.depthwise_conv.weight"].shape[-1],
        "num_attention_heads": hidden // (2 * music["conformer.embed_positions.inv_freq"].shape[0]),
    }
    sq = infer_sq_codec_config_from_state_dict(sq_codec)
    if sq_config:
        sq["sq_causal"] = bool(sq_config.get("causal", True))
        sq["sq_sampling_rate"] = int(sq_config.get("sample_rate", 24000))
        if "num_samples" in sq_config:
            sq["sq_num_samples"] = int(sq_config["num_samples"])
    dit_layers = _count(codec, r"cfm_wrapper\.estimator\.transformer_blocks\.(\d+)\.")
    decoder = {"hidden_size": codec_dim, "dit_num_hidden_layers": dit_layers, **sq}
    if dit_config:
        decoder.update(
            dit_num_attention_heads=dit_config["num_attention_heads"],
            dit_attention_head_dim=dit_config["attention_head_dim"],
            dit_norm_eps=dit_config.get("norm_eps", 1e-6),
            dit_attention_bias=dit_config.get("attention_bias", True),
        )
    config = ReasoningCodecConfig(
        whisper_config={k: whisper_config[k] for k in WHISPER_FIELDS if k in whisper_config},
        wavlm_config={k: wavlm_config[k] for k in WAVLM_FIELDS if k in wavlm_config},
        music_ssl_config=music_config,
        reasoning_config=reasoning,
        reconstruction_config=reconstruction,
        decoder_config=ReasoningCodecDecoderConfig(**decoder),
    )
    inner = config.decoder_config.dit_hidden_size
    if codec["cfm_wrapper.estimator.proj_in.ffn_2.weight"].shape[0] != inner:
        raise ValueError(
            f"DiT width {codec['cfm_wrapper.estimator.proj_in.ffn_2.weight'].shape[0]} does not match heads x head_dim "
            f"= {inner}; pass the checkpoint's model_config.json."
        )
    return config


def load_checkpoint_dir(checkpoint_dir: Path, codec_checkpoint: str) -> tuple[ReasoningCodecConfig, dict]:
    """Released layout (see the module docstring). Sizes are read back from the files."""
    music_path = next(
        (p for p in (checkpoint_dir / "music_ssl.safetensors", checkpoint_dir / "music_ssl.pt") if p.exists()), None
    )
    if music_path is None:
        raise FileNotFoundError(f"Neither music_ssl.safetensors nor music_ssl.pt found in {checkpoint_dir}")
    state_dicts = {
        "codec": _load_checkpoint_file(checkpoint_dir / codec_checkpoint, "model"),
        "sq_codec": _load_checkpoint_file(checkpoint_dir / "sqcodec.pth", "codec_model"),
        "music_ssl": _load_checkpoint_file(music_path, "model"),
        "whisper": _load_hf_folder(checkpoint_dir / "whisper-medium"),
        "wavlm": _load_hf_folder(checkpoint_dir / "wavlm"),
    }
    state_dicts["codec"] = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state_dicts["codec"].items()}
    dit_path, sq_path = checkpoint_dir / "model_config.json", checkpoint_dir / "sqcodec_config.yaml"
    dit_config = json.loads(dit_path.read_text()) if dit_path.is_file() else None
    sq_config = None
    if sq_path.is_file():
        import yaml

        sq_config = yaml.safe_load(sq_path.read_text())["generator"]["config"]
    config = config_from_state_dicts(
        state_dicts["codec"],
        state_dicts["sq_codec"],
        state_dicts["music_ssl"],
        json.loads((checkpoint_dir / "whisper-medium" / "config.json").read_text()),
        json.loads((checkpoint_dir / "wavlm" / "config.json").read_text()),
        dit_config=dit_config,
        sq_config=sq_config,
    )
    return config, state_dicts


# ---------------------------------------------------------------------------------------------------------------------
# Verification against the reference fixtures
# ---------------------------------------------------------------------------------------------------------------------


class ParityReport:
    def __init__(self, atol: float, components: tuple[str, ...] = ("codec", "decoder", "whisper", "wavlm", "music_ssl")):
        self.atol = atol
        self.components = set(components)
        self.codes_equal = True
        self.max_abs_diff = 0.0
        self.results: dict[str, bool] = {}
        self.lines: list[str] = []

    def floats(self, component: str, name: str, ours: torch.Tensor, ref: torch.Tensor, atol: float | None = None) -> bool:
        """Max absolute difference within `atol` (default: the report's)."""
        atol = self.atol if atol is None else atol
        ours, ref = ours.detach().float().cpu(), ref.float()
        if tuple(ours.shape) != tuple(ref.shape):
            self.lines.append(f"  [{component}] {name}: SHAPE {tuple(ours.shape)} vs {tuple(ref.shape)}")
            self.max_abs_diff = math.inf
            return False
        diff = (ours - ref).abs().max().item() if ref.numel() else 0.0
        if atol == self.atol:  # the summary figure covers the checks held to the report's tolerance
            self.max_abs_diff = max(self.max_abs_diff, diff)
        ok = diff <= atol
        note = "" if atol == self.atol else f" (tolerance {atol:.0e})"
        self.lines.append(f"  [{component}] {name}: max_abs_diff={diff:.3e}{note}{'' if ok else '  FAIL'}")
        return ok

    def power_spectra(self, component: str, name: str, ours: torch.Tensor, ref: torch.Tensor, to_power) -> bool:
        """
        Compares two log spectrograms in the power domain, relative to each example's peak power (`to_power` undoes
        the log). Float32 STFTs of different FFT kernels (CPUs, libraries) agree to about 1e-6 of the peak but not
        in dB far below it, where both are round-off; a wrong filter bank or window is off by order 0.1.
        """
        ours, ref = ours.detach().double().cpu(), ref.double()
        if tuple(ours.shape) != tuple(ref.shape):
            self.lines.append(f"  [{component}] {name}: SHAPE {tuple(ours.shape)} vs {tuple(ref.shape)}")
            self.max_abs_diff = math.inf
            return False
        ours_power, ref_power = to_power(ours), to_power(ref)
        peak = ref_power.flatten(1).amax(1).clamp(min=1e-30).view(-1, *[1] * (ref.dim() - 1))
        diff = ((ours_power - ref_power).abs() / peak).max().item() if ref.numel() else 0.0
        ok = diff <= self.atol
        self.lines.append(f"  [{component}] {name}: max_power_diff/peak={diff:.3e}{'' if ok else '  FAIL'}")
        return ok

    def codes(self, component: str, name: str, ours: torch.Tensor, ref: torch.Tensor) -> bool:
        ours = ours.detach().cpu()
        equal = tuple(ours.shape) == tuple(ref.shape) and torch.equal(ours.long(), ref.long())
        if not equal:
            self.codes_equal = False
            mismatches = (ours.long() != ref.long()).sum().item() if ours.shape == ref.shape else "shape"
            self.lines.append(f"  [{component}] {name}: codes DIFFER ({mismatches}; {tuple(ours.shape)} vs {tuple(ref.shape)})")
        else:
            self.lines.append(f"  [{component}] {name}: codes equal {tuple(ref.shape)}")
        return equal

    def finish(self, component: str, ok: bool):
        self.results[component] = ok


def verify_frozen_encoders(model: ReasoningCodecModel, data: dict, report: ParityReport) -> bool:
    # The log-mel front ends are compared as power spectra (see `ParityReport.power_spectra`); the encoders behind them
    # are run on the reference's own log-mel, so that float32 STFT round-off far below the peak (which the dB scale
    # magnifies) does not mask or fake a difference of the networks.
    wav = data["input.wav"]
    features = model.extract_features(wav, return_intermediates=True)
    ok = True
    ok &= report.floats("c6", "whisper.wav_16k", features.waveform_16k, data["whisper.wav_16k"])
    ok &= report.power_spectra(
        "c6", "whisper.mel", features.whisper_mel, data["whisper.mel"], lambda mel: 10.0 ** (4.0 * mel - 4.0)
    )
    full = model.whisper_encoder(data["whisper.mel"]).last_hidden_state
    ok &= report.floats("c6", "whisper.last_hidden_state", full, data["whisper.last_hidden_state"])
    whisper_feature = full[:, : features.whisper.shape[-1]].transpose(1, 2)
    ok &= report.floats("c6", "whisper.feature", whisper_feature, data["whisper.feature"])
    ok &= report.floats("c6", "wavlm.input_16k_padded", torch.nn.functional.pad(features.waveform_16k, (0, 160)), data["wavlm.input_16k_padded"])
    # Only the WavLM layers that feed the codec are instantiated; compare the hidden states they produce.
    states = torch.stack(features.wavlm_hidden_states)
    reference_states = data["wavlm.hidden_states"][: states.shape[0]]
    ok &= report.floats("c6", f"wavlm.hidden_states[:{states.shape[0]}]", states, reference_states)
    ok &= report.floats("c6", "wavlm.feature", features.wavlm, data["wavlm.feature"])
    if "wavlm.cnn_features" in data:
        cnn = model.wavlm_encoder.feature_extractor(data["wavlm.input_16k_padded"])
        ok &= report.floats("c6", "wavlm.cnn_features", cnn, data["wavlm.cnn_features"])
    music = model.music_ssl_encoder
    mel = music.mel(wav[..., : (wav.shape[-1] // music.config.samples_per_frame) * music.config.samples_per_frame])
    ok &= report.power_spectra(
        "c6", "music_ssl.mel_db", mel.unsqueeze(1), data["music_ssl.mel_db"], lambda mel_db: 10.0 ** (mel_db / 10.0)
    )
    mean, std = music.config.mel_mean, music.config.mel_std
    ok &= report.power_spectra(
        "c6",
        "music_ssl.mel_normalized",
        music.compute_mel(wav),
        data["music_ssl.mel_normalized"],
        lambda normalized: 10.0 ** ((normalized * std + mean) / 10.0),
    )
    if "music_ssl.conv_out" in data:
        hidden = data["music_ssl.mel_normalized"]
        for block in music.blocks:
            hidden = block(hidden)
        conv_out = music.proj(hidden.permute(0, 3, 1, 2).flatten(2))
        ok &= report.floats("c6", "music_ssl.conv_out", conv_out, data["music_ssl.conv_out"])
    acoustic, semantic = music(input_features=data["music_ssl.mel_normalized"])
    ok &= report.floats("c6", "music_ssl.layer4", acoustic, data["music_ssl.layer4"])
    ok &= report.floats("c6", "music_ssl.layer11", semantic, data["music_ssl.layer11"])
    return ok


def verify_reasoning(model: ReasoningCodecModel, data: dict, report: ParityReport) -> bool:
    out = model.reasoning_encoder(data["input.whisper_embeds"], data["input.music_ssl_layer11"], return_hidden_states=True)
    ok = report.codes("c1", "codes", out.codes, data["codes"])
    for i, block in enumerate(out.block_outputs):
        if f"block_out.{i}" in data:
            ok &= report.floats("c1", f"block_out.{i}", block, data[f"block_out.{i}"])
    ok &= report.floats("c1", "query_tokens", out.query_outputs, data["query_tokens"])
    ok &= report.floats("c1", "quantized", out.quantized, data["quantized"])
    lookup = model.reasoning_encoder.quantizer.decode(data["codes"])
    ok &= report.floats("c1", "quantized_from_indices", lookup, data["quantized_from_indices"])
    return ok


def verify_reconstruction(model: ReasoningCodecModel, data: dict, report: ParityReport) -> bool:
    reasoning = model.reasoning_encoder(data["input.whisper_embeds"], data["input.music_ssl_layer11"])
    ok = report.codes("c2", "reasoning.codes", reasoning.codes, data["reasoning.codes"])
    out = model.reconstruction_encoder(
        data["input.whisper_embeds"],
        data["input.wavlm_embeds"],
        data["input.music_ssl_layer4"],
        data["input.music_ssl_layer11"],
        reasoning.quantized,
        return_intermediates=True,
    )
    ok &= report.codes("c2", "merge_codes", out.codes, data["merge_codes"])
    ok &= report.floats("c2", "reasoning_feature_up", out.reasoning_condition, data["reasoning_feature_up"])
    for branch in ("phone", "semantic", "acoustic"):
        ok &= report.floats("c2", f"{branch}.fused", out.fused[branch], data[f"{branch}.fused"])
        ok &= report.floats("c2", f"film.{branch}.out", out.modulated[branch], data[f"film.{branch}.out"])
        ok &= report.floats("c2", f"{branch}.quantized", out.branch_quantized[branch], data[f"{branch}.quantized"])
    if "decoder" in report.components:  # `cond_feature_emb` is a decoder weight
        merge = model.decoder.condition_proj(out.quantized)
        ok &= report.floats("c2", "merge_features", merge, data["merge_features"])
    return ok


def verify_decode_condition(model: ReasoningCodecModel, data: dict, report: ParityReport) -> bool:
    """Encoder-owned part of c3: RVQ look-ups and the reasoning term (decoder-owned parts are checked by its tests)."""
    ok = True
    for scenario in ("seg", "ctx"):
        codes = data[f"input.{scenario}.codes_reconstruction"]
        summed = model.reconstruction_embeddings(codes)
        cond_in = summed
        if f"input.{scenario}.codes_reasoning" in data:
            reasoning = model.reasoning_embeddings(data[f"input.{scenario}.codes_reasoning"])
            ok &= report.floats("c3", f"{scenario}.reasoning_adapted", reasoning, data[f"{scenario}.reasoning_adapted"])
            from uniaudio2.modeling_reasoning_codec import upsample_reasoning

            cond_in = summed + upsample_reasoning(reasoning, summed.shape[1])
        ok &= report.floats("c3", f"{scenario}.cond_in", cond_in, data[f"{scenario}.cond_in"])
        if "decoder" not in report.components:
            continue
        condition = model.decoder.compute_condition(
            summed, model.reasoning_embeddings(data[f"input.{scenario}.codes_reasoning"]) if scenario == "seg" else None
        )
        ok &= report.floats("c3", f"{scenario}.cond_feature_emb(x2)", condition, data[f"{scenario}.cond_feature_emb"].repeat_interleave(2, 1))
    return ok


def verify_dit(model: ReasoningCodecModel, data: dict, report: ParityReport) -> bool:
    decoder = model.decoder
    ok = report.floats(
        "c4", "single.velocity", decoder.dit(data["input.single.hidden_states"], data["input.single.timestep"]), data["single.velocity"]
    )
    guidance = float(data["input.guidance_scale"])
    steps = int(data["input.num_steps"])
    for scenario in ("seg", "ctx"):
        latents = decoder.solve_flow(
            data[f"input.{scenario}.noise"],
            data[f"input.{scenario}.mu"],
            steps,
            guidance,
            incontext_latents=data[f"input.{scenario}.incontext_latents"],
            incontext_length=int(data[f"input.{scenario}.incontext_length"]),
        )
        ok &= report.floats("c4", f"{scenario}.latents", latents, data[f"{scenario}.latents"])
    return ok


def verify_sq_codec(model: ReasoningCodecModel, data: dict, report: ParityReport) -> bool:
    sq = model.decoder.sq_codec
    ok = report.floats("c5", "decode.wav", sq.decode(data["input.latents"]), data["decode.wav"])
    if hasattr(sq, "encode"):
        ok &= report.floats("c5", "encode.latents", sq.encode(data["input.wav"]), data["encode.latents"])
    return ok


def verify_end_to_end(model: ReasoningCodecModel, data: dict, report: ParityReport) -> bool:
    wav = data["input.wav"][:, None]
    ok = True
    segment = model.encode(wav, exact_length=True)
    ok &= report.codes("e2e", "reasoning_codes (exact_length)", segment.reasoning_codes, data["reasoning_codes"])
    ok &= report.codes("e2e", "reconstruction_codes (exact_length)", segment.reconstruction_codes, data["reconstruction_codes"])
    pipeline = model.encode(wav)
    ok &= report.codes("e2e", "pipeline.reasoning_codes", pipeline.reasoning_codes, data["pipeline.reasoning_codes"])
    ok &= report.codes("e2e", "pipeline.reconstruction_codes", pipeline.reconstruction_codes, data["pipeline.reconstruction_codes"])
    features = model.extract_features(torch.nn.functional.pad(data["input.wav"], (0, (-data["input.wav"].shape[-1]) % 9600)), return_intermediates=True)
    ok &= report.floats("e2e", "encode.mel", features.whisper_mel, data["encode.mel"])
    ok &= report.floats("e2e", "encode.whisper_feature", features.whisper, data["encode.whisper_feature"])
    ok &= report.floats("e2e", "encode.wavlm_feature", features.wavlm, data["encode.wavlm_feature"])
    # From the audio, the music-SSL mel bands the signal leaves empty hold float32 STFT round-off, which the dB scale
    # and the standardisation (std 18.4 dB) pass to the encoder at about 1e-3 (c6 checks the encoder on the
    # reference's own mel at the report's tolerance; the codes above must be equal).
    ok &= report.floats("e2e", "encode.music_ssl_layer4", features.music_acoustic, data["encode.music_ssl_layer4"], atol=1e-2)
    ok &= report.floats("e2e", "encode.music_ssl_layer11", features.music_semantic, data["encode.music_ssl_layer11"], atol=1e-2)
    if "decoder" not in report.components:
        report.lines.append("  [e2e] decode checks skipped: the SQ-codec / decoder weights are not in the input")
        return ok
    decoded = model.decode(
        data["reconstruction_codes"],
        reasoning_codes=data["reasoning_codes"],
        num_steps=int(data["decode.dit_out"].shape[0]),
        guidance_scale=model.config.decoder_config.guidance_scale,
        noise=data["input.noise_decode"],
    )
    ok &= report.floats("e2e", "decode.latents", decoded.latents, data["decode.latents"])
    ok &= report.floats("e2e", "decode.wav", decoded.audio_values[:, 0], data["decode.wav"])
    pipeline_decoded = model.decode(
        data["pipeline.reconstruction_codes"],
        num_steps=int(data["decode.dit_out"].shape[0]),
        guidance_scale=model.config.decoder_config.guidance_scale,
        noise=data["input.pipeline.noise"],
        tile_short_inputs=True,
    )
    ok &= report.floats("e2e", "pipeline.wav", pipeline_decoded.audio_values[:, 0], data["pipeline.wav"])
    return ok


VERIFIERS = {
    "c6_frozen_encoders": ("c6", ("whisper", "wavlm", "music_ssl"), verify_frozen_encoders),
    "c1_reasoning_encoder": ("c1", ("codec",), verify_reasoning),
    "c2_reconstruction_encoder": ("c2", ("codec",), verify_reconstruction),
    "c3_decode_condition": ("c3", ("codec",), verify_decode_condition),
    "c4_dit_flow_matching": ("c4", ("decoder",), verify_dit),
    "c5_sqcodec": ("c5", ("decoder",), verify_sq_codec),
    "e2e": ("e2e", ("codec", "whisper", "wavlm", "music_ssl"), verify_end_to_end),
}


@torch.no_grad()
def verify(model: ReasoningCodecModel, fixture_dir: Path, components: list[str], atol: float) -> ParityReport:
    report = ParityReport(atol, tuple(components))
    data_dir = fixture_dir / "data"
    for stem, (name, needs, function) in VERIFIERS.items():
        path = data_dir / f"{stem}.safetensors"
        if not path.is_file():
            continue
        missing = [c for c in needs if c not in components]
        if missing:
            report.lines.append(f"  [{name}] skipped: its weights {missing} are not in the converted input")
            continue
        try:
            ok = function(model, load_safetensors(path), report)
        except Exception as error:  # noqa: BLE001 - reported as a failed component
            report.lines.append(f"  [{name}] ERROR: {type(error).__name__}: {error}")
            ok = False
        report.finish(name, ok)
    return report


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------


def save_model(model: ReasoningCodecModel, output_dir: Path):
    """`save_pretrained` into a temporary sibling folder, then move it into place (nothing half-written remains)."""
    output_dir = output_dir.resolve()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=str(output_dir.parent)))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates the folder private (0700)
    try:
        model.save_pretrained(str(tmp))
        card = Path(__file__).resolve().parents[1] / "model_cards" / "reasoning_codec.md"
        if card.is_file():
            shutil.copy(card, tmp / "README.md")
        if output_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=str(output_dir.parent)))
            backup.rmdir()
            os.replace(output_dir, backup)
            os.replace(tmp, output_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fixture_dir", type=Path, help="Reference-fixture layout (weights/*.safetensors + config.json).")
    source.add_argument("--checkpoint_dir", type=Path, help="Released checkpoint files.")
    parser.add_argument("--codec_checkpoint", default="ReasoningCodec.checkpoint", help="Codec file in --checkpoint_dir.")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--verify_against", type=Path, help="Fixture directory to check parity against.")
    parser.add_argument("--atol", type=float, default=1e-4, help="Tolerance of float outputs (default 1e-4).")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    if args.fixture_dir is not None:
        config, state_dicts = load_fixture_dir(args.fixture_dir)
    else:
        config, state_dicts = load_checkpoint_dir(args.checkpoint_dir, args.codec_checkpoint)
    converted, report, components = convert_state_dicts(config, **state_dicts)
    model = ReasoningCodecModel(config).eval()
    absent = load_into_model(model, converted, components)
    print(report.summary())
    print(f"converted components: {components}")
    if absent:
        print(f"WARNING: components absent from the input (left randomly initialised): {absent}")

    save_model(model, args.output_dir)
    print(f"saved to {args.output_dir}")

    if args.verify_against is None:
        return 0
    reloaded = ReasoningCodecModel.from_pretrained(str(args.output_dir)).eval()
    parity = verify(reloaded, args.verify_against, components, args.atol)
    print("\n".join(parity.lines))
    n_ok = sum(parity.results.values())
    n = len(parity.results)
    print(f"parity: codes_equal={parity.codes_equal} max_abs_diff={parity.max_abs_diff:.3e} components={n_ok}/{n}")
    return 0 if (parity.codes_equal and n > 0 and n_ok == n and parity.max_abs_diff <= args.atol) else 1


if __name__ == "__main__":
    sys.exit(main())
