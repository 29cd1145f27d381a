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
"""Feature extractor of UniAudio 2.0: validated 24 kHz mono audio, and its ReasoningCodec tokens."""

import copy
from pathlib import Path

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging


logger = logging.get_logger(__name__)

_INTEGER_SCALES = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0, np.dtype(np.int8): 128.0}


def read_audio_file(path) -> tuple[np.ndarray, int]:
    """`(samples, sampling_rate)` of an audio file (float32, channels last), with clear errors for bad files."""
    import soundfile

    if not Path(path).is_file():
        raise FileNotFoundError(f"Audio file not found: {path}")
    try:
        return soundfile.read(path, dtype="float32", always_2d=False)
    except (RuntimeError, OSError) as error:  # soundfile raises LibsndfileError (a RuntimeError) on bad files
        raise ValueError(f"{path}: could not read it as audio ({error})") from error


def _as_array(audio) -> np.ndarray:
    """One clip as a numpy array in its own dtype (bfloat16 and other float tensors numpy lacks become float32)."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu()
        if audio.is_floating_point() and audio.dtype not in (torch.float16, torch.float32, torch.float64):
            audio = audio.float()
        try:
            return audio.numpy()
        except TypeError as error:  # dtypes numpy has no equivalent of
            raise ValueError(f"Unsupported audio dtype {audio.dtype}: use float samples in [-1, 1] or int8/16/32 PCM.") from error
    if isinstance(audio, (list, tuple)):
        try:
            return np.asarray(audio)
        except ValueError as error:
            raise ValueError(
                "Audio given as a list must hold numbers (one clip) or equal-length rows (channels); got a ragged or "
                f"mixed list ({error})."
            ) from error
    if not isinstance(audio, np.ndarray):
        raise ValueError(f"Audio must be a numpy array, a torch tensor or a list of samples, got {type(audio).__name__}.")
    return audio


def as_code_tensor(codes, name: str) -> torch.LongTensor:
    """Codes (tensor, array or nested list of integers) as a LongTensor; a `ValueError` for anything else."""
    try:
        if isinstance(codes, torch.Tensor):
            tensor = codes
        elif isinstance(codes, (list, tuple)) and codes and all(isinstance(item, torch.Tensor) for item in codes):
            tensor = torch.stack(list(codes))
        else:  # through numpy, which keeps the integer dtype of (possibly empty) arrays
            tensor = torch.as_tensor(np.asarray(codes))
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be integer arrays, got {type(codes).__name__} ({error}).") from error
    if tensor.numel() == 0 and not isinstance(codes, (torch.Tensor, np.ndarray)):
        tensor = tensor.long()  # empty nested lists carry no dtype: let the shape check name the problem
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"{name} must be integers, got dtype {tensor.dtype}.")
    return tensor.long()


class UniAudio2FeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns raw audio into what UniAudio 2.0 consumes: a validated 24 kHz mono float waveform, and (with the
    ReasoningCodec it owns) reasoning tokens (5 Hz) and reconstruction tokens (12.5 Hz).

    Accepted audio: numpy arrays, torch tensors or lists; float (any precision) in [-1, 1], or int8/int16/int32 PCM
    (scaled to [-1, 1]); mono `(num_samples,)` or multi-channel `(channels, num_samples)` / `(num_samples, channels)`
    (averaged to mono; at most 8 channels). A list whose items are arrays, tensors or lists is a batch of clips. Audio
    at another (positive integer) sampling rate is resampled with soxr. A missing or invalid sampling rate, an
    unsupported dtype (bool, complex, uint16, int64, object, ...) or layout (0-d, 3-d), empty, non-finite,
    out-of-range or overlong audio, or a clip shorter than one sample at 24 kHz, raises a `ValueError` that says what
    is wrong, before any resampling or encoding.

    The codec weights are not part of this JSON config: they live in the `codec_subfolder` of the directory the
    extractor is saved to / loaded from, and are loaded on first use (in the `dtype` given to `from_pretrained`, if
    any: its tokenizing path stays float32, so the codes do not depend on it). [`~UniAudio2FeatureExtractor.place_codec`]
    puts it on a device (the pipelines put it on the model's); `encode` and `decode` run there and return CPU outputs.

    Args:
        feature_size (`int`, *optional*, defaults to 1):
            Number of channels of the returned waveform.
        sampling_rate (`int`, *optional*, defaults to 24000):
            Sampling rate of the codec.
        padding_value (`float`, *optional*, defaults to 0.0):
            Value used to pad batched waveforms.
        max_duration (`float`, *optional*, defaults to 600.0):
            Longest accepted clip, in seconds.
        codec_subfolder (`str`, *optional*, defaults to `"codec"`):
            Subfolder holding the ReasoningCodec weights.
    """

    model_input_names = ["input_values", "padding_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 24000,
        padding_value: float = 0.0,
        max_duration: float = 600.0,
        codec_subfolder: str = "codec",
        **kwargs,
    ):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.max_duration = max_duration
        self.codec_subfolder = codec_subfolder
        self._codec = None
        self._codec_source = None
        self._codec_placement = None

    # ------------------------------------------------------------------------------------------------ codec handling
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        extractor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        extractor.set_codec_source(pretrained_model_name_or_path, **kwargs)
        return extractor

    def set_codec_source(self, pretrained_model_name_or_path, **hub_kwargs) -> None:
        """Load the codec, on first use, from the `codec_subfolder` of this directory or hub repository."""
        keys = ("cache_dir", "force_download", "local_files_only", "token", "revision", "dtype")
        self._codec_source = (str(pretrained_model_name_or_path), {k: v for k, v in hub_kwargs.items() if k in keys})

    @property
    def codec(self):
        """The ReasoningCodecModel, loaded from the `codec_subfolder` on first use."""
        if self._codec is None:
            if self._codec_source is None:
                raise ValueError(
                    "This feature extractor has no codec: call `set_codec(ReasoningCodecModel...)` or "
                    "`set_codec_source(directory)`, or load it with `UniAudio2FeatureExtractor.from_pretrained` or "
                    "`AutoProcessor.from_pretrained` from a directory that has a codec subfolder (`AutoFeatureExtractor` "
                    "does not tell the feature extractor which directory it was loaded from)."
                )
            from .modeling_reasoning_codec import ReasoningCodecModel

            path, hub_kwargs = self._codec_source
            local = Path(path) / self.codec_subfolder
            if Path(path).is_dir() and not (local / "config.json").is_file():
                raise FileNotFoundError(f"No codec found in {local} (expected config.json and weights there).")
            self._codec = ReasoningCodecModel.from_pretrained(path, subfolder=self.codec_subfolder, **hub_kwargs).eval()
            self._place_loaded_codec()
        return self._codec

    def place_codec(self, device=None, dtype=None) -> None:
        """
        Put the codec on `device` and its decoder in `dtype` (the tokenizing path stays float32), now if it is loaded,
        else when it is. `None` leaves that property as it is.
        """
        self._codec_placement = (None if device is None else torch.device(device), dtype)
        if self._codec is not None:
            self._place_loaded_codec()

    def _place_loaded_codec(self) -> None:
        if self._codec_placement is None:
            return
        device, dtype = self._codec_placement
        codec = self._codec
        if (device is not None and codec.device != device) or (dtype is not None and codec.decoder_dtype != dtype):
            codec.to(device=device, dtype=dtype)

    @property
    def has_codec(self) -> bool:
        return self._codec is not None or self._codec_source is not None

    def set_codec(self, codec) -> None:
        """Attach a ReasoningCodecModel instance."""
        self._codec = codec
        if codec is not None and codec.config.sampling_rate != self.sampling_rate:
            raise ValueError(
                f"The codec works at {codec.config.sampling_rate} Hz but this extractor at {self.sampling_rate} Hz."
            )

    def save_codec(self, save_directory) -> None:
        """Write the codec (loading it first if only its source is known) to `save_directory/codec_subfolder`."""
        if not self.has_codec:
            return
        self.codec.save_pretrained(Path(save_directory) / self.codec_subfolder)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        result = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        self.save_codec(save_directory)
        return result

    def to_dict(self):
        output = super().to_dict()
        output.pop("_codec", None)
        output.pop("_codec_source", None)
        output.pop("_codec_placement", None)
        return output

    def __deepcopy__(self, memo):
        # Share the codec (a large model) between copies instead of duplicating it.
        clone = copy.copy(self)
        clone.__dict__ = {key: (value if key == "_codec" else copy.deepcopy(value, memo)) for key, value in self.__dict__.items()}
        return clone

    # -------------------------------------------------------------------------------------------- audio validation
    def to_mono_float(self, audio, sampling_rate: int | None) -> np.ndarray:
        """Validate one clip and return it as float32 mono at `self.sampling_rate`."""
        if sampling_rate is None:
            raise ValueError(
                f"Pass the `sampling_rate` of the audio (this extractor works at {self.sampling_rate} Hz and resamples "
                "other rates); it cannot be guessed from the samples."
            )
        if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
            raise ValueError(f"`sampling_rate` must be a positive integer, got {sampling_rate!r}.")
        audio = _as_array(audio)
        if audio.dtype in _INTEGER_SCALES:
            audio = audio.astype(np.float32) / _INTEGER_SCALES[audio.dtype]
        elif audio.dtype == np.uint8:
            audio = (audio.astype(np.float32) - 128.0) / 128.0
        elif not np.issubdtype(audio.dtype, np.floating):
            raise ValueError(f"Unsupported audio dtype {audio.dtype}: use float samples in [-1, 1] or int8/16/32 PCM.")
        if audio.ndim not in (1, 2):
            raise ValueError(f"Audio must be 1-D (mono) or 2-D (multi-channel), got shape {audio.shape}.")
        if audio.size == 0:
            raise ValueError(f"Audio is empty (shape {audio.shape}).")
        if audio.ndim == 2:
            # (channels, samples) or (samples, channels): the channel axis is the short one.
            channel_axis = 0 if audio.shape[0] <= audio.shape[1] else 1
            if audio.shape[channel_axis] > 8:
                raise ValueError(f"Cannot tell the channel axis of audio with shape {audio.shape}; pass mono audio.")
        # Checked in the input's own precision, so that huge float64 values are not reported as "infinite" float32.
        if not np.isfinite(audio).all():
            raise ValueError("Audio contains NaN or infinite samples.")
        num_samples = audio.shape[1 - channel_axis] if audio.ndim == 2 else audio.shape[0]
        duration = num_samples / sampling_rate
        if duration > self.max_duration:
            raise ValueError(
                f"Audio is {duration:.1f} s long, more than max_duration={self.max_duration:.0f} s; split it into chunks."
            )
        peak = float(np.abs(audio).max())
        if peak > 1.0 + 1e-3:
            raise ValueError(
                f"Float audio must lie in [-1, 1] (peak {peak:.3g}); integer PCM should be passed with its integer dtype."
            )
        audio = audio.astype(np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=channel_axis)
        if round(num_samples * self.sampling_rate / sampling_rate) == 0:
            raise ValueError(
                f"Audio of {num_samples} samples at {sampling_rate} Hz is shorter than one sample at "
                f"{self.sampling_rate} Hz."
            )
        if sampling_rate != self.sampling_rate:
            import soxr

            audio = soxr.resample(audio, sampling_rate, self.sampling_rate, quality="HQ").astype(np.float32)
        return np.ascontiguousarray(audio)

    def __call__(
        self,
        raw_audio,
        sampling_rate: int | None = None,
        padding: bool = True,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """
        Validate and batch audio.

        Args:
            raw_audio (`np.ndarray`, `torch.Tensor`, or a list of them):
                One clip or a list of clips (see the class docstring for accepted layouts and dtypes).
            sampling_rate (`int`):
                Sampling rate of `raw_audio` (required).

        Returns:
            [`BatchFeature`] with `input_values` `(batch, 1, num_samples)` (24 kHz, float32, right-padded) and
            `padding_mask` `(batch, num_samples)` (1 on real samples).
        """
        clips = self._split_batch(raw_audio)
        clips = [self.to_mono_float(clip, sampling_rate) for clip in clips]
        length = max(clip.shape[0] for clip in clips)
        values = np.full((len(clips), 1, length), self.padding_value, dtype=np.float32)
        mask = np.zeros((len(clips), length), dtype=np.int64)
        for row, clip in enumerate(clips):
            values[row, 0, : clip.shape[0]] = clip
            mask[row, : clip.shape[0]] = 1
        return BatchFeature({"input_values": values, "padding_mask": mask}, tensor_type=return_tensors)

    @staticmethod
    def _split_batch(raw_audio) -> list:
        if isinstance(raw_audio, (list, tuple)):
            if len(raw_audio) == 0:
                raise ValueError("Audio is empty: got an empty list.")
            if all(isinstance(item, (np.ndarray, torch.Tensor, list, tuple)) for item in raw_audio):
                return list(raw_audio)
            return [raw_audio]  # one clip given as a list of samples
        return [raw_audio]

    # ------------------------------------------------------------------------------------------------------ tokens
    @torch.no_grad()
    def encode(self, raw_audio, sampling_rate: int | None = None) -> list[tuple[torch.LongTensor, torch.LongTensor]]:
        """
        Tokenize audio with the codec.

        Returns:
            One `(reasoning_codes (8, T_r), reconstruction_codes (8, T_s))` pair of LongTensors per clip, in codec
            layout (codebooks first), without special frames.
        """
        features = self(raw_audio, sampling_rate=sampling_rate, return_tensors="pt")
        codec = self.codec
        out = codec.encode(
            features["input_values"].to(codec.device), padding_mask=features["padding_mask"].to(codec.device)
        )
        pairs = []
        for row in range(features["input_values"].shape[0]):
            reasoning = out.reasoning_codes[row][:, out.reasoning_padding_mask[row].bool()]
            reconstruction = out.reconstruction_codes[row][:, out.reconstruction_padding_mask[row].bool()]
            pairs.append((reasoning.cpu(), reconstruction.cpu()))
        return pairs

    @torch.no_grad()
    def decode(self, reconstruction_codes, generator: torch.Generator | None = None, **decode_kwargs) -> list[np.ndarray]:
        """
        Turn reconstruction codes (one `(8, T_s)` tensor per clip, offset removed) into 24 kHz float waveforms.

        `reconstruction_codes` is a list of integer `(codebooks, frames)` arrays / tensors / nested lists, or one
        `(batch, codebooks, frames)` tensor; codes outside the codebook raise a `ValueError` (from the codec).
        """
        if isinstance(reconstruction_codes, (torch.Tensor, np.ndarray)) and reconstruction_codes.ndim != 3:
            raise ValueError(
                "Reconstruction codes must be a list of (codebooks, frames) tensors or one (batch, codebooks, frames) "
                f"tensor, got a tensor of shape {tuple(reconstruction_codes.shape)}."
            )
        if not isinstance(reconstruction_codes, (list, tuple, torch.Tensor, np.ndarray)):
            raise ValueError(
                f"Reconstruction codes must be a list of (codebooks, frames) tensors, got {type(reconstruction_codes).__name__}."
            )
        codec = self.codec
        waveforms = []
        for codes in reconstruction_codes:
            codes = as_code_tensor(codes, "Reconstruction codes")
            if codes.ndim != 2 or codes.shape[1] == 0:
                raise ValueError(f"Reconstruction codes must have shape (codebooks, frames>0), got {tuple(codes.shape)}.")
            out = codec.decode(codes[None].to(codec.device), generator=generator, **decode_kwargs)
            audio = out.audio_values if hasattr(out, "audio_values") else out[0]
            waveforms.append(audio[0, 0].float().cpu().numpy())
        return waveforms


UniAudio2FeatureExtractor.register_for_auto_class()

__all__ = ["UniAudio2FeatureExtractor", "as_code_tensor", "read_audio_file"]
