"""UniAudio 2.0 for Hugging Face Transformers: the unified text + audio language model and its ReasoningCodec."""

from .configuration_uniaudio2 import UniAudio2Config, UniAudio2DepthDecoderConfig
from .generation_uniaudio2 import UniAudio2AudioGenerationOutput, UniAudio2GenerationMixin
from .modeling_uniaudio2 import (
    UniAudio2DepthDecoder,
    UniAudio2ForConditionalGeneration,
    UniAudio2Model,
    UniAudio2PreTrainedModel,
)


__version__ = "0.1.0.dev0"

__all__ = [
    "UniAudio2AudioGenerationOutput",
    "UniAudio2Config",
    "UniAudio2DepthDecoder",
    "UniAudio2DepthDecoderConfig",
    "UniAudio2ForConditionalGeneration",
    "UniAudio2GenerationMixin",
    "UniAudio2Model",
    "UniAudio2PreTrainedModel",
]
