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
"""PyTorch ReasoningCodec (UniAudio 2.0 audio tokenizer): encoder side, quantizers and the top-level model."""

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, Wav2Vec2ConformerConfig, WavLMModel
from transformers import initialization as init
from transformers.audio_utils import mel_filter_bank
from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import (
    Wav2Vec2ConformerEncoderLayer,
    Wav2Vec2ConformerRotaryPositionalEmbedding,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import ModelOutput, logging

from .configuration_reasoning_codec import (
    ReasoningCodecConfig,
    ReasoningCodecMusicSSLConfig,
    ReasoningCodecReasoningConfig,
    ReasoningCodecReconstructionConfig,
)
from .modeling_reasoning_codec_decoder import (
    ReasoningCodecDecoder,
    ReasoningCodecDecoderOutput,
    init_reasoning_codec_decoder_weights,
)


logger = logging.get_logger(__name__)

# Modules of the tokenizing path (front ends, frozen encoders, branches and their quantizers): they stay float32 when
# the codec is loaded or cast in half precision, so that the codes do not depend on the dtype. Only the decoder is cast.
FLOAT32_MODULES = [
    "whisper_feature_extractor",
    "whisper_encoder",
    "wavlm_encoder",
    "music_ssl_encoder",
    "reasoning_encoder",
    "reconstruction_encoder",
]
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _weight_dtype(module: nn.Module) -> torch.dtype:
    """Floating dtype of the first floating parameter of `module` (float32 if none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def _keeping_float32(fn):
    """Wrap a `Module._apply` function so that float32 tensors follow its device but are not cast to half precision."""

    def apply(tensor):
        applied = fn(tensor)
        if tensor.dtype == torch.float32 and applied.dtype in _HALF_DTYPES:
            return tensor.to(device=applied.device)
        return applied

    return apply


def _autocast_disabled(device: torch.device):
    """A context that disables autocast on `device` (a no-op for device types without autocast, such as meta)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ReasoningCodecEncoderOutput(ModelOutput):
    r"""
    reasoning_codes (`torch.LongTensor` of shape `(batch_size, num_reasoning_quantizers, reasoning_length)`):
        Reasoning codes at 5 Hz (8 levels of 4096 entries for the released codec).
    reconstruction_codes (`torch.LongTensor` of shape `(batch_size, num_reconstruction_quantizers, reconstruction_length)`):
        Reconstruction codes at 12.5 Hz, in the order phone (1), semantic (1), acoustic (6).
    reasoning_padding_mask (`torch.BoolTensor` of shape `(batch_size, reasoning_length)`):
        `True` for the reasoning frames that belong to each clip (clips shorter than the longest one are padded with
        code 0).
    reconstruction_padding_mask (`torch.BoolTensor` of shape `(batch_size, reconstruction_length)`):
        `True` for the reconstruction frames that belong to each clip.
    """

    reasoning_codes: torch.LongTensor | None = None
    reconstruction_codes: torch.LongTensor | None = None
    reasoning_padding_mask: torch.BoolTensor | None = None
    reconstruction_padding_mask: torch.BoolTensor | None = None


@dataclass
class ReasoningCodecOutput(ModelOutput):
    r"""
    reasoning_codes (`torch.LongTensor` of shape `(batch_size, num_reasoning_quantizers, reasoning_length)`):
        Reasoning codes at 5 Hz.
    reconstruction_codes (`torch.LongTensor` of shape `(batch_size, num_reconstruction_quantizers, reconstruction_length)`):
        Reconstruction codes at 12.5 Hz.
    audio_values (`torch.FloatTensor` of shape `(batch_size, 1, num_samples)`, *optional*):
        Waveform decoded from the reconstruction codes.
    """

    reasoning_codes: torch.LongTensor | None = None
    reconstruction_codes: torch.LongTensor | None = None
    audio_values: torch.FloatTensor | None = None


@dataclass
class ReasoningCodecFrozenFeatures(ModelOutput):
    r"""
    Features of the three frozen encoders, channel-first, as the codec branches consume them.

    whisper (`torch.FloatTensor` of shape `(batch_size, whisper_dim, 2 * latent_length)`):
        Whisper encoder output (50 Hz), cut to the codec length.
    wavlm (`torch.FloatTensor` of shape `(batch_size, wavlm_dim, 2 * latent_length)`):
        Mean of the selected WavLM hidden states (50 Hz).
    music_acoustic (`torch.FloatTensor` of shape `(batch_size, music_dim, latent_length)`):
        Music-SSL "acoustic" hidden state (25 Hz).
    music_semantic (`torch.FloatTensor` of shape `(batch_size, music_dim, latent_length)`):
        Music-SSL "semantic" hidden state (25 Hz).
    whisper_mel (`torch.FloatTensor` of shape `(batch_size, num_mel_bins, 3000)`, *optional*):
        Whisper log-mel input (returned with `return_intermediates=True`).
    waveform_16k (`torch.FloatTensor` of shape `(batch_size, samples_16k)`, *optional*):
        The waveform resampled to 16 kHz (returned with `return_intermediates=True`).
    wavlm_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        WavLM hidden states `(encoder input, layer 1, ...)` of the instantiated layers (with `return_intermediates`).
    """

    whisper: torch.FloatTensor | None = None
    wavlm: torch.FloatTensor | None = None
    music_acoustic: torch.FloatTensor | None = None
    music_semantic: torch.FloatTensor | None = None
    whisper_mel: torch.FloatTensor | None = None
    waveform_16k: torch.FloatTensor | None = None
    wavlm_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ReasoningCodecQuantizerOutput(ModelOutput):
    r"""
    codes (`torch.LongTensor` of shape `(batch_size, length, num_quantizers)`):
        Selected codebook entries, level last.
    quantized (`torch.FloatTensor` of shape `(batch_size, length, hidden_size)`):
        `project_out` of the sum of the selected codebook vectors.
    block_outputs (`tuple(torch.FloatTensor)`, *optional*):
        Reasoning branch only (`return_hidden_states=True`): output of every query-transformer block.
    query_outputs (`torch.FloatTensor`, *optional*):
        Reasoning branch only: the query-token outputs that are quantized (5 Hz).
    loss (`torch.FloatTensor` of shape `()`, *optional*):
        Training mode only: VQ codebook + commitment loss summed over the levels.
    """

    codes: torch.LongTensor | None = None
    quantized: torch.FloatTensor | None = None
    block_outputs: tuple[torch.FloatTensor, ...] | None = None
    query_outputs: torch.FloatTensor | None = None
    loss: torch.FloatTensor | None = None


@dataclass
class ReasoningCodecReconstructionOutput(ModelOutput):
    r"""
    codes (`torch.LongTensor` of shape `(batch_size, length, num_quantizers)`):
        Reconstruction codes, level last, in the order phone, semantic, acoustic.
    quantized (`torch.FloatTensor` of shape `(batch_size, length, hidden_size)`):
        Sum of the three branch RVQ outputs.
    reasoning_condition (`torch.FloatTensor` of shape `(batch_size, length, hidden_size)`, *optional*):
        Adapted and up-sampled reasoning features that condition the FiLM layers.
    fused (`dict[str, torch.FloatTensor]`, *optional*):
        Per-branch projected features before the FiLM.
    modulated (`dict[str, torch.FloatTensor]`, *optional*):
        Per-branch FiLM outputs (RVQ inputs).
    branch_quantized (`dict[str, torch.FloatTensor]`, *optional*):
        Per-branch RVQ outputs.
    loss (`torch.FloatTensor` of shape `()`, *optional*):
        Training mode only: VQ codebook + commitment loss of the three branch RVQs.
    """

    codes: torch.LongTensor | None = None
    quantized: torch.FloatTensor | None = None
    reasoning_condition: torch.FloatTensor | None = None
    fused: dict | None = None
    modulated: dict | None = None
    branch_quantized: dict | None = None
    loss: torch.FloatTensor | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Signal processing helpers (pure torch; no torchaudio)
# ---------------------------------------------------------------------------------------------------------------------


def sinc_resample_kernel(
    orig_freq: int, new_freq: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> tuple[torch.Tensor, int]:
    """
    Hann-windowed sinc interpolation kernel for rational resampling (the same filter design as the `Resample` transform
    the original code used: `lowpass_filter_width` zero crossings, cut-off `rolloff * min(orig, new) / 2`).

    Returns the kernel of shape `(new, 1, 2 * width + orig)` (frequencies reduced by their gcd) and `width`.
    """
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    cutoff = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / cutoff)
    # Offsets (in input samples / orig) of every tap for every output phase, computed in float64.
    taps = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    phases = torch.arange(0, -new, -1)[:, None, None] / new
    t = (phases + taps) * cutoff
    t = t.clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = sinc * window * (cutoff / orig)
    return kernel.to(torch.float32), width


def resample_waveform(
    waveform: torch.Tensor,
    orig_freq: int,
    new_freq: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
    kernel: torch.Tensor | None = None,
) -> torch.Tensor:
    """Resamples the last dimension of `waveform` from `orig_freq` to `new_freq` with a windowed-sinc filter."""
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    if kernel is None:
        kernel, width = sinc_resample_kernel(orig_freq, new_freq, lowpass_filter_width, rolloff)
    else:
        width = (kernel.shape[-1] - orig) // 2
    kernel = kernel.to(device=waveform.device, dtype=waveform.dtype)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target_length = math.ceil(new * length / orig)
    return out[..., :target_length].reshape(*shape[:-1], -1)


def htk_mel_filter_bank(num_frequency_bins: int, num_mel_bins: int, sampling_rate: int) -> torch.Tensor:
    """Triangular HTK-scale mel filters without area normalisation, `(num_frequency_bins, num_mel_bins)`, in float32."""
    all_freqs = torch.linspace(0, sampling_rate // 2, num_frequency_bins)
    mel_min = 2595.0 * math.log10(1.0 + 0.0 / 700.0)
    mel_max = 2595.0 * math.log10(1.0 + (sampling_rate / 2) / 700.0)
    mel_points = torch.linspace(mel_min, mel_max, num_mel_bins + 2)
    freq_points = 700.0 * (10 ** (mel_points / 2595.0) - 1.0)
    freq_diff = freq_points[1:] - freq_points[:-1]
    slopes = freq_points.unsqueeze(0) - all_freqs.unsqueeze(1)
    down_slopes = (-1.0 * slopes[:, :-2]) / freq_diff[:-1]
    up_slopes = slopes[:, 2:] / freq_diff[1:]
    return torch.clamp(torch.min(down_slopes, up_slopes), min=0.0)


class ReasoningCodecWhisperFeatureExtractor(nn.Module):
    """
    Whisper log-mel front end in torch: the 16 kHz waveform is zero-padded or truncated to `chunk_length` seconds, then
    STFT (Hann, `n_fft`, `hop_length`, centred, reflect padding), Slaney mel filters up to 8 kHz, `log10`, a floor at
    `max - 8` per example and `(x + 4) / 4`.
    """

    def __init__(self, config: ReasoningCodecConfig):
        super().__init__()
        self.n_fft = config.whisper_n_fft
        self.hop_length = config.whisper_hop_length
        self.num_samples = config.whisper_num_samples
        self.num_mel_bins = config.whisper_config.num_mel_bins
        self.sampling_rate = config.ssl_sampling_rate
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer("mel_filters", self._mel_filters(), persistent=False)

    def _mel_filters(self) -> torch.Tensor:
        filters = mel_filter_bank(
            num_frequency_bins=1 + self.n_fft // 2,
            num_mel_filters=self.num_mel_bins,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=self.sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        return torch.from_numpy(np.asarray(filters)).to(torch.float32)

    def reset_buffers(self):
        self.window = torch.hann_window(self.n_fft, device=self.window.device)
        self.mel_filters = self._mel_filters().to(self.window.device)

    def forward(self, waveform_16k: torch.Tensor) -> torch.Tensor:
        """`waveform_16k` `(batch, samples)` -> log-mel `(batch, num_mel_bins, num_samples // hop_length)`."""
        waveform = waveform_16k.float()
        if waveform.shape[-1] >= self.num_samples:
            waveform = waveform[..., : self.num_samples]
        else:
            waveform = F.pad(waveform, (0, self.num_samples - waveform.shape[-1]))
        # The front end always runs in float32, whatever the dtype the model was cast to.
        stft = torch.stft(waveform, self.n_fft, self.hop_length, window=self.window.float(), return_complex=True)
        magnitudes = (stft[..., :-1].abs() ** 2).contiguous()
        mel_spec = self.mel_filters.float().T @ magnitudes
        log_spec = torch.clamp(mel_spec, min=1e-10).log10()
        max_val = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, max_val - 8.0)
        return (log_spec + 4.0) / 4.0


# ---------------------------------------------------------------------------------------------------------------------
# Music SSL encoder (MusicFM 25 Hz)
# ---------------------------------------------------------------------------------------------------------------------


class ReasoningCodecMusicMelSpectrogram(nn.Module):
    """Power mel spectrogram in dB (`10 log10(max(x, 1e-10))`), HTK mel scale, centred reflect-padded STFT."""

    def __init__(self, config: ReasoningCodecMusicSSLConfig):
        super().__init__()
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        self.num_mel_bins = config.num_mel_bins
        self.sampling_rate = config.sampling_rate
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer(
            "mel_filters",
            htk_mel_filter_bank(self.n_fft // 2 + 1, self.num_mel_bins, self.sampling_rate),
            persistent=False,
        )

    def reset_buffers(self):
        device = self.window.device
        self.window = torch.hann_window(self.n_fft, device=device)
        self.mel_filters = htk_mel_filter_bank(self.n_fft // 2 + 1, self.num_mel_bins, self.sampling_rate).to(device)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """`waveform` `(batch, samples)` -> `(batch, num_mel_bins, frames)` in dB."""
        stft = torch.stft(
            waveform.float(),
            self.n_fft,
            self.hop_length,
            win_length=self.n_fft,
            window=self.window.float(),
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        power = stft.abs().pow(2.0)
        mel = torch.matmul(power.transpose(-1, -2), self.mel_filters.float()).transpose(-1, -2)
        return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


class ReasoningCodecResidualConv2dBlock(nn.Module):
    """Residual 2-D block: conv-BN-ReLU-conv-BN plus a strided conv-BN shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv3 = nn.Conv2d(in_channels, out_channels, 3, padding=1, stride=stride)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(hidden_states)))))
        shortcut = self.bn3(self.conv3(hidden_states))
        return F.relu(shortcut + out)


class ReasoningCodecMusicSSLEncoder(nn.Module):
    """
    Frozen MusicFM-style music encoder: dB mel (dropping the last frame), fixed standardisation, two residual stride-2
    2-D blocks (100 Hz -> 25 Hz), a linear projection and a rotary Wav2Vec2-Conformer stack (the transformers layers).
    Returns the hidden states selected by `acoustic_layer` and `semantic_layer`.
    """

    def __init__(self, config: ReasoningCodecMusicSSLConfig):
        super().__init__()
        self.config = config
        self.mel = ReasoningCodecMusicMelSpectrogram(config)
        self.blocks = nn.ModuleList(
            [
                ReasoningCodecResidualConv2dBlock(1, config.conv_dim, (2, 2)),
                ReasoningCodecResidualConv2dBlock(config.conv_dim, config.conv_dim, (2, 2)),
            ]
        )
        self.proj = nn.Linear(config.conv_dim * (config.num_mel_bins // 4), config.hidden_size)
        conformer_config = Wav2Vec2ConformerConfig(
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_used_layers,
            num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            hidden_act=config.hidden_act,
            conv_depthwise_kernel_size=config.conv_depthwise_kernel_size,
            layer_norm_eps=config.layer_norm_eps,
            position_embeddings_type="rotary",
            rotary_embedding_base=config.rotary_embedding_base,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            conformer_conv_dropout=0.0,
            layerdrop=0.0,
        )
        conformer_config._attn_implementation = "sdpa"
        self.rotary_embedding = Wav2Vec2ConformerRotaryPositionalEmbedding(conformer_config)
        self.layers = nn.ModuleList(
            [Wav2Vec2ConformerEncoderLayer(conformer_config) for _ in range(config.num_used_layers)]
        )
        # The last hidden state of the original encoder is taken after its final LayerNorm; it is only needed when a
        # selected layer is the last one.
        self.final_layer_norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            if config.num_used_layers == config.num_hidden_layers
            else None
        )

    def compute_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """`waveform` `(batch, samples)` -> standardised mel `(batch, 1, num_mel_bins, frames)`."""
        step = self.config.samples_per_frame
        waveform = waveform[..., : (waveform.shape[-1] // step) * step]
        mel_db = self.mel(waveform)[..., :-1]
        return ((mel_db - self.config.mel_mean) / self.config.mel_std).unsqueeze(1)

    def forward(
        self, waveform: torch.Tensor | None = None, input_features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        `waveform` `(batch, samples)` at 24 kHz, or its standardised mel `input_features` (the output of
        [`~ReasoningCodecMusicSSLEncoder.compute_mel`], `(batch, 1, num_mel_bins, frames)`) -> (acoustic, semantic)
        hidden states, each `(batch, hidden, frames)`.
        """
        if (waveform is None) == (input_features is None):
            raise ValueError("Pass exactly one of `waveform` and `input_features`.")
        if input_features is None:
            input_features = self.compute_mel(waveform)
        hidden_states = input_features.to(self.proj.weight.dtype)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        batch, channels, bands, frames = hidden_states.shape
        hidden_states = hidden_states.permute(0, 3, 1, 2).reshape(batch, frames, channels * bands)
        hidden_states = self.proj(hidden_states)
        position_embeddings = self.rotary_embedding(hidden_states)
        selected = {}
        wanted = {self.config.acoustic_layer, self.config.semantic_layer}
        for index, layer in enumerate(self.layers, start=1):
            hidden_states = layer(hidden_states, relative_position_embeddings=position_embeddings)
            if index in wanted:
                is_last = index == self.config.num_hidden_layers
                selected[index] = self.final_layer_norm(hidden_states) if is_last else hidden_states
        acoustic = selected[self.config.acoustic_layer].transpose(1, 2)
        semantic = selected[self.config.semantic_layer].transpose(1, 2)
        return acoustic, semantic


# ---------------------------------------------------------------------------------------------------------------------
# Residual vector quantizer (inference only: nearest-neighbour search, no EMA / rotation trick)
# ---------------------------------------------------------------------------------------------------------------------


class ReasoningCodecCodebook(nn.Module):
    def __init__(self, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.embed = nn.Parameter(torch.zeros(codebook_size, codebook_dim))

    def encode(self, hidden_states: torch.Tensor) -> torch.LongTensor:
        """Euclidean nearest codebook entry for each vector of `hidden_states` `(..., codebook_dim)`."""
        embed = self.embed.float()
        flat = hidden_states.reshape(-1, hidden_states.shape[-1]).float()
        distances = (
            flat.pow(2).sum(-1, keepdim=True) - 2.0 * flat @ embed.t() + embed.pow(2).sum(-1)[None, :]
        )
        return distances.argmin(dim=-1).reshape(hidden_states.shape[:-1])

    def decode(self, codes: torch.LongTensor) -> torch.Tensor:
        return F.embedding(codes, self.embed)


class ReasoningCodecResidualVectorQuantizer(nn.Module):
    """Residual VQ with input/output projections shared by all levels (`dim -> codebook_dim -> dim`)."""

    def __init__(self, hidden_size: int, codebook_size: int, codebook_dim: int, num_quantizers: int):
        super().__init__()
        self.codebook_size = codebook_size
        self.num_quantizers = num_quantizers
        self.commitment_weight = 0.25
        self.project_in = nn.Linear(hidden_size, codebook_dim)
        self.project_out = nn.Linear(codebook_dim, hidden_size)
        self.layers = nn.ModuleList(
            [ReasoningCodecCodebook(codebook_size, codebook_dim) for _ in range(num_quantizers)]
        )

    def forward(self, hidden_states: torch.Tensor) -> ReasoningCodecQuantizerOutput:
        """
        `hidden_states` `(batch, length, hidden_size)` -> codes `(batch, length, num_quantizers)` and quantized.

        In training mode the quantized features carry straight-through gradients to `hidden_states`, and `loss` is the
        VQ-VAE objective summed over the levels: codebook term `|sg(r) - e|^2` plus commitment term
        `commitment_weight * |r - sg(e)|^2` for each level's residual `r` and chosen entry `e`.
        """
        projected = self.project_in(hidden_states)
        residual = projected
        quantized = torch.zeros_like(residual)
        codes = []
        loss = projected.new_zeros(()) if self.training else None
        for layer in self.layers:
            indices = layer.encode(residual.detach())
            chosen = layer.decode(indices)
            if self.training:
                loss = loss + F.mse_loss(chosen, residual.detach())
                loss = loss + self.commitment_weight * F.mse_loss(residual, chosen.detach())
                chosen = chosen.detach()
            residual = residual - chosen
            quantized = quantized + chosen
            codes.append(indices)
        if self.training:
            quantized = projected + (quantized - projected).detach()
        return ReasoningCodecQuantizerOutput(
            codes=torch.stack(codes, dim=-1), quantized=self.project_out(quantized), loss=loss
        )

    def decode(self, codes: torch.LongTensor) -> torch.Tensor:
        """codes `(batch, length, num_quantizers)` -> `project_out(sum of codebook vectors)` `(batch, length, hidden)`."""
        if codes.shape[-1] != self.num_quantizers:
            raise ValueError(f"Expected {self.num_quantizers} code levels, got {codes.shape[-1]}.")
        quantized = None
        for level, layer in enumerate(self.layers):
            chosen = layer.decode(codes[..., level])
            quantized = chosen if quantized is None else quantized + chosen
        return self.project_out(quantized)


# ---------------------------------------------------------------------------------------------------------------------
# Reasoning branch
# ---------------------------------------------------------------------------------------------------------------------


def _rotate_half(hidden_states: torch.Tensor) -> torch.Tensor:
    first, second = hidden_states.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class ReasoningCodecQueryTransformerBlock(nn.Module):
    """
    Non-causal transformer block of the reasoning branch: no pre-norm, LayerNorm on q and k (per head), partial rotary
    embedding on the first `rotary_dim` channels of each head, LayerScale on both residual branches and a sigmoid-gated
    linear unit feed-forward (value first, gate second).
    """

    def __init__(self, config: ReasoningCodecReasoningConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.q_norm = nn.LayerNorm(config.head_dim, eps=config.qk_norm_eps)
        self.k_norm = nn.LayerNorm(config.head_dim, eps=config.qk_norm_eps)
        self.attention_scale = nn.Parameter(torch.ones(config.hidden_size))
        self.gate_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.feed_forward_scale = nn.Parameter(torch.ones(config.hidden_size))

    @staticmethod
    def _apply_rotary(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        rotary_dim = cos.shape[-1]
        rotated, passthrough = states[..., :rotary_dim], states[..., rotary_dim:]
        rotated = rotated * cos + _rotate_half(rotated) * sin
        return torch.cat((rotated, passthrough), dim=-1)

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        query, key, value = self.qkv_proj(hidden_states).chunk(3, dim=-1)
        query, key, value = (
            t.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2) for t in (query, key, value)
        )
        query = self._apply_rotary(self.q_norm(query).float(), cos, sin).to(value.dtype)
        key = self._apply_rotary(self.k_norm(key).float(), cos, sin).to(value.dtype)
        attention = F.scaled_dot_product_attention(query, key, value)
        attention = attention.transpose(1, 2).reshape(batch, length, -1)
        hidden_states = hidden_states + self.out_proj(attention) * self.attention_scale
        value_part, gate = self.gate_proj(hidden_states).chunk(2, dim=-1)
        feed_forward = self.down_proj(value_part * torch.sigmoid(gate))
        return hidden_states + feed_forward * self.feed_forward_scale


class ReasoningCodecReasoningEncoder(nn.Module):
    """
    Reasoning branch: Whisper 50 -> 25 Hz convolution, concatenation with the music-SSL semantic features (Whisper
    first), linear merge, one learned query token after every `query_interval` frames, the query transformer, the
    query outputs (5 Hz) and their residual VQ.
    """

    def __init__(self, config: ReasoningCodecReasoningConfig, whisper_dim: int, music_dim: int):
        super().__init__()
        self.config = config
        self.whisper_downsample = nn.Conv1d(whisper_dim, whisper_dim, kernel_size=2, stride=2)
        self.merge_proj = nn.Linear(whisper_dim + music_dim, config.hidden_size)
        self.query_token = nn.Parameter(torch.zeros(1, config.hidden_size))
        self.layers = nn.ModuleList(
            [ReasoningCodecQueryTransformerBlock(config) for _ in range(config.num_hidden_layers)]
        )
        self.quantizer = ReasoningCodecResidualVectorQuantizer(
            config.hidden_size, config.codebook_size, config.codebook_dim, config.num_quantizers
        )
        inv_freq = 1.0 / (
            config.rope_theta ** (torch.arange(0, config.rotary_dim, 2).float() / config.rotary_dim)
        )
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def reset_buffers(self):
        config = self.config
        self.inv_freq = 1.0 / (
            config.rope_theta
            ** (torch.arange(0, config.rotary_dim, 2, device=self.inv_freq.device).float() / config.rotary_dim)
        )

    def insert_queries(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, T, D)` -> `(batch, T + T // interval, D)` with the query token after every `interval` frames."""
        batch, length, dim = hidden_states.shape
        interval = self.config.query_interval
        if length % interval != 0:
            raise ValueError(
                f"The 25 Hz sequence length ({length}) must be a multiple of the query interval ({interval})."
            )
        groups = hidden_states.reshape(batch, length // interval, interval, dim)
        queries = self.query_token.to(hidden_states.dtype).expand(batch, length // interval, dim).unsqueeze(2)
        return torch.cat([groups, queries], dim=2).reshape(batch, -1, dim)

    def forward(
        self, whisper_features: torch.Tensor, music_semantic: torch.Tensor, return_hidden_states: bool = False
    ) -> ReasoningCodecQuantizerOutput:
        """
        Args:
            whisper_features (`torch.FloatTensor` of shape `(batch, whisper_dim, T50)`): Whisper features (50 Hz).
            music_semantic (`torch.FloatTensor` of shape `(batch, music_dim, T25)`): music-SSL semantic layer.
        """
        dtype = self.whisper_downsample.weight.dtype
        whisper_25hz = self.whisper_downsample(whisper_features.to(dtype)).transpose(1, 2)
        music = music_semantic.to(dtype).transpose(1, 2)
        length = min(whisper_25hz.shape[1], music.shape[1])
        merged = self.merge_proj(torch.cat([whisper_25hz[:, :length], music[:, :length]], dim=-1))
        hidden_states = self.insert_queries(merged)
        positions = torch.arange(hidden_states.shape[1], device=hidden_states.device, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq.float()[None, :]
        freqs = torch.cat([freqs, freqs], dim=-1)
        cos, sin = freqs.cos(), freqs.sin()
        block_outputs = []
        for layer in self.layers:
            hidden_states = layer(hidden_states, cos, sin)
            block_outputs.append(hidden_states)
        interval = self.config.query_interval
        query_outputs = hidden_states[:, interval :: interval + 1]
        output = self.quantizer(query_outputs)
        if not return_hidden_states:
            return output
        return ReasoningCodecQuantizerOutput(
            codes=output.codes,
            quantized=output.quantized,
            block_outputs=tuple(block_outputs),
            query_outputs=query_outputs,
            loss=output.loss,
        )


# ---------------------------------------------------------------------------------------------------------------------
# Reconstruction branches
# ---------------------------------------------------------------------------------------------------------------------


def upsample_reasoning(features: torch.Tensor, length: int, frame_ratio: tuple[int, int] = (2, 5)) -> torch.Tensor:
    """
    Nearest-neighbour up-sampling along time of `(batch, T, D)` reasoning features to `length` frames: output frame
    `t` takes input frame `floor(t * num / den)` (x2.5 for 5 Hz -> 12.5 Hz), clamped to the last input frame.
    """
    num, den = frame_ratio
    index = (torch.arange(length, device=features.device) * num) // den
    index = index.clamp(max=features.shape[1] - 1)
    return features.index_select(1, index)


class ReasoningCodecReconstructionEncoder(nn.Module):
    """
    The three FiLM-modulated reconstruction branches (phone / semantic / acoustic) and their residual VQs. The FiLM is
    deterministic: `(1 + gamma * tanh(delta)) * x + beta` with `(delta, beta)` predicted from the reasoning features
    (the original's random zero-condition draw at inference is not reproduced).
    """

    def __init__(
        self, config: ReasoningCodecReconstructionConfig, whisper_dim: int, wavlm_dim: int, music_dim: int
    ):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.whisper_downsample = nn.Conv1d(whisper_dim, whisper_dim, kernel_size=4, stride=4)
        self.wavlm_downsample = nn.Conv1d(wavlm_dim, wavlm_dim, kernel_size=4, stride=4)
        self.semantic_downsample = nn.Conv1d(music_dim, music_dim, kernel_size=2, stride=2)
        self.acoustic_downsample = nn.Conv1d(music_dim, music_dim, kernel_size=2, stride=2)
        self.phone_proj = nn.Linear(wavlm_dim, dim)
        self.semantic_proj = nn.Linear(music_dim, dim)
        self.acoustic_proj = nn.Linear(music_dim + whisper_dim, dim)
        self.phone_film = nn.Linear(dim, 2 * dim)
        self.semantic_film = nn.Linear(dim, 2 * dim)
        self.acoustic_film = nn.Linear(dim, 2 * dim)
        self.reasoning_adaptor = nn.Linear(dim, dim)
        self.phone_quantizer = ReasoningCodecResidualVectorQuantizer(
            dim, config.codebook_size, config.codebook_dim, config.num_phone_quantizers
        )
        self.semantic_quantizer = ReasoningCodecResidualVectorQuantizer(
            dim, config.codebook_size, config.codebook_dim, config.num_semantic_quantizers
        )
        self.acoustic_quantizer = ReasoningCodecResidualVectorQuantizer(
            dim, config.codebook_size, config.codebook_dim, config.num_acoustic_quantizers
        )

    def film(self, head: nn.Linear, condition: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        delta_gamma, beta = head(condition).chunk(2, dim=-1)
        gamma = 1.0 + self.config.film_gamma * torch.tanh(delta_gamma)
        return gamma * features + beta

    def forward(
        self,
        whisper_features: torch.Tensor,
        wavlm_features: torch.Tensor,
        music_acoustic: torch.Tensor,
        music_semantic: torch.Tensor,
        reasoning_quantized: torch.Tensor,
        return_intermediates: bool = False,
    ) -> ReasoningCodecReconstructionOutput:
        """
        All features are channel-first `(batch, C, T)`; `reasoning_quantized` is `(batch, T5, D)`. Returns codes
        `(batch, T12.5, num_quantizers)` (phone, semantic, acoustic levels) and the summed quantized features.
        """
        dtype = self.whisper_downsample.weight.dtype
        whisper = self.whisper_downsample(whisper_features.to(dtype))
        wavlm = self.wavlm_downsample(wavlm_features.to(dtype))
        semantic = self.semantic_downsample(music_semantic.to(dtype))
        acoustic = self.acoustic_downsample(music_acoustic.to(dtype))
        reasoning_quantized = reasoning_quantized.to(dtype)

        phone_fused = self.phone_proj(wavlm.transpose(1, 2))
        semantic_fused = self.semantic_proj(semantic.transpose(1, 2))
        length = min(acoustic.shape[-1], whisper.shape[-1])
        acoustic_concat = torch.cat([acoustic[..., :length], whisper[..., :length]], dim=1).transpose(1, 2)
        acoustic_fused = self.acoustic_proj(acoustic_concat)

        reasoning_feature = self.reasoning_adaptor(reasoning_quantized)
        condition = upsample_reasoning(reasoning_feature, int(reasoning_feature.shape[1] * 5 // 2))

        def branch(head, fused, quantizer):
            cond = condition
            if cond.shape[1] != fused.shape[1]:
                raise ValueError(
                    f"Reasoning condition length {cond.shape[1]} does not match the branch length {fused.shape[1]}."
                )
            modulated = self.film(head, cond, fused)
            return modulated, quantizer(modulated)

        phone_in, phone = branch(self.phone_film, phone_fused, self.phone_quantizer)
        semantic_in, semantic_q = branch(self.semantic_film, semantic_fused, self.semantic_quantizer)
        acoustic_in, acoustic_q = branch(self.acoustic_film, acoustic_fused, self.acoustic_quantizer)
        codes = torch.cat([phone.codes, semantic_q.codes, acoustic_q.codes], dim=-1)
        quantized = phone.quantized + semantic_q.quantized + acoustic_q.quantized
        loss = phone.loss + semantic_q.loss + acoustic_q.loss if self.training else None
        if not return_intermediates:
            return ReasoningCodecReconstructionOutput(codes=codes, quantized=quantized, loss=loss)
        return ReasoningCodecReconstructionOutput(
            codes=codes,
            quantized=quantized,
            loss=loss,
            reasoning_condition=condition,
            fused={"phone": phone_fused, "semantic": semantic_fused, "acoustic": acoustic_fused},
            modulated={"phone": phone_in, "semantic": semantic_in, "acoustic": acoustic_in},
            branch_quantized={
                "phone": phone.quantized,
                "semantic": semantic_q.quantized,
                "acoustic": acoustic_q.quantized,
            },
        )

    def lookup(self, codes: torch.LongTensor) -> torch.Tensor:
        """Reconstruction codes `(batch, num_quantizers, T)` -> summed quantized features `(batch, T, D)`."""
        config = self.config
        codes = codes.transpose(1, 2)
        n_phone, n_semantic = config.num_phone_quantizers, config.num_semantic_quantizers
        phone = self.phone_quantizer.decode(codes[..., :n_phone])
        semantic = self.semantic_quantizer.decode(codes[..., n_phone : n_phone + n_semantic])
        acoustic = self.acoustic_quantizer.decode(codes[..., n_phone + n_semantic :])
        return phone + semantic + acoustic


# ---------------------------------------------------------------------------------------------------------------------
# Top-level model
# ---------------------------------------------------------------------------------------------------------------------


class ReasoningCodecPreTrainedModel(PreTrainedModel):
    config: ReasoningCodecConfig
    config_class = ReasoningCodecConfig
    base_model_prefix = "reasoning_codec"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = False
    _no_split_modules = [
        "WhisperEncoderLayer",
        "WavLMEncoderLayer",
        "Wav2Vec2ConformerEncoderLayer",
        "ReasoningCodecQueryTransformerBlock",
        "ReasoningCodecDiTLayer",
    ]
    _supports_sdpa = True
    # Loading in float16 / bfloat16 keeps the tokenizing path in float32 (see `FLOAT32_MODULES`).
    _keep_in_fp32_modules_strict = FLOAT32_MODULES

    def _apply(self, fn, recurse=True):
        # `.to(torch.bfloat16)`, `.half()`, ...: the tokenizing modules and their buffers (STFT windows, mel filters,
        # rotary frequencies) follow the device but stay float32; the decoder is cast.
        if recurse:
            for name, child in self.named_children():
                child._apply(_keeping_float32(fn) if name in FLOAT32_MODULES else fn)
        return super()._apply(fn, recurse=False)

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if init_reasoning_codec_decoder_weights(module, std):
            return
        if isinstance(module, ReasoningCodecCodebook):
            init.normal_(module.embed, mean=0.0, std=1.0)
        elif isinstance(module, ReasoningCodecQueryTransformerBlock):
            init.ones_(module.attention_scale)
            init.ones_(module.feed_forward_scale)
        elif isinstance(module, ReasoningCodecReasoningEncoder):
            init.normal_(module.query_token, mean=0.0, std=1.0)
            module.reset_buffers()
        elif isinstance(module, (ReasoningCodecWhisperFeatureExtractor, ReasoningCodecMusicMelSpectrogram)):
            module.reset_buffers()
        elif isinstance(module, Wav2Vec2ConformerRotaryPositionalEmbedding):
            dim = module.inv_freq.shape[0] * 2
            base = self.config.music_ssl_config.rotary_embedding_base
            inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
            init.copy_(module.inv_freq, inv_freq)
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class ReasoningCodecModel(ReasoningCodecPreTrainedModel):
    r"""
    ReasoningCodec, the audio tokenizer of UniAudio 2.0. `encode()` turns 24 kHz mono audio into 5 Hz reasoning codes
    and 12.5 Hz reconstruction codes; `decode()` turns reconstruction codes (optionally with reasoning codes) back into
    24 kHz audio with the flow-matching decoder.

    The frozen encoders are transformers' `WhisperEncoder` and `WavLMModel` (so the released checkpoints map one to one)
    and a MusicFM-style conformer built from transformers' Wav2Vec2-Conformer layers. Only the layers whose outputs
    reach the codes are instantiated (WavLM layers 1-9, music-SSL layers 1-11 for the released model).

    Example:

    ```python
    >>> import torch
    >>> from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel

    >>> model = ReasoningCodecModel.from_pretrained("path/to/converted/reasoning_codec").eval()
    >>> audio = torch.randn(1, 1, 24000) * 0.1  # 1 s of 24 kHz mono audio
    >>> codes = model.encode(audio, sampling_rate=24000)
    >>> codes.reasoning_codes.shape, codes.reconstruction_codes.shape
    (torch.Size([1, 8, 6]), torch.Size([1, 8, 13]))
    >>> waveform = model.decode(codes.reconstruction_codes, num_steps=10, generator=torch.Generator().manual_seed(0))
    >>> waveform.audio_values.shape
    torch.Size([1, 1, 24960])
    ```
    """

    def __init__(self, config: ReasoningCodecConfig):
        super().__init__(config)
        whisper_dim = config.whisper_config.d_model
        wavlm_config = config.wavlm_config
        if wavlm_config.do_stable_layer_norm:
            raise ValueError("Only the post-norm WavLM geometry (`do_stable_layer_norm=False`) is supported.")
        wavlm_dim = wavlm_config.hidden_size
        music_dim = config.music_ssl_config.hidden_size
        reconstruction = config.reconstruction_config

        self.whisper_feature_extractor = ReasoningCodecWhisperFeatureExtractor(config)
        self.whisper_encoder = WhisperEncoder(config.whisper_config)
        # Only the WavLM layers whose outputs are averaged are instantiated (later layers never influence the codes).
        # SpecAugment is disabled so that the training-only `masked_spec_embed` is not created.
        wavlm_used = wavlm_config.__class__(
            **{
                **wavlm_config.to_dict(),
                "num_hidden_layers": min(reconstruction.wavlm_layer_end - 1, wavlm_config.num_hidden_layers),
                "apply_spec_augment": False,
                "mask_time_prob": 0.0,
                "mask_feature_prob": 0.0,
            }
        )
        self.wavlm_encoder = WavLMModel(wavlm_used)
        self.music_ssl_encoder = ReasoningCodecMusicSSLEncoder(config.music_ssl_config)
        self.reasoning_encoder = ReasoningCodecReasoningEncoder(config.reasoning_config, whisper_dim, music_dim)
        self.reconstruction_encoder = ReasoningCodecReconstructionEncoder(
            reconstruction, whisper_dim, wavlm_dim, music_dim
        )
        self.decoder = ReasoningCodecDecoder(config.decoder_config)
        self.post_init()

    @property
    def decoder_dtype(self) -> torch.dtype:
        """Dtype of the decoder (the rest of the codec stays float32, see `FLOAT32_MODULES`)."""
        return _weight_dtype(self.decoder)

    # ----------------------------------------------------------------------------------------------------------------
    # Frozen encoders
    # ----------------------------------------------------------------------------------------------------------------

    def resample_to_ssl_rate(self, waveform: torch.Tensor) -> torch.Tensor:
        """24 kHz `(batch, samples)` -> 16 kHz `(batch, ceil(samples * 2 / 3))` (windowed-sinc, as the reference)."""
        config = self.config
        kernel, _ = sinc_resample_kernel(
            config.sampling_rate, config.ssl_sampling_rate, config.resampling_lowpass_filter_width, config.resampling_rolloff
        )
        return resample_waveform(waveform, config.sampling_rate, config.ssl_sampling_rate, kernel=kernel)

    def wavlm_hidden_states(self, waveform_16k: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states of WavLM: `[encoder input after pos-conv + LayerNorm, output of layer 1, ...]`."""
        wavlm = self.wavlm_encoder
        features = wavlm.feature_extractor(waveform_16k).transpose(1, 2)
        hidden_states, _ = wavlm.feature_projection(features)
        encoder = wavlm.encoder
        hidden_states = encoder.layer_norm(hidden_states + encoder.pos_conv_embed(hidden_states))
        states = [hidden_states]
        position_bias = None
        for index, layer in enumerate(encoder.layers):
            hidden_states, position_bias = layer(hidden_states, position_bias=position_bias, index=index)
            states.append(hidden_states)
        return states

    def extract_features(
        self, waveform: torch.Tensor, return_intermediates: bool = False, whisper_features: torch.Tensor | None = None
    ) -> ReasoningCodecFrozenFeatures:
        """
        Runs the three frozen encoders on 24 kHz audio `(batch, samples)` and returns their features as the codec
        branches consume them (channel first, cut to the music-SSL length). `whisper_features` `(batch, whisper_dim,
        T50)`, the `whisper` output of an earlier call on the same audio, skips the Whisper encoder (a training loop
        with a frozen Whisper caches them); the log-mel is then not computed either.
        """
        config = self.config
        waveform = waveform.float()
        music_acoustic, music_semantic = self.music_ssl_encoder(waveform)
        latent_length = music_semantic.shape[-1]
        waveform_16k = self.resample_to_ssl_rate(waveform)

        mel = None
        if whisper_features is None:
            mel = self.whisper_feature_extractor(waveform_16k)
            whisper = self.whisper_encoder(mel.to(_weight_dtype(self.whisper_encoder))).last_hidden_state
            # Whisper frames run at ssl_sampling_rate / hop / 2 = 50 Hz (the second convolution has stride 2).
            whisper_rate = config.ssl_sampling_rate / config.whisper_hop_length / 2
            whisper_length = max(int(waveform.shape[-1] / config.sampling_rate * whisper_rate), 2 * latent_length)
            whisper = whisper[:, :whisper_length].transpose(1, 2)
        else:
            whisper = whisper_features.to(_weight_dtype(self.whisper_encoder))

        wavlm_input = F.pad(waveform_16k, (0, config.wavlm_extra_samples))
        states = self.wavlm_hidden_states(wavlm_input.to(_weight_dtype(self.wavlm_encoder)))
        start, end = config.reconstruction_config.wavlm_layer_start, config.reconstruction_config.wavlm_layer_end
        wavlm = torch.stack(states[start:end], dim=1).mean(1).transpose(1, 2)
        wavlm = wavlm[..., : min(wavlm.shape[-1], 2 * latent_length)]

        if not return_intermediates:
            return ReasoningCodecFrozenFeatures(
                whisper=whisper, wavlm=wavlm, music_acoustic=music_acoustic, music_semantic=music_semantic
            )
        return ReasoningCodecFrozenFeatures(
            whisper=whisper,
            wavlm=wavlm,
            music_acoustic=music_acoustic,
            music_semantic=music_semantic,
            whisper_mel=mel,
            waveform_16k=waveform_16k,
            wavlm_hidden_states=tuple(states),
        )

    def quantize_features(self, features: ReasoningCodecFrozenFeatures) -> tuple[torch.LongTensor, torch.LongTensor]:
        """Frozen features -> reasoning codes `(batch, T5, n_q)` and reconstruction codes `(batch, T12.5, n_q)`."""
        reasoning = self.reasoning_encoder(features.whisper, features.music_semantic)
        reconstruction = self.reconstruction_encoder(
            features.whisper, features.wavlm, features.music_acoustic, features.music_semantic, reasoning.quantized
        )
        return reasoning.codes, reconstruction.codes

    # ----------------------------------------------------------------------------------------------------------------
    # Input handling
    # ----------------------------------------------------------------------------------------------------------------

    def _validate_audio(self, input_values, padding_mask, sampling_rate, resample) -> list[torch.Tensor]:
        config = self.config
        if not isinstance(input_values, torch.Tensor):
            input_values = torch.as_tensor(np.asarray(input_values))
        if not torch.is_floating_point(input_values):
            raise TypeError(
                f"`input_values` must be a floating-point waveform in [-1, 1], got dtype {input_values.dtype}. "
                "Convert integer PCM first, e.g. `audio.float() / 32768` for int16."
            )
        if input_values.ndim == 1:
            input_values = input_values[None, None]
        if input_values.ndim != 3:
            raise ValueError(
                f"`input_values` must have shape (batch_size, 1, num_samples), got {tuple(input_values.shape)}. "
                "Add the channel dimension with `.unsqueeze(1)`."
            )
        if input_values.shape[1] != 1:
            raise ValueError(
                f"ReasoningCodec encodes mono audio: expected 1 channel, got {input_values.shape[1]}. "
                "Down-mix first, e.g. `input_values.mean(dim=1, keepdim=True)`."
            )
        if input_values.shape[0] == 0 or input_values.shape[-1] == 0:
            raise ValueError(f"`input_values` is empty (shape {tuple(input_values.shape)}).")
        if not torch.isfinite(input_values).all():
            raise ValueError("`input_values` contains NaN or infinite values.")
        needs_resampling = sampling_rate is not None and sampling_rate != config.sampling_rate
        if needs_resampling and not resample:
            raise ValueError(
                f"ReasoningCodec expects audio sampled at {config.sampling_rate} Hz, got {sampling_rate} Hz. "
                f"Resample the audio to {config.sampling_rate} Hz or pass `resample=True`."
            )
        waveforms = input_values[:, 0]
        if padding_mask is None:
            clips = list(waveforms)
        else:
            padding_mask = padding_mask.reshape(padding_mask.shape[0], -1)
            if padding_mask.shape != waveforms.shape:
                raise ValueError(
                    f"`padding_mask` must have shape {tuple(waveforms.shape)} (batch_size, num_samples), "
                    f"got {tuple(padding_mask.shape)}."
                )
            # Lengths are read once, on the host (the mask's values decide the shapes of everything below).
            mask = padding_mask.detach().to("cpu", torch.bool)
            lengths = mask.sum(-1).tolist()
            clips = []
            for index, (waveform, length) in enumerate(zip(waveforms, lengths)):
                if length == 0:
                    raise ValueError(f"Clip {index} of the batch is empty (its `padding_mask` has no valid sample).")
                if not mask[index, :length].all():
                    raise ValueError(
                        f"`padding_mask` of clip {index} is not right-padded: the valid samples must come first."
                    )
                clips.append(waveform[:length])
        if needs_resampling:
            # Clip by clip, so that a clip of a padded batch is resampled exactly as if it were alone (the filter
            # never sees the padding).
            clips = [
                resample_waveform(
                    clip.float(),
                    sampling_rate,
                    config.sampling_rate,
                    config.resampling_lowpass_filter_width,
                    config.resampling_rolloff,
                )
                for clip in clips
            ]
        return clips

    # ----------------------------------------------------------------------------------------------------------------
    # Encode
    # ----------------------------------------------------------------------------------------------------------------

    def _window_frames(self, num_samples: int) -> tuple[int, int]:
        """Reasoning / reconstruction frames produced by a window of `num_samples` samples."""
        latent_length = num_samples // self.config.music_ssl_config.samples_per_frame
        return latent_length // self.config.reasoning_config.query_interval, latent_length // 2

    def _num_output_frames(self, num_samples: int) -> tuple[int, int]:
        config = self.config
        num_reasoning = int(num_samples / float(config.sampling_rate) * config.reasoning_frame_rate) + 1
        num_reconstruction = int(num_samples / float(config.sampling_rate) * config.reconstruction_frame_rate) + 1
        return num_reasoning, num_reconstruction

    def pipeline_windows(self, clip: torch.Tensor, reference_equivalent: bool = False) -> torch.Tensor:
        """
        Windows `(num_windows, encode_window_samples)` of the LLM-pipeline encoding of a 1-D `clip`. The clip is tiled
        by repetition and window k covers samples `[k W, (k + 1) W)` of the tiling, as in the reference `audio2token`.
        By default only the windows whose codes are kept are returned; `reference_equivalent=True` returns every
        window the reference computes (at least two: useful to measure the saving).
        """
        config = self.config
        window, num_samples = config.encode_window_samples, clip.shape[-1]
        if reference_equivalent:
            # The reference doubles the clip until it reaches one window plus the extra samples, then encodes
            # floor(length / 30 s) + 1 windows.
            whole_seconds = (window // config.sampling_rate) * config.sampling_rate
            tiled_length = num_samples
            while tiled_length < window:
                tiled_length *= 2
            num_windows = tiled_length // whole_seconds + 1
        else:
            reasoning_per_window, reconstruction_per_window = self._window_frames(window)
            num_reasoning, num_reconstruction = self._num_output_frames(num_samples)
            num_windows = max(
                -(-num_reasoning // reasoning_per_window), -(-num_reconstruction // reconstruction_per_window)
            )
        positions = torch.arange(num_windows * window, device=clip.device) % num_samples
        return clip[positions].reshape(num_windows, window)

    def _encode_waveforms(self, waveforms: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        reasoning_codes, reconstruction_codes = [], []
        for start in range(0, waveforms.shape[0], batch_size):
            features = self.extract_features(waveforms[start : start + batch_size])
            reasoning, reconstruction = self.quantize_features(features)
            reasoning_codes.append(reasoning)
            reconstruction_codes.append(reconstruction)
        return torch.cat(reasoning_codes), torch.cat(reconstruction_codes)

    @torch.no_grad()
    def encode(
        self,
        input_values: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        sampling_rate: int | None = None,
        resample: bool = False,
        exact_length: bool = False,
        batch_size: int | None = None,
        return_dict: bool | None = None,
    ) -> ReasoningCodecEncoderOutput | tuple:
        r"""
        Encodes 24 kHz mono audio into reasoning and reconstruction codes.

        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, 1, num_samples)`):
                Float waveform in [-1, 1] at `config.sampling_rate` (24 kHz).
            padding_mask (`torch.Tensor` of shape `(batch_size, num_samples)`, *optional*):
                1 for the valid samples of each clip, 0 for padding (valid samples must come first). Each clip is
                encoded exactly as if it were alone.
            sampling_rate (`int`, *optional*):
                Sampling rate of `input_values`. A rate other than 24 kHz raises an error unless `resample=True`.
            resample (`bool`, *optional*, defaults to `False`):
                Resample audio given at another `sampling_rate` to 24 kHz (windowed sinc) instead of raising.
            exact_length (`bool`, *optional*, defaults to `False`):
                `False` (default) reproduces the UniAudio 2.0 LLM pipeline (`audio2token`): the clip is tiled to
                independent 30 s windows, but only the windows whose codes are kept are computed. `True` encodes the
                clip zero-padded to a multiple of 0.4 s in one pass (the reference `encode_segment`; clips of at
                most 30 s), which is cheaper for short clips but gives different codes.
            batch_size (`int`, *optional*):
                Maximum number of windows per forward pass (defaults to `config.encode_batch_size`).

        Returns:
            [`ReasoningCodecEncoderOutput`] with `reasoning_codes` `(batch, 8, T5)`, `reconstruction_codes`
            `(batch, 8, T12.5)` where `T5 = int(seconds * 5) + 1`, `T12.5 = int(seconds * 12.5) + 1`, and padding masks.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        config = self.config
        batch_size = batch_size or config.encode_batch_size
        clips = self._validate_audio(input_values, padding_mask, sampling_rate, resample)
        # The codes are computed in float32 whatever the decoder's dtype or an enclosing autocast.
        device = self.device
        clips = [clip.to(device=device, dtype=torch.float32) for clip in clips]
        with _autocast_disabled(device):
            reasoning_codes, reconstruction_codes = self._encode_clips(clips, exact_length, batch_size)
        reasoning_codes, reasoning_mask = self._pad_codes(reasoning_codes)
        reconstruction_codes, reconstruction_mask = self._pad_codes(reconstruction_codes)
        if not return_dict:
            return reasoning_codes, reconstruction_codes, reasoning_mask, reconstruction_mask
        return ReasoningCodecEncoderOutput(
            reasoning_codes=reasoning_codes,
            reconstruction_codes=reconstruction_codes,
            reasoning_padding_mask=reasoning_mask,
            reconstruction_padding_mask=reconstruction_mask,
        )

    def _encode_clips(
        self, clips: list[torch.Tensor], exact_length: bool, batch_size: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-clip reasoning `(T5, n_q)` and reconstruction `(T12.5, n_q)` codes of 1-D float32 clips."""
        config = self.config
        per_clip_reasoning, per_clip_reconstruction = [], []
        if exact_length:
            multiple = config.segment_multiple
            max_samples = config.whisper_chunk_length * config.sampling_rate
            groups: dict[int, list[int]] = {}
            padded = []
            for index, clip in enumerate(clips):
                length = -(-clip.shape[-1] // multiple) * multiple
                if length > max_samples:
                    raise ValueError(
                        f"`exact_length=True` supports clips of at most {config.whisper_chunk_length} s; clip {index} "
                        f"has {clip.shape[-1] / config.sampling_rate:.2f} s. Use the default windowed encoding."
                    )
                padded.append(F.pad(clip, (0, length - clip.shape[-1])))
                groups.setdefault(length, []).append(index)
            results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            for length, indices in groups.items():
                reasoning, reconstruction = self._encode_waveforms(torch.stack([padded[i] for i in indices]), batch_size)
                for row, index in enumerate(indices):
                    results[index] = (reasoning[row], reconstruction[row])
            for index, clip in enumerate(clips):
                num_reasoning, num_reconstruction = self._num_output_frames(clip.shape[-1])
                reasoning, reconstruction = results[index]
                per_clip_reasoning.append(reasoning[:num_reasoning])
                per_clip_reconstruction.append(reconstruction[:num_reconstruction])
        else:
            windows = [self.pipeline_windows(clip) for clip in clips]
            reasoning, reconstruction = self._encode_waveforms(torch.cat(windows), batch_size)
            start = 0
            for clip, clip_windows in zip(clips, windows):
                num_reasoning, num_reconstruction = self._num_output_frames(clip.shape[-1])
                end = start + clip_windows.shape[0]
                per_clip_reasoning.append(reasoning[start:end].reshape(-1, reasoning.shape[-1])[:num_reasoning])
                per_clip_reconstruction.append(
                    reconstruction[start:end].reshape(-1, reconstruction.shape[-1])[:num_reconstruction]
                )
                start = end
        return per_clip_reasoning, per_clip_reconstruction

    @staticmethod
    def _pad_codes(codes: list[torch.Tensor]) -> tuple[torch.LongTensor, torch.BoolTensor]:
        """List of `(T_i, n_q)` -> `(batch, n_q, max T_i)` padded with 0, and the `(batch, max T_i)` validity mask."""
        max_length = max(c.shape[0] for c in codes)
        num_quantizers = codes[0].shape[-1]
        out = codes[0].new_zeros(len(codes), num_quantizers, max_length)
        mask = torch.zeros(len(codes), max_length, dtype=torch.bool, device=codes[0].device)
        for index, c in enumerate(codes):
            out[index, :, : c.shape[0]] = c.transpose(0, 1)
            mask[index, : c.shape[0]] = True
        return out, mask

    # ----------------------------------------------------------------------------------------------------------------
    # Decode
    # ----------------------------------------------------------------------------------------------------------------

    def _check_codes(self, codes: torch.Tensor, num_quantizers: int, codebook_size: int, name: str) -> torch.LongTensor:
        if not isinstance(codes, torch.Tensor):
            codes = torch.as_tensor(np.asarray(codes))
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise TypeError(f"`{name}` must be an integer tensor, got dtype {codes.dtype}.")
        if codes.ndim == 2:
            codes = codes[None]
        if codes.ndim != 3 or codes.shape[1] != num_quantizers or codes.shape[-1] == 0:
            raise ValueError(
                f"`{name}` must have shape (batch_size, {num_quantizers}, num_frames >= 1), got {tuple(codes.shape)}."
            )
        if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
            raise ValueError(
                f"`{name}` values must lie in [0, {codebook_size - 1}], got range "
                f"[{int(codes.min())}, {int(codes.max())}]."
            )
        return codes.long().to(self.device)

    def reconstruction_embeddings(self, reconstruction_codes: torch.LongTensor) -> torch.Tensor:
        """Reconstruction codes `(batch, 8, T)` -> summed RVQ look-ups `(batch, T, hidden)` (decoder input)."""
        config = self.config.reconstruction_config
        codes = self._check_codes(
            reconstruction_codes, config.num_quantizers, config.codebook_size, "reconstruction_codes"
        )
        return self.reconstruction_encoder.lookup(codes)

    def reasoning_embeddings(self, reasoning_codes: torch.LongTensor) -> torch.Tensor:
        """Reasoning codes `(batch, 8, T)` -> `reasoning_adaptor(RVQ look-up)` `(batch, T, hidden)` (decoder input)."""
        config = self.config.reasoning_config
        codes = self._check_codes(reasoning_codes, config.num_quantizers, config.codebook_size, "reasoning_codes")
        quantized = self.reasoning_encoder.quantizer.decode(codes.transpose(1, 2))
        return self.reconstruction_encoder.reasoning_adaptor(quantized)

    @torch.no_grad()
    def decode(
        self,
        reconstruction_codes: torch.LongTensor,
        reasoning_codes: torch.LongTensor | None = None,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        tile_short_inputs: bool | None = None,
        show_progress: bool | None = None,
        return_dict: bool | None = None,
    ) -> ReasoningCodecDecoderOutput | tuple:
        r"""
        Decodes reconstruction codes (optionally with reasoning codes) into a 24 kHz waveform.

        Args:
            reconstruction_codes (`torch.LongTensor` of shape `(batch_size, 8, T_c)`):
                Reconstruction codes at 12.5 Hz.
            reasoning_codes (`torch.LongTensor` of shape `(batch_size, 8, T_r)`, *optional*):
                Reasoning codes at 5 Hz, added to the condition (the UniAudio 2.0 LLM pipeline decodes without them).
            num_steps (`int`, *optional*):
                Euler steps of the flow matching (defaults to `config.decoder_config.num_inference_steps`).
            guidance_scale (`float`, *optional*):
                Classifier-free guidance scale (defaults to `config.decoder_config.guidance_scale`); `<= 1` disables
                guidance.
            generator (`torch.Generator`, *optional*):
                Random generator of the initial noise, for reproducible decoding.
            noise (`torch.FloatTensor`, *optional*):
                The initial noise itself, `(batch_size, 2 * T_c, latent_dim)`.
            tile_short_inputs (`bool`, *optional*):
                Tile inputs shorter than one 20 s window to a full window (the reference pipeline behaviour).
            show_progress (`bool`, *optional*):
                Show a progress bar over windows and steps (default: only for multi-window inputs).

        Returns:
            [`ReasoningCodecDecoderOutput`] with `audio_values` of shape `(batch_size, 1, T_c * 1920)`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        reconstruction = self.reconstruction_embeddings(reconstruction_codes)
        reasoning = None
        if reasoning_codes is not None:
            reasoning = self.reasoning_embeddings(reasoning_codes)
            if reasoning.shape[0] != reconstruction.shape[0]:
                raise ValueError(
                    f"`reasoning_codes` batch size {reasoning.shape[0]} differs from `reconstruction_codes` batch size "
                    f"{reconstruction.shape[0]}."
                )
        output = self.decoder(
            reconstruction,
            reasoning_embeddings=reasoning,
            num_steps=num_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            noise=noise,
            tile_short_inputs=tile_short_inputs,
            show_progress=show_progress,
            return_dict=True,
        )
        if not return_dict:
            return (output.audio_values,)
        return output

    def forward(
        self,
        input_values: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ReasoningCodecOutput | tuple:
        r"""
        Encodes `input_values` and decodes the reconstruction codes back to audio (without the reasoning codes, as
        the UniAudio 2.0 pipeline does).

        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, 1, num_samples)`):
                24 kHz mono waveform.
            padding_mask (`torch.Tensor` of shape `(batch_size, num_samples)`, *optional*):
                1 for valid samples, 0 for padding.
            num_steps, guidance_scale, generator:
                See [`~ReasoningCodecModel.decode`].
            kwargs:
                Passed to [`~ReasoningCodecModel.encode`] (`sampling_rate`, `resample`, `exact_length`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        encoded = self.encode(input_values, padding_mask=padding_mask, return_dict=True, **kwargs)
        audio = self.decode(
            encoded.reconstruction_codes, num_steps=num_steps, guidance_scale=guidance_scale, generator=generator
        ).audio_values
        if not return_dict:
            return encoded.reasoning_codes, encoded.reconstruction_codes, audio
        return ReasoningCodecOutput(
            reasoning_codes=encoded.reasoning_codes,
            reconstruction_codes=encoded.reconstruction_codes,
            audio_values=audio,
        )


ReasoningCodecModel.register_for_auto_class("AutoModel")

__all__ = ["ReasoningCodecModel", "ReasoningCodecPreTrainedModel"]
