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
"""Configuration of the decode side of ReasoningCodec (condition -> flow-matching DiT -> SQ-codec waveform decoder)."""

import math

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig


@strict
class ReasoningCodecDecoderConfig(PreTrainedConfig):
    r"""
    Configuration of [`ReasoningCodecDecoder`], the decoder of the UniAudio 2.0 ReasoningCodec. It turns the looked-up
    quantized reconstruction features (12.5 Hz) into a 24 kHz waveform in three stages:

    1. **decode conditioning**: a linear projection of the (summed) quantized features, repeated twice in time to the
       25 Hz latent rate, with a learned embedding for unconditioned frames;
    2. **flow matching**: a PixArt-style 1-D diffusion transformer (adaLN-single) integrated with a fixed-step Euler
       solver from Gaussian noise (t = 0) to data (t = 1), with optional classifier-free guidance;
    3. **SQ-codec**: the decoder of a scalar-quantized convolutional auto-encoder (`ScalarAE`) maps the 136-d 25 Hz
       latents to the waveform (960x up-sampling at 24 kHz).

    The defaults reproduce the released 8192/4096 ReasoningCodec checkpoint. The SQ-codec geometry (`sq_*` fields)
    is not published with the reference code (its yaml is missing); the defaults are the geometry that satisfies all
    constraints of the reference (136-d latent, 960x hop, causal, 2x sample repetition) and the real values can be
    read back from the tensor shapes of `sqcodec.pth` with
    [`~modeling_reasoning_codec_decoder.infer_sq_codec_config_from_state_dict`].

    Args:
        hidden_size (`int`, *optional*, defaults to 768):
            Width of the quantized reconstruction features and of the DiT condition (`codec_dim` of the reference).
        latent_dim (`int`, *optional*, defaults to 136):
            Dimension of the SQ-codec latent, i.e. of the flow-matching state and of the DiT velocity output.
        dit_num_hidden_layers (`int`, *optional*, defaults to 32):
            Number of DiT blocks.
        dit_num_attention_heads (`int`, *optional*, defaults to 24):
            Number of attention heads in every DiT block.
        dit_attention_head_dim (`int`, *optional*, defaults to 64):
            Dimension of every attention head; the DiT width is `dit_num_attention_heads * dit_attention_head_dim`.
        dit_intermediate_size (`int`, *optional*):
            Width of the DiT feed-forward layers. Defaults to 4x the DiT width (6144 for the released model).
        dit_in_channels (`int`, *optional*):
            Input channels of the DiT, `[x_t, in-context latents, condition]`. Defaults to
            `2 * latent_dim + hidden_size` (1040); any other value is rejected.
        dit_out_channels (`int`, *optional*):
            Output channels of the DiT (the velocity). Defaults to `latent_dim` (136); any other value is rejected.
        dit_projection_kernel_size (`int`, *optional*, defaults to 3):
            Kernel size of the convolution of the DiT input and output projections.
        dit_norm_eps (`float`, *optional*, defaults to 1e-06):
            Epsilon of the (non-affine) layer norms of the DiT.
        dit_attention_bias (`bool`, *optional*, defaults to `True`):
            Whether the attention projections of the DiT have biases.
        dit_max_position_embeddings (`int`, *optional*, defaults to 3000):
            Length of the sinusoidal position table of the DiT, i.e. the longest window in latent frames (120 s).
        dit_timestep_embedding_dim (`int`, *optional*, defaults to 512):
            Number of sinusoidal features of the flow time (`[cos, sin]` halves).
        dit_timestep_scale (`float`, *optional*, defaults to 1000.0):
            The flow time t in [0, 1] is multiplied by this factor before the sinusoidal features.
        num_inference_steps (`int`, *optional*, defaults to 50):
            Default number of Euler steps (the UniAudio 2.0 pipeline default; its readme uses 10).
        sigma_min (`float`, *optional*, defaults to 0.0001):
            `sigma_min` of the optimal-transport flow-matching path; used to re-noise the in-context prefix.
        guidance_scale (`float`, *optional*, defaults to 1.5):
            Default classifier-free guidance scale. Values `<= 1` run the conditional branch only (no CFG batch).
        decode_window_frames (`int`, *optional*, defaults to 500):
            Length of one decoding window in latent frames (500 = 20 s at 25 Hz, as the reference pipeline).
        decode_overlap_frames (`int`, *optional*, defaults to 125):
            Overlap of consecutive windows in latent frames (125 = 5 s, at most half a window); the waveforms are
            linearly cross-faded over the whole overlap.
        decode_context_frames (`int`, *optional*, defaults to 32):
            Number of latent frames at the start of every window after the first that are taken, at the same
            time positions, from the previous window and kept fixed (in-context prefix).
        tile_short_inputs (`bool`, *optional*, defaults to `False`):
            If `True`, inputs shorter than one window are tiled (repeated) to a full window before generation and the
            output is cut back, which is what the reference `detokenize_no_reason` does. If `False`, short inputs are
            generated at their exact length (as the reference `decode_segment`), which is cheaper.
        sq_sampling_rate (`int`, *optional*, defaults to 24000):
            Sampling rate of the SQ-codec waveform.
        sq_num_bands (`int`, *optional*, defaults to 1):
            Number of waveform channels of the SQ-codec.
        sq_init_channel (`int`, *optional*, defaults to 64):
            Channel width of the outermost SQ-codec stage; stage `i` of the decoder has `sq_init_channel * 2**(L-i)`.
        sq_num_samples (`int`, *optional*, defaults to 2):
            Sample repetition factor of the SQ-codec post-processor (average pooling factor of the pre-processor).
        sq_upsample_factors (`list[int]`, *optional*, defaults to `[5, 4, 4, 3, 2]`):
            Strides of the SQ-codec decoder stages. `sq_num_samples * prod(sq_upsample_factors)` is the hop length.
        sq_upsample_kernel_sizes (`list[int]`, *optional*):
            Kernel sizes of the decoder transposed convolutions. Defaults to `2 * factor` (required when causal).
        sq_downsample_factors (`list[int]`, *optional*):
            Strides of the SQ-codec encoder stages. Defaults to the reversed up-sampling factors.
        sq_downsample_kernel_sizes (`list[int]`, *optional*):
            Kernel sizes of the encoder strided convolutions. Defaults to `2 * factor`.
        sq_causal (`bool`, *optional*, defaults to `True`):
            Whether the SQ-codec convolutions are causal (left padding; transposed convolutions cropped on the right).
        sq_delay_kernel_size (`int`, *optional*, defaults to 5):
            Kernel size of the first (non-causal, "look-ahead") decoder convolution.
        sq_residual_kernel_size (`int`, *optional*, defaults to 7):
            Kernel size of the dilated convolutions of the residual units.
        sq_kernel_size (`int`, *optional*, defaults to 7):
            Kernel size of the other SQ-codec convolutions (input/output convolutions, pre/post-processors).
        sq_quantization_levels (`int`, *optional*, defaults to 9):
            Scalar quantization of the latents before decoding: `round(levels * z) / levels`.

    Example:

    ```python
    >>> from uniaudio2.configuration_reasoning_codec_decoder import ReasoningCodecDecoderConfig
    >>> from uniaudio2.modeling_reasoning_codec_decoder import ReasoningCodecDecoder

    >>> config = ReasoningCodecDecoderConfig()  # the released geometry
    >>> config.dit_hidden_size, config.hop_length, config.latent_frame_rate
    (1536, 960, 25.0)
    >>> decoder = ReasoningCodecDecoder(ReasoningCodecDecoderConfig(dit_num_hidden_layers=2, dit_num_attention_heads=2))
    ```"""

    model_type = "reasoning_codec_decoder"

    hidden_size: int = 768
    latent_dim: int = 136

    dit_num_hidden_layers: int = 32
    dit_num_attention_heads: int = 24
    dit_attention_head_dim: int = 64
    dit_intermediate_size: int | None = None
    dit_in_channels: int | None = None
    dit_out_channels: int | None = None
    dit_projection_kernel_size: int = 3
    dit_norm_eps: float = 1e-6
    dit_attention_bias: bool = True
    dit_max_position_embeddings: int = 3000
    dit_timestep_embedding_dim: int = 512
    dit_timestep_scale: float = 1000.0

    num_inference_steps: int = 50
    sigma_min: float = 1e-4
    guidance_scale: float = 1.5

    decode_window_frames: int = 500
    decode_overlap_frames: int = 125
    decode_context_frames: int = 32
    tile_short_inputs: bool = False

    sq_sampling_rate: int = 24000
    sq_num_bands: int = 1
    sq_init_channel: int = 64
    sq_num_samples: int = 2
    sq_upsample_factors: list[int] | tuple[int, ...] = (5, 4, 4, 3, 2)
    sq_upsample_kernel_sizes: list[int] | tuple[int, ...] | None = None
    sq_downsample_factors: list[int] | tuple[int, ...] | None = None
    sq_downsample_kernel_sizes: list[int] | tuple[int, ...] | None = None
    sq_causal: bool = True
    sq_delay_kernel_size: int = 5
    sq_residual_kernel_size: int = 7
    sq_kernel_size: int = 7
    sq_quantization_levels: int = 9

    def __post_init__(self, **kwargs):
        dit_hidden_size = self.dit_num_attention_heads * self.dit_attention_head_dim
        if self.dit_intermediate_size is None:
            self.dit_intermediate_size = 4 * dit_hidden_size
        if self.dit_in_channels is None:
            self.dit_in_channels = 2 * self.latent_dim + self.hidden_size
        if self.dit_out_channels is None:
            self.dit_out_channels = self.latent_dim
        self.sq_upsample_factors = [int(f) for f in self.sq_upsample_factors]
        if self.sq_upsample_kernel_sizes is None:
            self.sq_upsample_kernel_sizes = [2 * f for f in self.sq_upsample_factors]
        if self.sq_downsample_factors is None:
            self.sq_downsample_factors = list(reversed(self.sq_upsample_factors))
        if self.sq_downsample_kernel_sizes is None:
            self.sq_downsample_kernel_sizes = [2 * f for f in self.sq_downsample_factors]
        self.sq_upsample_kernel_sizes = [int(k) for k in self.sq_upsample_kernel_sizes]
        self.sq_downsample_factors = [int(f) for f in self.sq_downsample_factors]
        self.sq_downsample_kernel_sizes = [int(k) for k in self.sq_downsample_kernel_sizes]
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict`-powered validation: checks that the sizes are consistent with each other."""
        if self.dit_in_channels != 2 * self.latent_dim + self.hidden_size:
            raise ValueError(
                f"`dit_in_channels` must be 2 * latent_dim + hidden_size = {2 * self.latent_dim + self.hidden_size} "
                f"(noisy latents, in-context latents and condition are concatenated), got {self.dit_in_channels}."
            )
        if self.dit_out_channels != self.latent_dim:
            raise ValueError(
                f"`dit_out_channels` must equal `latent_dim` ({self.latent_dim}), got {self.dit_out_channels}."
            )
        if self.dit_timestep_embedding_dim % 2:
            raise ValueError(f"`dit_timestep_embedding_dim` must be even, got {self.dit_timestep_embedding_dim}.")
        if (self.dit_num_attention_heads * self.dit_attention_head_dim) % 2:
            raise ValueError("The DiT width (heads x head_dim) must be even for the sinusoidal position table.")
        if len(self.sq_upsample_kernel_sizes) != len(self.sq_upsample_factors):
            raise ValueError("`sq_upsample_kernel_sizes` and `sq_upsample_factors` must have the same length.")
        if len(self.sq_downsample_kernel_sizes) != len(self.sq_downsample_factors):
            raise ValueError("`sq_downsample_kernel_sizes` and `sq_downsample_factors` must have the same length.")
        if len(self.sq_downsample_factors) != len(self.sq_upsample_factors):
            raise ValueError("The SQ-codec encoder and decoder must have the same number of stages.")
        if math.prod(self.sq_downsample_factors) != math.prod(self.sq_upsample_factors):
            raise ValueError("The SQ-codec encoder and decoder must have the same total stride.")
        if self.sq_causal and any(k != 2 * f for k, f in zip(self.sq_upsample_kernel_sizes, self.sq_upsample_factors)):
            raise ValueError("A causal SQ-codec needs `sq_upsample_kernel_sizes[i] == 2 * sq_upsample_factors[i]`.")
        if self.decode_window_frames < 2 or self.decode_window_frames > self.dit_max_position_embeddings:
            raise ValueError(
                f"`decode_window_frames` must be in [2, dit_max_position_embeddings={self.dit_max_position_embeddings}]"
                f", got {self.decode_window_frames}."
            )
        if not 0 <= self.decode_context_frames <= self.decode_overlap_frames < self.decode_window_frames:
            raise ValueError(
                "Windowing needs 0 <= decode_context_frames <= decode_overlap_frames < decode_window_frames, got "
                f"{self.decode_context_frames}, {self.decode_overlap_frames}, {self.decode_window_frames}."
            )
        if 2 * self.decode_overlap_frames > self.decode_window_frames:
            raise ValueError(
                "`decode_overlap_frames` must be at most half of `decode_window_frames` (a frame must not be covered "
                f"by more than two windows), got {self.decode_overlap_frames} and {self.decode_window_frames}."
            )
        if self.num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be >= 1, got {self.num_inference_steps}.")

    @property
    def dit_hidden_size(self) -> int:
        """Width of the DiT (heads x head_dim, 1536 for the released model)."""
        return self.dit_num_attention_heads * self.dit_attention_head_dim

    @property
    def hop_length(self) -> int:
        """Waveform samples per SQ-codec latent frame (960 for the released model)."""
        return self.sq_num_samples * math.prod(self.sq_upsample_factors)

    @property
    def latent_frame_rate(self) -> float:
        """Rate of the SQ-codec latents in Hz (25 for the released model)."""
        return self.sq_sampling_rate / self.hop_length

    @property
    def frame_rate(self) -> float:
        """Rate of the reconstruction codes in Hz (12.5): one code frame conditions two latent frames."""
        return self.latent_frame_rate / 2

    @property
    def sampling_rate(self) -> int:
        """Output sampling rate in Hz."""
        return self.sq_sampling_rate


__all__ = ["ReasoningCodecDecoderConfig"]
