# Copyright 2026 The UniAudio 2.0 authors and the HuggingFace Inc. team. All rights reserved.
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
"""Decode side of the UniAudio 2.0 ReasoningCodec: decode conditioning, flow-matching DiT and SQ-codec decoder.

Interface (used by `ReasoningCodecModel.decode`)
------------------------------------------------
`ReasoningCodecDecoder(config)` is a plain `nn.Module` built from a [`ReasoningCodecDecoderConfig`]. It owns no
codebook: the caller looks the codes up in its residual vector quantizers and passes the quantized features::

    output = decoder(
        reconstruction_embeddings,   # (B, T_c, hidden_size) at 12.5 Hz: phone + semantic + acoustic RVQ look-ups
                                     # (each `project_out(sum of codebook vectors)`), or a list/tuple of those three
                                     # tensors, which are summed here.
        reasoning_embeddings=None,   # optional (B, T_r, hidden_size) at 5 Hz: `reason_adaptor(reasoning RVQ look-up)`,
                                     # i.e. ALREADY passed through the codec's `reason_adaptor` linear. It is
                                     # up-sampled (nearest, x2.5) and added to the reconstruction features. The
                                     # UniAudio 2.0 LLM pipeline decodes without it.
        num_steps=None,              # Euler steps (default `config.num_inference_steps`)
        guidance_scale=None,         # CFG scale (default `config.guidance_scale`); <= 1 runs the conditional branch only
        generator=None,              # torch.Generator for the initial noise (reproducible decoding)
        noise=None,                  # or the initial noise itself, (B, T_gen, latent_dim)
    )
    output.audio_values              # (B, 1, T_c * 2 * hop_length) float32 waveform at `config.sampling_rate` (24 kHz)
    output.latents                   # (B, 2 * T_c, latent_dim) float32 generated SQ-codec latents (25 Hz)

`T_gen` is `2 * T_c` (25 Hz latent frames), or `config.decode_window_frames` when a short input is tiled to one
window (`tile_short_inputs=True`, the behaviour of the reference `detokenize_no_reason`).

Inputs longer than `config.decode_window_frames` latent frames (20 s) are decoded in overlapping windows (hop
`decode_window_frames - decode_overlap_frames` = 15 s by default, the last window cut at the end): every window after
the first keeps, as in-context prefix, the previous window's latents at the *same time positions*
(`decode_context_frames`, 1.28 s), and the waveforms are linearly cross-faded over the whole overlap (5 s). The noise is drawn once for the whole sequence, so a
passed `noise` tensor covers all windows.

Batches of clips with different lengths: pass `padding_mask` (B, T_c) (and `reasoning_padding_mask`); every clip is
then decoded exactly as if it were alone and the outputs are zero-padded.

Weights of the original checkpoints are converted with [`convert_decoder_state_dict`] (strict key mapping, legacy
weight norm folded exactly as the reference computes it); [`infer_sq_codec_config_from_state_dict`] reads the SQ-codec
geometry back from `sqcodec.pth` tensor shapes. The module has no buffers; a wrapping `PreTrainedModel` can initialise
its own parameters with [`init_reasoning_codec_decoder_weights`] from its `_init_weights`.
"""

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput
from transformers.utils import logging as hf_logging

from .configuration_reasoning_codec_decoder import ReasoningCodecDecoderConfig


logger = hf_logging.get_logger(__name__)


@dataclass
class ReasoningCodecDecoderOutput(ModelOutput):
    r"""
    Output of [`ReasoningCodecDecoder`].

    Args:
        audio_values (`torch.FloatTensor` of shape `(batch_size, num_bands, num_samples)`):
            Decoded waveform at `config.sampling_rate`, `num_samples = 2 * T_c * config.hop_length`.
        latents (`torch.FloatTensor` of shape `(batch_size, 2 * T_c, latent_dim)`):
            The generated SQ-codec latents (before the SQ-codec rounding), stitched over the decoding windows.
    """

    audio_values: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None


# ---------------------------------------------------------------------------------------------------------------------
# SQ-codec (ScalarAE): convolutional auto-encoder with a scalar-quantized 136-d latent
# ---------------------------------------------------------------------------------------------------------------------


class ReasoningCodecSQConv1d(nn.Conv1d):
    """
    Conv1d with either causal left padding `dilation * (kernel_size - 1)` or symmetric "same" padding. `init_gain`
    scales the weights drawn by `_init_weights` (smaller for the last convolution of a residual branch).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, causal=False, init_gain=1.0):
        padding = 0 if causal else (kernel_size * dilation - dilation) // 2
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, padding=padding)
        self.causal_padding = dilation * (kernel_size - 1) if causal else 0
        self.init_gain = init_gain

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.causal_padding > 0:
            hidden_states = F.pad(hidden_states, (self.causal_padding, 0))
        return super().forward(hidden_states)


class ReasoningCodecSQConvTranspose1d(nn.ConvTranspose1d):
    """Transposed convolution; in causal mode the last `stride` output samples are cropped."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, causal=False):
        padding = 0 if causal else (kernel_size - stride) // 2
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.causal = causal
        self.init_gain = 1.0

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = super().forward(hidden_states)
        if self.causal:
            hidden_states = hidden_states[..., : -self.stride[0]]
        return hidden_states


PRELU_INIT_SLOPE = 0.25
RESIDUAL_INIT_GAIN = 0.1
OUTPUT_INIT_GAIN = 0.03


class ReasoningCodecSQResidualUnit(nn.Module):
    """`x + PReLU(conv_1x1(PReLU(dilated_conv(x))))`."""

    def __init__(self, channels: int, dilation: int, kernel_size: int, causal: bool):
        super().__init__()
        self.conv1 = ReasoningCodecSQConv1d(channels, channels, kernel_size, dilation=dilation, causal=causal)
        self.act1 = nn.PReLU()
        # Started small so that the 25 stacked residual units begin close to the identity.
        self.conv2 = ReasoningCodecSQConv1d(channels, channels, 1, causal=causal, init_gain=RESIDUAL_INIT_GAIN)
        self.act2 = nn.PReLU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.act1(self.conv1(hidden_states))
        hidden_states = self.act2(self.conv2(hidden_states))
        return hidden_states + residual


RESIDUAL_DILATIONS = (1, 3, 5, 7, 9)


