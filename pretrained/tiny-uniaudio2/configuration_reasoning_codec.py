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
"""ReasoningCodec (UniAudio 2.0 audio tokenizer) configuration."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, WavLMConfig, WhisperConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_reasoning_codec_decoder import ReasoningCodecDecoderConfig


# Geometry of the Whisper-medium encoder used by the released codec. Only the encoder is instantiated; the decoder
# fields are kept at the whisper-medium values so that the sub-config describes the original checkpoint.
WHISPER_MEDIUM_KWARGS = {
    "vocab_size": 51865,
    "num_mel_bins": 80,
    "d_model": 1024,
    "encoder_layers": 24,
    "encoder_attention_heads": 16,
    "encoder_ffn_dim": 4096,
    "decoder_layers": 24,
    "decoder_attention_heads": 16,
    "decoder_ffn_dim": 4096,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "activation_function": "gelu",
    "scale_embedding": False,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
}

# Geometry of the 768-d WavLM (base / base-plus) used by the released codec.
WAVLM_BASE_KWARGS = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "conv_bias": False,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "layerdrop": 0.0,
}


@strict
class ReasoningCodecMusicSSLConfig(PreTrainedConfig):
    r"""
    Configuration of the frozen music self-supervised encoder of ReasoningCodec (a MusicFM-style BEST-RQ model running at
    25 Hz: log-mel front end, 2-D convolutional sub-sampling and a rotary Wav2Vec2-Conformer stack).

    Args:
        sampling_rate (`int`, *optional*, defaults to 24000):
            Sampling rate of the input waveform.
        frame_rate (`int`, *optional*, defaults to 25):
            Output frame rate. The waveform is trimmed to a multiple of `sampling_rate // frame_rate` samples.
        n_fft (`int`, *optional*, defaults to 2048):
            FFT size (and window length) of the mel spectrogram.
        hop_length (`int`, *optional*, defaults to 240):
            Hop length of the mel spectrogram.
        num_mel_bins (`int`, *optional*, defaults to 128):
            Number of (HTK-scale, un-normalised) mel filters.
        mel_mean (`float`, *optional*, defaults to 6.768444971712967):
            Mean used to standardise the dB mel spectrogram.
        mel_std (`float`, *optional*, defaults to 18.417922652295623):
            Standard deviation used to standardise the dB mel spectrogram.
        conv_dim (`int`, *optional*, defaults to 512):
            Channels of the two residual 2-D convolution blocks (each halves time and frequency).
        hidden_size (`int`, *optional*, defaults to 1024):
            Width of the conformer.
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Number of conformer layers of the original model. Only the first `max(acoustic_layer, semantic_layer)`
            layers are instantiated: the later ones never influence the codec.
        num_attention_heads (`int`, *optional*, defaults to 16):
            Attention heads of the conformer.
        intermediate_size (`int`, *optional*, defaults to 4096):
            Feed-forward width of the conformer.
        conv_depthwise_kernel_size (`int`, *optional*, defaults to 31):
            Kernel size of the depth-wise convolution of the conformer convolution module.
        hidden_act (`str`, *optional*, defaults to `"swish"`):
            Activation of the conformer feed-forward modules.
        layer_norm_eps (`float`, *optional*, defaults to 1e-05):
            Epsilon of the conformer layer norms.
        rotary_embedding_base (`int`, *optional*, defaults to 10000):
            Base of the rotary position embedding.
        acoustic_layer (`int`, *optional*, defaults to 4):
            Hidden-state index (output of that conformer layer, 1-based) used as the "acoustic" feature.
        semantic_layer (`int`, *optional*, defaults to 11):
            Hidden-state index used as the "semantic" feature.
    """

    model_type = "reasoning_codec_music_ssl"
    base_config_key = "music_ssl_config"

    sampling_rate: int = 24000
    frame_rate: int = 25
    n_fft: int = 2048
    hop_length: int = 240
    num_mel_bins: int = 128
    mel_mean: float = 6.768444971712967
    mel_std: float = 18.417922652295623
    conv_dim: int = 512
    hidden_size: int = 1024
    num_hidden_layers: int = 12
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    conv_depthwise_kernel_size: int = 31
    hidden_act: str = "swish"
    layer_norm_eps: float = 1e-5
    rotary_embedding_base: int = 10000
    acoustic_layer: int = 4
    semantic_layer: int = 11

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` ({self.num_attention_heads})."
            )
        if self.num_mel_bins % 4 != 0:
            raise ValueError(f"`num_mel_bins` ({self.num_mel_bins}) must be divisible by 4 (two stride-2 blocks).")
        if not 1 <= self.acoustic_layer <= self.num_hidden_layers or not 1 <= self.semantic_layer <= self.num_hidden_layers:
            raise ValueError(
                f"`acoustic_layer` ({self.acoustic_layer}) and `semantic_layer` ({self.semantic_layer}) must lie in "
                f"[1, num_hidden_layers={self.num_hidden_layers}]."
            )

    @property
    def num_used_layers(self) -> int:
        return max(self.acoustic_layer, self.semantic_layer)

    @property
    def samples_per_frame(self) -> int:
        return self.sampling_rate // self.frame_rate


@strict
class ReasoningCodecReasoningConfig(PreTrainedConfig):
    r"""
    Configuration of the reasoning branch of ReasoningCodec: a learned query token inserted after every
    `query_interval` frames of the fused Whisper + music-SSL sequence, a stack of non-causal transformer blocks
    (no pre-norm, q/k LayerNorm, partial rotary embedding, sigmoid-GLU feed-forward, LayerScale) and a residual vector
    quantizer over the query outputs.

    Args:
        hidden_size (`int`, *optional*, defaults to 768):
            Width of the query transformer (the codec dimension).
        num_hidden_layers (`int`, *optional*, defaults to 5):
            Number of transformer blocks.
        head_dim (`int`, *optional*, defaults to 128):
            Dimension of each attention head; the number of heads is `hidden_size // head_dim`.
        rotary_dim (`int`, *optional*):
            Number of channels of every head that receive the rotary embedding. Defaults to `max(head_dim // 2, 32)`.
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the rotary embedding.
        intermediate_size (`int`, *optional*):
            Inner width of the gated feed-forward. Defaults to `4 * hidden_size`.
        qk_norm_eps (`float`, *optional*, defaults to 1e-05):
            Epsilon of the q/k LayerNorms.
        query_interval (`int`, *optional*, defaults to 5):
            One query token is appended after every `query_interval` frames (25 Hz / 5 = 5 Hz codes).
        codebook_size (`int`, *optional*, defaults to 4096):
            Entries per codebook of the reasoning RVQ.
        codebook_dim (`int`, *optional*, defaults to 64):
            Dimension of the codebook space (shared input/output projections).
        num_quantizers (`int`, *optional*, defaults to 8):
            Number of residual quantizer levels.
    """

    model_type = "reasoning_codec_reasoning"
    base_config_key = "reasoning_config"

    hidden_size: int = 768
    num_hidden_layers: int = 5
    head_dim: int = 128
    rotary_dim: int | None = None
    rope_theta: float = 10000.0
    intermediate_size: int | None = None
    qk_norm_eps: float = 1e-5
    query_interval: int = 5
    codebook_size: int = 4096
    codebook_dim: int = 64
    num_quantizers: int = 8

    def __post_init__(self, **kwargs):
        if self.rotary_dim is None:
            self.rotary_dim = max(self.head_dim // 2, 32)
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        super().__post_init__(**kwargs)
        if self.hidden_size % self.head_dim != 0:
            raise ValueError(f"`hidden_size` ({self.hidden_size}) must be divisible by `head_dim` ({self.head_dim}).")
        if self.rotary_dim > self.head_dim or self.rotary_dim % 2 != 0:
            raise ValueError(f"`rotary_dim` ({self.rotary_dim}) must be even and at most `head_dim` ({self.head_dim}).")

    @property
    def num_attention_heads(self) -> int:
        return self.hidden_size // self.head_dim


@strict
class ReasoningCodecReconstructionConfig(PreTrainedConfig):
    r"""
    Configuration of the three reconstruction branches of ReasoningCodec. Each branch down-samples a frozen feature to
    12.5 Hz, projects it to `hidden_size`, modulates it with a FiLM conditioned on the (adapted, up-sampled) reasoning
    features, and quantizes it with its own residual VQ:

    - "phone": WavLM layers (mean) -> 1 codebook,
    - "semantic": music-SSL semantic layer -> 1 codebook,
    - "acoustic": music-SSL acoustic layer concatenated with Whisper -> 6 codebooks.

    Args:
        hidden_size (`int`, *optional*, defaults to 768):
            Codec dimension (width of the fused features, of the FiLM and of the quantizer outputs).
        codebook_size (`int`, *optional*, defaults to 8192):
            Entries per codebook of the three reconstruction RVQs (1024 for the `ReasoningCodec_1024` variant).
        codebook_dim (`int`, *optional*, defaults to 32):
            Dimension of the codebook space.
        num_phone_quantizers (`int`, *optional*, defaults to 1):
            RVQ levels of the phone (WavLM) branch.
        num_semantic_quantizers (`int`, *optional*, defaults to 1):
            RVQ levels of the semantic (music-SSL) branch.
        num_acoustic_quantizers (`int`, *optional*, defaults to 6):
            RVQ levels of the acoustic (music-SSL + Whisper) branch.
        film_gamma (`float`, *optional*, defaults to 0.1):
            FiLM scale: `gamma = 1 + film_gamma * tanh(delta)`.
        wavlm_layer_start (`int`, *optional*, defaults to 6):
            First WavLM hidden-state index averaged for the phone branch.
        wavlm_layer_end (`int`, *optional*, defaults to 10):
            End (exclusive) of the averaged WavLM hidden-state indices. WavLM layers beyond it are not instantiated.
    """

    model_type = "reasoning_codec_reconstruction"
    base_config_key = "reconstruction_config"

    hidden_size: int = 768
    codebook_size: int = 8192
    codebook_dim: int = 32
    num_phone_quantizers: int = 1
    num_semantic_quantizers: int = 1
    num_acoustic_quantizers: int = 6
    film_gamma: float = 0.1
    wavlm_layer_start: int = 6
    wavlm_layer_end: int = 10

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not 0 <= self.wavlm_layer_start < self.wavlm_layer_end:
            raise ValueError(
                f"Invalid WavLM layer range [{self.wavlm_layer_start}, {self.wavlm_layer_end})."
            )

    @property
    def num_quantizers(self) -> int:
        return self.num_phone_quantizers + self.num_semantic_quantizers + self.num_acoustic_quantizers


@strict
class ReasoningCodecConfig(PreTrainedConfig):
    r"""
    Configuration of [`ReasoningCodecModel`], the audio tokenizer of UniAudio 2.0. The defaults describe the released
    8192/4096 codec (`ReasoningCodec.checkpoint`): Whisper-medium encoder, 768-d WavLM, MusicFM-25Hz music encoder,
    reasoning branch with an 8 x 4096 RVQ at 5 Hz, reconstruction branches with 8 x 8192 codebooks at 12.5 Hz, and the
    flow-matching DiT + SQ-codec decoder (see [`ReasoningCodecDecoderConfig`]).

    Args:
        whisper_config (`Union[dict, WhisperConfig]`, *optional*):
            Configuration of the frozen Whisper encoder (defaults to whisper-medium).
        wavlm_config (`Union[dict, WavLMConfig]`, *optional*):
            Configuration of the frozen WavLM (defaults to the 768-d, 12-layer base geometry).
        music_ssl_config (`Union[dict, ReasoningCodecMusicSSLConfig]`, *optional*):
            Configuration of the frozen music SSL encoder.
        reasoning_config (`Union[dict, ReasoningCodecReasoningConfig]`, *optional*):
            Configuration of the reasoning branch and its RVQ.
        reconstruction_config (`Union[dict, ReasoningCodecReconstructionConfig]`, *optional*):
            Configuration of the reconstruction branches and their RVQs.
        decoder_config (`Union[dict, ReasoningCodecDecoderConfig]`, *optional*):
            Configuration of the decoder (decode conditioning, DiT, flow matching, SQ-codec).
        sampling_rate (`int`, *optional*, defaults to 24000):
            Sampling rate of the input and output waveforms.
        ssl_sampling_rate (`int`, *optional*, defaults to 16000):
            Sampling rate of the Whisper and WavLM inputs (the waveform is resampled with a windowed-sinc filter).
        resampling_lowpass_filter_width (`int`, *optional*, defaults to 6):
            Zero crossings of the windowed-sinc resampling filter on each side.
        resampling_rolloff (`float`, *optional*, defaults to 0.99):
            Roll-off of the resampling low-pass filter, as a fraction of the Nyquist frequency.
        whisper_n_fft (`int`, *optional*, defaults to 400):
            FFT size of the Whisper log-mel front end.
        whisper_hop_length (`int`, *optional*, defaults to 160):
            Hop length of the Whisper log-mel front end.
        whisper_chunk_length (`int`, *optional*, defaults to 30):
            Whisper always sees `whisper_chunk_length` seconds (zero-padded or truncated).
        wavlm_extra_samples (`int`, *optional*, defaults to 160):
            Zero samples appended to the 16 kHz waveform before WavLM.
        encode_window_samples (`int`, *optional*, defaults to 720240):
            Length of one encoding window of the LLM pipeline path (30 s plus 240 samples).
        segment_multiple (`int`, *optional*, defaults to 9600):
            Exact-length ("segment") encoding pads the waveform to a multiple of this many samples (0.4 s).
        reasoning_frame_rate (`float`, *optional*, defaults to 5.0):
            Frame rate of the reasoning codes.
        reconstruction_frame_rate (`float`, *optional*, defaults to 12.5):
            Frame rate of the reconstruction codes.
        encode_batch_size (`int`, *optional*, defaults to 6):
            Maximum number of 30 s windows encoded in one forward pass.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of freshly created weights.
    """

    model_type = "reasoning_codec"
    sub_configs_defaults = {
        "whisper_config": SubConfigSpec(config_class=WhisperConfig, init_kwargs=WHISPER_MEDIUM_KWARGS),
        "wavlm_config": SubConfigSpec(config_class=WavLMConfig, init_kwargs=WAVLM_BASE_KWARGS),
        "music_ssl_config": SubConfigSpec(config_class=ReasoningCodecMusicSSLConfig),
        "reasoning_config": SubConfigSpec(config_class=ReasoningCodecReasoningConfig),
        "reconstruction_config": SubConfigSpec(config_class=ReasoningCodecReconstructionConfig),
        "decoder_config": SubConfigSpec(config_class=ReasoningCodecDecoderConfig),
    }

    whisper_config: dict | PreTrainedConfig | None = None
    wavlm_config: dict | PreTrainedConfig | None = None
    music_ssl_config: dict | PreTrainedConfig | None = None
    reasoning_config: dict | PreTrainedConfig | None = None
    reconstruction_config: dict | PreTrainedConfig | None = None
    decoder_config: dict | PreTrainedConfig | None = None
    sampling_rate: int = 24000
    ssl_sampling_rate: int = 16000
    resampling_lowpass_filter_width: int = 6
    resampling_rolloff: float = 0.99
    whisper_n_fft: int = 400
    whisper_hop_length: int = 160
    whisper_chunk_length: int = 30
    wavlm_extra_samples: int = 160
    encode_window_samples: int = 720240
    segment_multiple: int = 9600
    reasoning_frame_rate: float = 5.0
    reconstruction_frame_rate: float = 12.5
    encode_batch_size: int = 6
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        # Partial dicts for the HF sub-configs are completed with the released geometry (not the library defaults).
        if isinstance(self.whisper_config, dict):
            self.whisper_config = {**WHISPER_MEDIUM_KWARGS, **self.whisper_config}
        if isinstance(self.wavlm_config, dict):
            self.wavlm_config = {**WAVLM_BASE_KWARGS, **self.wavlm_config}
        super().__post_init__(**kwargs)
        self.validate_codec()

    def validate_codec(self):
        """Checks that the sub-configs fit together (shared widths, frame-rate arithmetic)."""
        if self.reasoning_config.hidden_size != self.reconstruction_config.hidden_size:
            raise ValueError(
                f"The reasoning branch width ({self.reasoning_config.hidden_size}) must equal the reconstruction width "
                f"({self.reconstruction_config.hidden_size}): the reasoning features condition the FiLM layers."
            )
        if self.decoder_config.hidden_size != self.reconstruction_config.hidden_size:
            raise ValueError(
                f"decoder_config.hidden_size ({self.decoder_config.hidden_size}) must equal the reconstruction width "
                f"({self.reconstruction_config.hidden_size}): the decoder is conditioned on the quantized features."
            )
        if self.music_ssl_config.sampling_rate != self.sampling_rate:
            raise ValueError(
                f"music_ssl_config.sampling_rate ({self.music_ssl_config.sampling_rate}) must equal sampling_rate "
                f"({self.sampling_rate})."
            )
        latent_rate = self.music_ssl_config.frame_rate
        if latent_rate / self.reasoning_config.query_interval != self.reasoning_frame_rate:
            raise ValueError(
                f"music-SSL frame rate {latent_rate} / query interval {self.reasoning_config.query_interval} must "
                f"equal reasoning_frame_rate ({self.reasoning_frame_rate})."
            )
        if latent_rate / 2 != self.reconstruction_frame_rate:
            raise ValueError(
                f"reconstruction_frame_rate ({self.reconstruction_frame_rate}) must be half the music-SSL frame rate."
            )
        if self.segment_multiple % (self.music_ssl_config.samples_per_frame * 2 * self.reasoning_config.query_interval):
            raise ValueError(
                f"segment_multiple ({self.segment_multiple}) must be a multiple of "
                f"{self.music_ssl_config.samples_per_frame * 2 * self.reasoning_config.query_interval} samples."
            )

    @property
    def samples_per_reconstruction_frame(self) -> int:
        return int(round(self.sampling_rate / self.reconstruction_frame_rate))

    @property
    def num_reasoning_quantizers(self) -> int:
        return self.reasoning_config.num_quantizers

    @property
    def num_reconstruction_quantizers(self) -> int:
        return self.reconstruction_config.num_quantizers

    @property
    def whisper_num_samples(self) -> int:
        """Number of 16 kHz samples the Whisper front end pads or truncates to."""
        return self.whisper_chunk_length * self.ssl_sampling_rate

    @property
    def codec_dim(self) -> int:
        return self.reconstruction_config.hidden_size


ReasoningCodecConfig.register_for_auto_class()

__all__ = [
    "ReasoningCodecConfig",
    "ReasoningCodecMusicSSLConfig",
    "ReasoningCodecReasoningConfig",
    "ReasoningCodecReconstructionConfig",
]