class ReasoningCodecSQDecoderBlock(nn.Module):
    """Transposed-convolution up-sampling followed by five dilated residual units."""

    def __init__(self, in_channels, out_channels, stride, kernel_size, residual_kernel_size, causal):
        super().__init__()
        self.upsample = ReasoningCodecSQConvTranspose1d(in_channels, out_channels, kernel_size, stride, causal=causal)
        self.residual_units = nn.ModuleList(
            [ReasoningCodecSQResidualUnit(out_channels, d, residual_kernel_size, causal) for d in RESIDUAL_DILATIONS]
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.upsample(hidden_states)
        for unit in self.residual_units:
            hidden_states = unit(hidden_states)
        return hidden_states


class ReasoningCodecSQEncoderBlock(nn.Module):
    """Five dilated residual units followed by a strided convolution (its PReLU is shared by all encoder blocks)."""

    def __init__(self, in_channels, out_channels, stride, kernel_size, residual_kernel_size, causal):
        super().__init__()
        self.residual_units = nn.ModuleList(
            [ReasoningCodecSQResidualUnit(in_channels, d, residual_kernel_size, causal) for d in RESIDUAL_DILATIONS]
        )
        self.downsample = ReasoningCodecSQConv1d(in_channels, out_channels, kernel_size, stride=stride, causal=causal)

    def forward(self, hidden_states: torch.Tensor, activation: nn.Module) -> torch.Tensor:
        for unit in self.residual_units:
            hidden_states = unit(hidden_states)
        return activation(self.downsample(hidden_states))


class ReasoningCodecSQDecoder(nn.Module):
    """SQ-codec decoder: latents (B, latent_dim, T) -> waveform (B, num_bands, T * hop_length)."""

    def __init__(self, config: ReasoningCodecDecoderConfig):
        super().__init__()
        num_stages = len(config.sq_upsample_factors)
        channels = [config.sq_init_channel * 2 ** (num_stages - i) for i in range(num_stages + 1)]
        self.input_conv = ReasoningCodecSQConv1d(config.latent_dim, channels[0], config.sq_delay_kernel_size)
        self.blocks = nn.ModuleList(
            [
                ReasoningCodecSQDecoderBlock(
                    channels[i], channels[i + 1], factor, kernel, config.sq_residual_kernel_size, config.sq_causal
                )
                for i, (factor, kernel) in enumerate(zip(config.sq_upsample_factors, config.sq_upsample_kernel_sizes))
            ]
        )
        self.num_samples = config.sq_num_samples
        if self.num_samples > 1:
            self.post_conv = ReasoningCodecSQConv1d(
                channels[-1], channels[-1], config.sq_kernel_size, causal=config.sq_causal
            )
            self.post_act = nn.PReLU()
        # Started quiet: a loud random waveform at initialisation drives the first updates to shrink the latents.
        self.output_conv = ReasoningCodecSQConv1d(
            channels[-1], config.sq_num_bands, config.sq_kernel_size, causal=config.sq_causal, init_gain=OUTPUT_INIT_GAIN
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden_states = self.input_conv(latents)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        if self.num_samples > 1:
            hidden_states = hidden_states.repeat_interleave(self.num_samples, dim=-1)
            hidden_states = self.post_act(self.post_conv(hidden_states))
        return self.output_conv(hidden_states)


class ReasoningCodecSQEncoder(nn.Module):
    """SQ-codec encoder: waveform (B, num_bands, N) -> tanh latents (B, latent_dim, N // hop_length)."""

    def __init__(self, config: ReasoningCodecDecoderConfig):
        super().__init__()
        num_stages = len(config.sq_downsample_factors)
        channels = [config.sq_init_channel * 2**i for i in range(num_stages + 1)]
        causal = config.sq_causal
        self.input_conv = ReasoningCodecSQConv1d(
            config.sq_num_bands, channels[0], config.sq_kernel_size, causal=causal
        )
        self.num_samples = config.sq_num_samples
        if self.num_samples > 1:
            self.pre_conv = ReasoningCodecSQConv1d(channels[0], channels[0], config.sq_kernel_size, causal=causal)
            self.pre_act = nn.PReLU()
        self.blocks = nn.ModuleList(
            [
                ReasoningCodecSQEncoderBlock(
                    channels[i], channels[i + 1], factor, kernel, config.sq_residual_kernel_size, causal
                )
                for i, (factor, kernel) in enumerate(
                    zip(config.sq_downsample_factors, config.sq_downsample_kernel_sizes)
                )
            ]
        )
        # One PReLU shared by the strided convolutions of all blocks (as in the released SQ-codec).
        self.downsample_act = nn.PReLU()
        self.output_conv = ReasoningCodecSQConv1d(
            channels[-1], config.latent_dim, config.sq_kernel_size, causal=causal
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        hidden_states = self.input_conv(waveform)
        if self.num_samples > 1:
            hidden_states = self.pre_act(self.pre_conv(hidden_states))
            hidden_states = F.avg_pool1d(hidden_states, self.num_samples)
        for block in self.blocks:
            hidden_states = block(hidden_states, self.downsample_act)
        return torch.tanh(self.output_conv(hidden_states))


class ReasoningCodecSQCodec(nn.Module):
    """The scalar-quantized waveform auto-encoder ("SQ-codec", `ScalarAE`) whose latents the DiT generates."""

    def __init__(self, config: ReasoningCodecDecoderConfig):
        super().__init__()
        self.quantization_levels = config.sq_quantization_levels
        self.encoder = ReasoningCodecSQEncoder(config)
        self.decoder = ReasoningCodecSQDecoder(config)

    def quantize(self, latents: torch.Tensor) -> torch.Tensor:
        """Scalar quantization `round(levels * z) / levels` (round half to even, as `torch.round`)."""
        return torch.round(self.quantization_levels * latents) / self.quantization_levels

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform `(B, num_bands, N)` -> unrounded latents `(B, latent_dim, N // hop_length)` in [-1, 1]."""
        return self.encoder(waveform)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents `(B, latent_dim, T)` -> waveform `(B, num_bands, T * hop_length)`; the latents are rounded first."""
        return self.decoder(self.quantize(latents))


# ---------------------------------------------------------------------------------------------------------------------
# Flow-matching velocity network: 1-D DiT with adaLN-single (PixArt-alpha style)
# ---------------------------------------------------------------------------------------------------------------------


def sinusoidal_position_table(length: int, dim: int, device=None) -> torch.Tensor:
    """`(1, length, dim)` table with `sin` on even and `cos` on odd channels (frequencies `10000^(-2i/dim)`)."""
    position = torch.arange(length, device=device).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, length, dim, device=device)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


class ReasoningCodecDiTProjection(nn.Module):
    """`Linear(Conv1d_k(x) / sqrt(k))` on `(B, T, C)` inputs (the DiT input and output projections)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.linear = nn.Linear(out_channels, out_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv(hidden_states.transpose(1, 2)).transpose(1, 2)
        return self.linear(hidden_states * self.kernel_size**-0.5)


class ReasoningCodecDiTTimestepEmbedding(nn.Module):
    """Flow time t in [0, 1] -> `[cos, sin]` features of `scale * t` -> two-layer SiLU MLP."""

    def __init__(self, config: ReasoningCodecDecoderConfig):
        super().__init__()
        self.num_features = config.dit_timestep_embedding_dim
        self.scale = config.dit_timestep_scale
        self.linear_1 = nn.Linear(self.num_features, config.dit_hidden_size)
        self.linear_2 = nn.Linear(config.dit_hidden_size, config.dit_hidden_size)

    def timestep_features(self, timestep: torch.Tensor) -> torch.Tensor:
        half = self.num_features // 2
        exponent = -math.log(10000) * torch.arange(half, device=timestep.device) / half
        frequencies = torch.exp(exponent).to(timestep.dtype)
        arguments = timestep[:, None] * frequencies[None] * self.scale
        return torch.cat([torch.cos(arguments), torch.sin(arguments)], dim=-1)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        features = self.timestep_features(timestep).to(dtype)
        return self.linear_2(F.silu(self.linear_1(features)))


class ReasoningCodecDiTAttention(nn.Module):
    """Multi-head self-attention without mask (every latent frame sees the whole window)."""

    def __init__(self, config: ReasoningCodecDecoderConfig):
        super().__init__()
        self.num_heads = config.dit_num_attention_heads
        self.head_dim = config.dit_attention_head_dim
        dim = config.dit_hidden_size
        self.q_proj = nn.Linear(dim, dim, bias=config.dit_attention_bias)
        self.k_proj = nn.Linear(dim, dim, bias=config.dit_attention_bias)
        self.v_proj = nn.Linear(dim, dim, bias=config.dit_attention_bias)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, length, _ = hidden_states.shape
        shape = (batch_size, length, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        attn_output = F.scaled_dot_product_attention(query, key, value)
        attn_output = attn_output.transpose(1, 2).reshape(batch_size, length, self.num_heads * self.head_dim)
        return self.o_proj(attn_output)


class ReasoningCodecDiTMLP(nn.Module):
    def __init__(self, config: ReasoningCodecDecoderConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.dit_hidden_size, config.dit_intermediate_size)
        self.fc2 = nn.Linear(config.dit_intermediate_size, config.dit_hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(hidden_states), approximate="tanh"))


class ReasoningCodecDiTLayer(nn.Module):
    """DiT block with adaLN-single modulation: `h += gate * f(LN(h) * (1 + scale) + shift)` for attention and MLP."""

    def __init__(self, config: ReasoningCodecDecoderConfig):
        super().__init__()
        dim = config.dit_hidden_size
        self.eps = config.dit_norm_eps
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)
        self.self_attn = ReasoningCodecDiTAttention(config)
        self.mlp = ReasoningCodecDiTMLP(config)

    def forward(self, hidden_states: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        dim = hidden_states.shape[-1]
        params = self.scale_shift_table[None] + modulation.reshape(hidden_states.shape[0], 6, dim)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = params.chunk(6, dim=1)

        normed = F.layer_norm(hidden_states, (dim,), eps=self.eps) * (1 + scale_msa) + shift_msa
        hidden_states = hidden_states + gate_msa * self.self_attn(normed)

        normed = F.layer_norm(hidden_states, (dim,), eps=self.eps) * (1 + scale_mlp) + shift_mlp
        return hidden_states + gate_mlp * self.mlp(normed)


class ReasoningCodecDiT(nn.Module):
    """
    Velocity network of the flow-matching decoder (the reference `Transformer1DModel`).

    Input `(N, T, dit_in_channels)` = `[x_t, in-context latents, condition]` and per-row flow times `(N,)` in [0, 1];
    output the velocity `(N, T, latent_dim)`.
    """

    def __init__(self, config: ReasoningCodecDecoderConfig):
        super().__init__()
        dim = config.dit_hidden_size
        self.hidden_size = dim
        self.eps = config.dit_norm_eps
        self.max_positions = config.dit_max_position_embeddings
        self.input_proj = ReasoningCodecDiTProjection(config.dit_in_channels, dim, config.dit_projection_kernel_size)
        self.time_embedding = ReasoningCodecDiTTimestepEmbedding(config)
        self.adaln_proj = nn.Linear(dim, 6 * dim)
        self.layers = nn.ModuleList([ReasoningCodecDiTLayer(config) for _ in range(config.dit_num_hidden_layers)])
        self.final_scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.output_proj = ReasoningCodecDiTProjection(dim, config.dit_out_channels, config.dit_projection_kernel_size)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        length = hidden_states.shape[1]
        if length > self.max_positions:
            raise ValueError(f"The DiT handles at most {self.max_positions} latent frames per window, got {length}.")
        hidden_states = self.input_proj(hidden_states)
        position_table = sinusoidal_position_table(length, self.hidden_size, device=hidden_states.device)
        hidden_states = hidden_states + position_table.to(hidden_states.dtype)

        timestep = timestep.reshape(-1).expand(hidden_states.shape[0])
        embedded_timestep = self.time_embedding(timestep, hidden_states.dtype)
        modulation = self.adaln_proj(F.silu(embedded_timestep))
        for layer in self.layers:
            hidden_states = layer(hidden_states, modulation)

        shift, scale = (self.final_scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)
        hidden_states = F.layer_norm(hidden_states, (self.hidden_size,), eps=self.eps) * (1 + scale) + shift
        return self.output_proj(hidden_states)


# ---------------------------------------------------------------------------------------------------------------------
# The decoder: conditioning, Euler flow matching with windowing, SQ-codec
# ---------------------------------------------------------------------------------------------------------------------


def _upsample_reasoning(reasoning: torch.Tensor, length: int) -> torch.Tensor:
    """Nearest x2.5 up-sampling (5 Hz -> 12.5 Hz): frame t takes reasoning frame floor(2t / 5).

    This equals `F.interpolate(scale_factor=2.5, mode="nearest")` cropped to `length`; if the reasoning sequence is
    too short for `length` frames (the reference then fails), its last frame is repeated.
    """
    index = torch.div(torch.arange(length, device=reasoning.device) * 2, 5, rounding_mode="floor")
    index = index.clamp(max=reasoning.shape[1] - 1)
    return reasoning[:, index]


class ReasoningCodecDecoder(nn.Module):
    """
    Decoder of the UniAudio 2.0 ReasoningCodec: quantized reconstruction features (12.5 Hz) -> 24 kHz waveform.

    See the module docstring for the call interface. Sub-modules: `condition_proj` (`cond_feature_emb` of the
    reference), `unconditional_embedding` (`zero_cond_embedding1`), `dit` (the flow-matching velocity network) and
    `sq_codec` (SQ-codec encoder and decoder).
    """

    def __init__(self, config: ReasoningCodecDecoderConfig):
        super().__init__()
        self.config = config
        self.condition_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.unconditional_embedding = nn.Parameter(torch.randn(config.hidden_size))
        self.dit = ReasoningCodecDiT(config)
        self.sq_codec = ReasoningCodecSQCodec(config)

    # ---- conditioning -----------------------------------------------------------------------------------------------

    def compute_condition(
        self,
        reconstruction_embeddings: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...],
        reasoning_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Per-latent-frame DiT condition `(B, 2 * T_c, hidden_size)`: `condition_proj(rec [+ up(reasoning)])`, every
        code frame repeated twice (12.5 Hz -> 25 Hz).
        """
        features = self._check_embeddings(reconstruction_embeddings, reasoning_embeddings)
        if reasoning_embeddings is not None:
            features = features + _upsample_reasoning(reasoning_embeddings.to(features.dtype), features.shape[1])
        condition = self.condition_proj(features.to(self.condition_proj.weight.dtype))
        return condition.repeat_interleave(2, dim=1)

    def mask_condition(self, condition: torch.Tensor, latent_mask: torch.Tensor) -> torch.Tensor:
        """Replace the condition of unconditioned frames (`latent_mask == 0`) by the learned unconditional embedding."""
        keep = (latent_mask > 0).unsqueeze(-1)
        return torch.where(keep, condition, self.unconditional_embedding.to(condition.dtype))

    def _check_embeddings(self, reconstruction_embeddings, reasoning_embeddings) -> torch.Tensor:
        if isinstance(reconstruction_embeddings, (list, tuple)):
            if len(reconstruction_embeddings) == 0:
                raise ValueError("`reconstruction_embeddings` is an empty list.")
            shapes = {tuple(t.shape) for t in reconstruction_embeddings}
            if len(shapes) != 1:
                raise ValueError(f"The per-branch reconstruction embeddings must have equal shapes, got {shapes}.")
            features = reconstruction_embeddings[0]
            for branch in reconstruction_embeddings[1:]:
                features = features + branch
        else:
            features = reconstruction_embeddings
        if not torch.is_tensor(features) or not features.is_floating_point():
            raise TypeError("`reconstruction_embeddings` must be a float tensor (the looked-up quantized features).")
        hidden_size = self.config.hidden_size
        if features.ndim != 3 or features.shape[-1] != hidden_size or features.shape[1] == 0:
            raise ValueError(
                f"`reconstruction_embeddings` must have shape (batch, frames >= 1, {hidden_size}), "
                f"got {tuple(features.shape)}."
            )
        if not bool(torch.isfinite(features).all()):
            raise ValueError("`reconstruction_embeddings` contains NaN or infinite values.")
        if reasoning_embeddings is not None and not bool(torch.isfinite(reasoning_embeddings).all()):
            raise ValueError("`reasoning_embeddings` contains NaN or infinite values.")
        if reasoning_embeddings is not None and (
            reasoning_embeddings.ndim != 3
            or reasoning_embeddings.shape[0] != features.shape[0]
            or reasoning_embeddings.shape[-1] != hidden_size
            or reasoning_embeddings.shape[1] == 0
        ):
            raise ValueError(
                f"`reasoning_embeddings` must have shape ({features.shape[0]}, frames >= 1, {hidden_size}), "
                f"got {tuple(reasoning_embeddings.shape)}."
            )
        return features

    # ---- flow matching ----------------------------------------------------------------------------------------------

    def velocity(
        self,
        latents: torch.Tensor,
        incontext_latents: torch.Tensor,
        condition: torch.Tensor,
        t: torch.Tensor,
        guidance_scale: float,
    ) -> torch.Tensor:
        """Guided velocity at flow time `t` (0-d tensor). `guidance_scale <= 1`: conditional branch only."""
        dtype = self.dit.input_proj.conv.weight.dtype
        batch_size = latents.shape[0]
        if guidance_scale > 1.0:
            hidden_states = torch.cat(
                [
                    torch.cat([latents, latents], 0),
                    torch.cat([incontext_latents, incontext_latents], 0),
                    torch.cat([torch.zeros_like(condition), condition], 0),
                ],
                dim=2,
            )
            velocity = self.dit(hidden_states.to(dtype), t.expand(2 * batch_size)).float()
            unconditional, conditional = velocity.chunk(2, dim=0)
            return unconditional + guidance_scale * (conditional - unconditional)
        hidden_states = torch.cat([latents, incontext_latents, condition], dim=2)
        return self.dit(hidden_states.to(dtype), t.expand(batch_size)).float()

    @torch.no_grad()
    def solve_flow(
        self,
        noise: torch.Tensor,
        condition: torch.Tensor,
        num_steps: int,
        guidance_scale: float,
        incontext_latents: torch.Tensor | None = None,
        incontext_length: int = 0,
        progress_bar=None,
    ) -> torch.Tensor:
        """
        Fixed-step Euler integration of the flow from `noise` (t = 0) to latents (t = 1).

        Args:
            noise (`torch.Tensor` of shape `(B, T, latent_dim)`): initial state.
            condition (`torch.Tensor` of shape `(B, T, hidden_size)`): DiT condition, already masked.
            num_steps (`int`): number of Euler steps.
            guidance_scale (`float`): CFG scale; `<= 1` disables CFG (the unconditional branch uses a zero condition).
            incontext_latents (`torch.Tensor` of shape `(B, T, latent_dim)`, *optional*): known latents, zero outside
                the first `incontext_length` frames (defaults to zeros).
            incontext_length (`int`): number of in-context prefix frames; at every step they are re-noised to the
                current flow time, and they are restored exactly at the end.
        """
        if num_steps < 1:
            raise ValueError(f"`num_steps` must be >= 1, got {num_steps}.")
        noise = noise.float()
        condition = condition.float()
        if incontext_latents is None:
            incontext_latents = torch.zeros_like(noise)
        incontext_latents = incontext_latents.float()
        sigma_min = self.config.sigma_min
        t_span = torch.linspace(0, 1, num_steps + 1, device=noise.device)
        t, dt = t_span[0], t_span[1] - t_span[0]
        latents = noise.clone()
        for step in range(1, num_steps + 1):
            if incontext_length > 0:
                latents[:, :incontext_length] = (1 - (1 - sigma_min) * t) * noise[:, :incontext_length] + (
                    t * incontext_latents[:, :incontext_length]
                )
            velocity = self.velocity(latents, incontext_latents, condition, t, guidance_scale)
            latents = latents + dt * velocity
            t = t + dt
            if step < num_steps:
                dt = t_span[step + 1] - t
            if progress_bar is not None:
                progress_bar.update(1)
        if incontext_length > 0:
            latents[:, :incontext_length] = incontext_latents[:, :incontext_length]
        return latents

    # ---- full decode --------------------------------------------------------------------------------------------------

    def window_starts(self, num_frames: int) -> list[int]:
        """
        Start frames of the decoding windows for `num_frames` latent frames: one window if it fits, otherwise windows
        of `decode_window_frames` every `decode_window_frames - decode_overlap_frames` frames, the last one cut at
        the end of the sequence (it is always longer than the overlap, so every window generates new frames).
        """
        window = self.config.decode_window_frames
        hop = window - self.config.decode_overlap_frames
        starts = [0]
        while starts[-1] + window < num_frames:
            starts.append(starts[-1] + hop)
        return starts

    @staticmethod
    def _prefix_lengths(mask: torch.Tensor, shape, name: str) -> torch.Tensor:
        if tuple(mask.shape) != tuple(shape):
            raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {tuple(mask.shape)}.")
        mask = mask.bool()
        lengths = mask.sum(-1)
        positions = torch.arange(mask.shape[-1], device=mask.device)
        if not torch.equal(mask, positions[None] < lengths[:, None]) or bool((lengths == 0).any()):
            raise ValueError(f"Every row of `{name}` must be a non-empty prefix of `True` values.")
        return lengths.cpu()

    def _decode_clip_by_clip(
        self,
        features,
        reasoning,
        lengths,
        reasoning_lengths,
        num_steps,
        guidance_scale,
        generator,
        noise,
        tile_short_inputs,
        show_progress,
        return_dict,
    ):
        config = self.config
        batch_size, max_frames = features.shape[:2]
        max_latent_frames = 2 * max_frames
        max_generated = (
            config.decode_window_frames
            if (tile_short_inputs and max_latent_frames < config.decode_window_frames)
            else max_latent_frames
        )
        if noise is not None and tuple(noise.shape) != (batch_size, max_generated, config.latent_dim):
            raise ValueError(
                f"`noise` must have shape {(batch_size, max_generated, config.latent_dim)}, got {tuple(noise.shape)}."
            )
        audio_values = latents = None
        for i in range(batch_size):
            length = int(lengths[i])
            clip_reasoning = None
            if reasoning is not None:
                reasoning_length = reasoning.shape[1] if reasoning_lengths is None else int(reasoning_lengths[i])
                clip_reasoning = reasoning[i : i + 1, :reasoning_length]
            clip_noise = None
            if noise is not None:
                generated = (
                    config.decode_window_frames
                    if (tile_short_inputs and 2 * length < config.decode_window_frames)
                    else 2 * length
                )
                clip_noise = noise[i : i + 1, :generated]
            output = self.forward(
                features[i : i + 1, :length],
                clip_reasoning,
                num_steps=num_steps,
                guidance_scale=guidance_scale,
                generator=generator,
                noise=clip_noise,
                tile_short_inputs=tile_short_inputs,
                show_progress=show_progress,
            )
            if audio_values is None:
                audio_values = output.audio_values.new_zeros(
                    batch_size, output.audio_values.shape[1], max_latent_frames * config.hop_length
                )
                latents = output.latents.new_zeros(batch_size, max_latent_frames, config.latent_dim)
            audio_values[i, :, : output.audio_values.shape[-1]] = output.audio_values[0]
            latents[i, : output.latents.shape[1]] = output.latents[0]
        if not return_dict:
            return audio_values, latents
        return ReasoningCodecDecoderOutput(audio_values=audio_values, latents=latents)

    @torch.no_grad()
    def forward(
        self,
        reconstruction_embeddings: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...],
        reasoning_embeddings: torch.Tensor | None = None,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        tile_short_inputs: bool | None = None,
        show_progress: bool | None = None,
        padding_mask: torch.Tensor | None = None,
        reasoning_padding_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> ReasoningCodecDecoderOutput | tuple[torch.Tensor, torch.Tensor]:
        r"""
        Decode quantized reconstruction features to a waveform.

        Args:
            reconstruction_embeddings (`torch.FloatTensor` of shape `(batch_size, T_c, hidden_size)`, or a list of such):
                Sum of the phone, semantic and acoustic RVQ look-ups at 12.5 Hz (a list/tuple is summed).
            reasoning_embeddings (`torch.FloatTensor` of shape `(batch_size, T_r, hidden_size)`, *optional*):
                `reason_adaptor(reasoning RVQ look-up)` at 5 Hz; added after nearest x2.5 up-sampling.
            num_steps (`int`, *optional*): Euler steps, defaults to `config.num_inference_steps`.
            guidance_scale (`float`, *optional*): CFG scale, defaults to `config.guidance_scale`; `<= 1` runs the
                conditional branch only.
            generator (`torch.Generator`, *optional*): source of the initial noise.
            noise (`torch.FloatTensor` of shape `(batch_size, T_gen, latent_dim)`, *optional*): the initial noise
                itself (overrides `generator`); `T_gen = 2 * T_c`, or `decode_window_frames` when a short input is tiled.
            tile_short_inputs (`bool`, *optional*): see [`ReasoningCodecDecoderConfig`]; defaults to the config.
            show_progress (`bool`, *optional*): progress bar over windows x steps; by default shown only when more
                than one window is decoded.
            padding_mask (`torch.BoolTensor` of shape `(batch_size, T_c)`, *optional*): `True` for the code frames
                that belong to each clip (a prefix of every row). Clips of different lengths are then decoded one by
                one, each exactly as if it were alone (with `noise`, clip `i` uses `noise[i, :its T_gen]`; with a
                `generator`, the clips draw their noise in batch order), and the waveform is zero after each clip's
                `2 * length * hop_length` samples; the latents are zero after each clip's `2 * length` frames.
            reasoning_padding_mask (`torch.BoolTensor` of shape `(batch_size, T_r)`, *optional*): the same for the
                reasoning frames (only used together with `padding_mask`).
            return_dict (`bool`, *optional*, defaults to `True`): return a [`ReasoningCodecDecoderOutput`].
        """
        config = self.config
        num_steps = config.num_inference_steps if num_steps is None else int(num_steps)
        guidance_scale = config.guidance_scale if guidance_scale is None else float(guidance_scale)
        tile_short_inputs = config.tile_short_inputs if tile_short_inputs is None else tile_short_inputs
        if num_steps < 1:
            raise ValueError(f"`num_steps` must be >= 1, got {num_steps}.")
        if not math.isfinite(guidance_scale):
            raise ValueError(f"`guidance_scale` must be finite, got {guidance_scale}.")

        if padding_mask is not None:
            features = self._check_embeddings(reconstruction_embeddings, reasoning_embeddings)
            lengths = self._prefix_lengths(padding_mask, features.shape[:2], "padding_mask")
            if bool((lengths < features.shape[1]).any()):
                reasoning_lengths = None
                if reasoning_embeddings is not None and reasoning_padding_mask is not None:
                    reasoning_lengths = self._prefix_lengths(
                        reasoning_padding_mask, reasoning_embeddings.shape[:2], "reasoning_padding_mask"
                    )
                return self._decode_clip_by_clip(
                    features,
                    reasoning_embeddings,
                    lengths,
                    reasoning_lengths,
                    num_steps,
                    guidance_scale,
                    generator,
                    noise,
                    tile_short_inputs,
                    show_progress,
                    return_dict,
                )

        condition = self.compute_condition(reconstruction_embeddings, reasoning_embeddings).float()
        batch_size, num_frames, _ = condition.shape
        window = config.decode_window_frames
        device = condition.device

        generated_frames = num_frames
        if num_frames < window and tile_short_inputs:
            repeats = math.ceil(window / num_frames)
            condition = condition.repeat(1, repeats, 1)[:, :window]
            generated_frames = window

        noise_shape = (batch_size, generated_frames, config.latent_dim)
        if noise is None:
            noise_device = generator.device if generator is not None else device
            noise = torch.randn(noise_shape, generator=generator, device=noise_device, dtype=torch.float32)
        elif tuple(noise.shape) != noise_shape:
            raise ValueError(f"`noise` must have shape {noise_shape}, got {tuple(noise.shape)}.")
        noise = noise.to(device=device, dtype=torch.float32)

        starts = self.window_starts(generated_frames)
        if show_progress is None:
            show_progress = len(starts) > 1
        progress_bar = hf_logging.tqdm(
            total=len(starts) * num_steps, desc="ReasoningCodec decode", unit="step", disable=not show_progress
        )

        hop_length = config.hop_length
        context = config.decode_context_frames
        latents = torch.zeros(noise_shape, device=device, dtype=torch.float32)
        waveform = None
        previous_start, previous_latents = None, None
        for start in starts:
            length = min(window, generated_frames - start)
            latent_mask = torch.full((batch_size, length), 2, dtype=torch.long, device=device)
            incontext_latents = torch.zeros(batch_size, length, config.latent_dim, device=device)
            incontext_length = 0
            if previous_latents is not None and context > 0:
                offset = start - previous_start
                incontext_length = context
                incontext_latents[:, :context] = previous_latents[:, offset : offset + context]
                latent_mask[:, :context] = 1
            window_condition = self.mask_condition(condition[:, start : start + length], latent_mask)
            window_latents = self.solve_flow(
                noise[:, start : start + length],
                window_condition,
                num_steps,
                guidance_scale,
                incontext_latents=incontext_latents,
                incontext_length=incontext_length,
                progress_bar=progress_bar,
            )
            latents[:, start : start + length] = window_latents
            sq_dtype = self.sq_codec.decoder.input_conv.weight.dtype
            window_audio = self.sq_codec.decode(window_latents.transpose(1, 2).to(sq_dtype)).float()
            # (a non-causal SQ-codec with odd strides yields a few extra samples: keep hop_length per latent frame)
            window_audio = window_audio[..., : length * hop_length]
            if waveform is None:
                waveform = torch.zeros(batch_size, window_audio.shape[1], generated_frames * hop_length, device=device)
                waveform[..., : window_audio.shape[-1]] = window_audio
            else:
                overlap_start = start * hop_length
                overlap_end = (previous_start + window) * hop_length
                overlap = overlap_end - overlap_start
                fade_in = torch.linspace(0, 1, overlap, device=device, dtype=torch.float64).float()
                waveform[..., overlap_start:overlap_end] = (
                    waveform[..., overlap_start:overlap_end] * (1 - fade_in) + window_audio[..., :overlap] * fade_in
                )
                waveform[..., overlap_end : overlap_start + window_audio.shape[-1]] = window_audio[..., overlap:]
            previous_start, previous_latents = start, window_latents
        progress_bar.close()

        audio_values = waveform[..., : num_frames * hop_length]
        latents = latents[:, :num_frames]
        if not return_dict:
            return audio_values, latents
        return ReasoningCodecDecoderOutput(audio_values=audio_values, latents=latents)


def init_reasoning_codec_decoder_weights(module: nn.Module, std: float = 0.02) -> bool:
    """
    Initialise the decoder-specific parameters of `module` (for a `PreTrainedModel._init_weights` that wraps this
    decoder). Returns `True` if `module` was handled here, `False` if the caller should initialise it itself.
    """
    from transformers import initialization as init

    if isinstance(module, ReasoningCodecDecoder):
        init.normal_(module.unconditional_embedding, mean=0.0, std=1.0)
    elif isinstance(module, ReasoningCodecDiTLayer):
        init.normal_(module.scale_shift_table, mean=0.0, std=module.scale_shift_table.shape[-1] ** -0.5)
    elif isinstance(module, ReasoningCodecDiT):
        init.normal_(module.final_scale_shift_table, mean=0.0, std=module.hidden_size**-0.5)
    elif isinstance(module, nn.PReLU):
        init.constant_(module.weight, PRELU_INIT_SLOPE)
    elif isinstance(module, (ReasoningCodecSQConv1d, ReasoningCodecSQConvTranspose1d)):
        # The SQ-codec is a deep PReLU conv stack without normalisation. Neither a small-std init nor PyTorch's default
        # (Kaiming-uniform with a=sqrt(5) and random biases) lets a signal through it: its output starts independent
        # of its input and training settles on the average spectrum. He init for the PReLUs' initial slope, zero
        # biases and small residual branches (`init_gain`) keep the signal's scale through every stage.
        if isinstance(module, ReasoningCodecSQConvTranspose1d):
            # Each output sample of a transposed convolution sums in_channels * kernel_size / stride inputs.
            fan_in = module.weight.shape[0] * module.weight.shape[2] / module.stride[0]
        else:
            fan_in = module.weight.shape[1] * module.weight.shape[2]
        gain = math.sqrt(2.0 / (1.0 + PRELU_INIT_SLOPE**2)) * module.init_gain
        init.normal_(module.weight, mean=0.0, std=gain / math.sqrt(fan_in))
        if module.bias is not None:
            init.zeros_(module.bias)
    else:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Conversion of the original checkpoints
# ---------------------------------------------------------------------------------------------------------------------

#: Prefixes of the decode-side keys in the original `ReasoningCodec.checkpoint` (`AudioDiffusion1D` state dict).
ORIGINAL_CODEC_DECODER_PREFIXES = ("cond_feature_emb.", "zero_cond_embedding1", "cfm_wrapper.")


def select_decoder_keys(codec_state_dict: dict) -> dict:
    """The subset of an original `AudioDiffusion1D` state dict that [`convert_decoder_state_dict`] converts."""
    return {k: v for k, v in codec_state_dict.items() if k.startswith(ORIGINAL_CODEC_DECODER_PREFIXES)}


def _fold_weight_norm(state_dict: dict, prefix: str, used: set) -> torch.Tensor:
    """Legacy `weight_g`/`weight_v` (dim 0) -> plain weight, computed exactly as `torch.nn.utils.weight_norm` does."""
    g, v = state_dict[prefix + "weight_g"], state_dict[prefix + "weight_v"]
    used.update((prefix + "weight_g", prefix + "weight_v"))
    return torch._weight_norm(v.float(), g.float(), 0)


def _sq_codec_structure(sq_state_dict: dict) -> dict:
    """Layer indices of an original `ScalarModel` state dict, read from the keys that characterise each layer type."""
    num_blocks = 0
    while f"decoder.{num_blocks + 1}.up_conv.layer.weight_v" in sq_state_dict:
        num_blocks += 1
    if num_blocks == 0:
        raise KeyError("Missing original SQ-codec key: decoder.1.up_conv.layer.weight_v")
    has_post = f"decoder.{num_blocks + 1}.activation.weight" in sq_state_dict
    has_pre = "encoder.1.activation.weight" in sq_state_dict
    return {
        "num_blocks": num_blocks,
        "has_post": has_post,
        "has_pre": has_pre,
        "decoder_output": num_blocks + 1 + int(has_post),
        "encoder_first_block": 2 if has_pre else 1,
    }


def _sq_codec_key_map(sq_state_dict: dict) -> tuple[dict, set]:
    """Map an original `ScalarModel` state dict (`encoder.<i>.*`, `decoder.<i>.*`) to `sq_codec.*` names."""
    converted, used = {}, set()

    def take(original: str, new: str):
        converted[new] = sq_state_dict[original].float()
        used.add(original)

    def conv(original_prefix: str, new_prefix: str, weight_norm: bool = True):
        if weight_norm:
            converted[new_prefix + "weight"] = _fold_weight_norm(sq_state_dict, original_prefix, used)
        else:
            take(original_prefix + "weight", new_prefix + "weight")
        take(original_prefix + "bias", new_prefix + "bias")

    def residual_units(original_prefix: str, new_prefix: str):
        for j in range(len(RESIDUAL_DILATIONS)):
            conv(f"{original_prefix}convs.{j}.conv1.", f"{new_prefix}residual_units.{j}.conv1.")
            conv(f"{original_prefix}convs.{j}.conv2.", f"{new_prefix}residual_units.{j}.conv2.")
            take(f"{original_prefix}convs.{j}.activation1.weight", f"{new_prefix}residual_units.{j}.act1.weight")
            take(f"{original_prefix}convs.{j}.activation2.weight", f"{new_prefix}residual_units.{j}.act2.weight")

    structure = _sq_codec_structure(sq_state_dict)
    num_blocks = structure["num_blocks"]

    # decoder: [input conv, L blocks, (post-processor), output conv]
    conv("decoder.0.", "sq_codec.decoder.input_conv.")
    for i in range(num_blocks):
        conv(f"decoder.{i + 1}.up_conv.layer.", f"sq_codec.decoder.blocks.{i}.upsample.")
        residual_units(f"decoder.{i + 1}.", f"sq_codec.decoder.blocks.{i}.")
    if structure["has_post"]:
        conv(f"decoder.{num_blocks + 1}.conv.", "sq_codec.decoder.post_conv.", weight_norm=False)
        take(f"decoder.{num_blocks + 1}.activation.weight", "sq_codec.decoder.post_act.weight")
    conv(f"decoder.{structure['decoder_output']}.", "sq_codec.decoder.output_conv.")

    # encoder: [input conv, (pre-processor), L blocks, output conv]
    first_block = structure["encoder_first_block"]
    conv("encoder.0.", "sq_codec.encoder.input_conv.")
    if structure["has_pre"]:
        conv("encoder.1.conv.", "sq_codec.encoder.pre_conv.", weight_norm=False)
        take("encoder.1.activation.weight", "sq_codec.encoder.pre_act.weight")
    shared_act = None
    for i, index in enumerate(range(first_block, first_block + num_blocks)):
        residual_units(f"encoder.{index}.", f"sq_codec.encoder.blocks.{i}.")
        conv(f"encoder.{index}.down_conv.layer.", f"sq_codec.encoder.blocks.{i}.downsample.")
        key = f"encoder.{index}.down_conv.activation.weight"
        used.add(key)
        if shared_act is None:
            shared_act = sq_state_dict[key].float()
        elif not shared_act.is_meta and not torch.equal(shared_act, sq_state_dict[key].float()):
            raise ValueError(
                f"The SQ-codec encoder down-sampling PReLU is one shared module, but {key} differs from the first copy."
            )
    if shared_act is not None:
        converted["sq_codec.encoder.downsample_act.weight"] = shared_act
    conv(f"encoder.{first_block + num_blocks}.", "sq_codec.encoder.output_conv.")
    return converted, used


def _dit_key_map(codec_state_dict: dict) -> tuple[dict, set]:
    converted, used = {}, set()
    prefix = "cfm_wrapper.estimator."

    def take(original: str, new: str):
        converted[new] = codec_state_dict[prefix + original].float()
        used.add(prefix + original)

    def linear(original: str, new: str):
        take(original + ".weight", new + ".weight")
        take(original + ".bias", new + ".bias")

    linear("proj_in.ffn_1", "dit.input_proj.conv")
    linear("proj_in.ffn_2", "dit.input_proj.linear")
    linear("proj_out.ffn_1", "dit.output_proj.conv")
    linear("proj_out.ffn_2", "dit.output_proj.linear")
    linear("adaln_single.emb.timestep_embedder.linear_1", "dit.time_embedding.linear_1")
    linear("adaln_single.emb.timestep_embedder.linear_2", "dit.time_embedding.linear_2")
    linear("adaln_single.linear", "dit.adaln_proj")
    take("scale_shift_table", "dit.final_scale_shift_table")
    layer_ids = sorted(
        {
            int(m.group(1))
            for k in codec_state_dict
            if (m := re.match(re.escape(prefix) + r"transformer_blocks\.(\d+)\.", k))
        }
    )
    for i in layer_ids:
        block = f"transformer_blocks.{i}."
        new = f"dit.layers.{i}."
        take(block + "scale_shift_table", new + "scale_shift_table")
        for original, name in (("to_q", "q_proj"), ("to_k", "k_proj"), ("to_v", "v_proj"), ("to_out.0", "o_proj")):
            take(block + f"attn1.{original}.weight", new + f"self_attn.{name}.weight")
            original_bias = prefix + block + f"attn1.{original}.bias"
            if original_bias in codec_state_dict:
                take(block + f"attn1.{original}.bias", new + f"self_attn.{name}.bias")
        linear(block + "ff.net.0.proj", new + "mlp.fc1")
        linear(block + "ff.net.2", new + "mlp.fc2")

    # The sinusoidal position table is a recomputable buffer: check it, do not store it.
    pe_key = prefix + "pos_embed.pe"
    pe = codec_state_dict[pe_key]
    used.add(pe_key)
    if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[2] != converted["dit.adaln_proj.weight"].shape[1]:
        raise ValueError(f"{pe_key} has an unexpected shape {tuple(pe.shape)}.")
    if not pe.is_meta:
        expected = sinusoidal_position_table(pe.shape[1], pe.shape[2])
        max_diff = (pe.float() - expected).abs().max().item()
        # Float32 rounds the angle `position * frequency` (up to `length`) before `sin`/`cos`, so two correct
        # tables built with a different operation order differ by a few ulps of the largest angle. A wrong
        # table (other base, swapped sin/cos) differs by order 1.
        tolerance = 1e-5 + 8 * torch.finfo(torch.float32).eps * pe.shape[1]
        if max_diff > tolerance:
            raise ValueError(
                f"{pe_key} differs from the sinusoidal position table by {max_diff:.3e} (tolerance {tolerance:.1e})."
            )
    return converted, used


def convert_decoder_state_dict(codec_state_dict: dict, sq_codec_state_dict: dict) -> dict:
    """
    Convert the original decode-side weights to [`ReasoningCodecDecoder`] parameter names.

    Args:
        codec_state_dict (`dict`): the decode-side entries of the original `AudioDiffusion1D` state dict
            (`ReasoningCodec.checkpoint['model']`): exactly the keys starting with `cond_feature_emb.`,
            `zero_cond_embedding1` and `cfm_wrapper.` (use [`select_decoder_keys`] on a full state dict).
        sq_codec_state_dict (`dict`): `sqcodec.pth['codec_model']`, the `ScalarModel` state dict (`encoder.*`,
            `decoder.*`, legacy `weight_g`/`weight_v`).

    Returns:
        `dict`: float32 tensors named as in `ReasoningCodecDecoder.state_dict()`. Weight norm is folded with
        `torch._weight_norm`, i.e. bit-identical to the weight the reference computes at every forward. The DiT
        sinusoidal table `pos_embed.pe` is checked against its formula and dropped (recomputed at run time).

    Raises:
        `KeyError`: naming the unknown original keys (not consumed by the mapping) or the missing expected keys.
        `ValueError`: if a recomputable buffer or the shared encoder PReLU is inconsistent.
    """
    unknown = sorted(k for k in codec_state_dict if not k.startswith(ORIGINAL_CODEC_DECODER_PREFIXES))
    if unknown:
        raise KeyError(f"Unknown keys for the ReasoningCodec decoder (not decode-side): {unknown}")
    converted, used_codec = {}, set()
    try:
        for original, new in (
            ("cond_feature_emb.weight", "condition_proj.weight"),
            ("cond_feature_emb.bias", "condition_proj.bias"),
            ("zero_cond_embedding1", "unconditional_embedding"),
        ):
            converted[new] = codec_state_dict[original].float()
            used_codec.add(original)
        dit, used = _dit_key_map(codec_state_dict)
        converted.update(dit)
        used_codec |= used
    except KeyError as error:
        raise KeyError(f"Missing original decoder key: {error.args[0]}") from None
    unused = sorted(set(codec_state_dict) - used_codec)
    if unused:
        raise KeyError(f"Unknown keys in the decode-side codec state dict: {unused}")

    try:
        sq, used_sq = _sq_codec_key_map(sq_codec_state_dict)
    except KeyError as error:
        raise KeyError(f"Missing original SQ-codec key: {error.args[0]}") from None
    unused = sorted(set(sq_codec_state_dict) - used_sq)
    if unused:
        raise KeyError(f"Unknown keys in the SQ-codec state dict: {unused}")
    converted.update(sq)
    return converted


def infer_sq_codec_config_from_state_dict(sq_codec_state_dict: dict, hop_length: int | None = 960) -> dict:
    """
    Read the SQ-codec geometry (`sq_*` fields of [`ReasoningCodecDecoderConfig`] plus `latent_dim`) back from the
    tensor shapes of an original `ScalarModel` state dict (the reference's `sqcodec_config.yaml` is not released).
    `sq_sampling_rate` and `sq_causal` cannot be read from shapes and are not returned; the sample repetition
    factor `sq_num_samples` follows from the total `hop_length` (960 samples per latent frame for the released model;
    pass `None` to leave it out). Stride factors are read as `kernel_size // 2` (the reference geometry).
    """

    def shape(key: str) -> tuple[int, ...]:
        return tuple(sq_codec_state_dict[key].shape)

    structure = _sq_codec_structure(sq_codec_state_dict)
    num_blocks = structure["num_blocks"]
    first_v = shape("decoder.0.weight_v")
    up_kernels = [shape(f"decoder.{i + 1}.up_conv.layer.weight_v")[2] for i in range(num_blocks)]
    up_factors = [kernel // 2 for kernel in up_kernels]
    first_block = structure["encoder_first_block"]
    down_kernels = [
        shape(f"encoder.{i}.down_conv.layer.weight_v")[2] for i in range(first_block, first_block + num_blocks)
    ]
    output_v = shape(f"decoder.{structure['decoder_output']}.weight_v")
    init_channel = output_v[1]
    result = {
        "latent_dim": first_v[1],
        "sq_num_bands": output_v[0],
        "sq_init_channel": init_channel,
        "sq_delay_kernel_size": first_v[2],
        "sq_upsample_factors": up_factors,
        "sq_upsample_kernel_sizes": up_kernels,
        "sq_downsample_factors": [k // 2 for k in down_kernels],
        "sq_downsample_kernel_sizes": down_kernels,
        "sq_residual_kernel_size": shape("decoder.1.convs.0.conv1.weight_v")[2],
        "sq_kernel_size": output_v[2],
    }
    if first_v[0] != init_channel * 2**num_blocks:
        raise ValueError("Unexpected SQ-codec channel layout: the first decoder conv is not init_channel * 2**stages.")
    if not structure["has_post"]:
        result["sq_num_samples"] = 1
    elif hop_length is not None:
        result["sq_num_samples"] = hop_length // math.prod(up_factors)
    return result


__all__ = [
    "ReasoningCodecDecoder",
    "ReasoningCodecDecoderOutput",
    "ReasoningCodecDiT",
    "ReasoningCodecSQCodec",
    "convert_decoder_state_dict",
    "infer_sq_codec_config_from_state_dict",
    "init_reasoning_codec_decoder_weights",
    "select_decoder_keys",
]
