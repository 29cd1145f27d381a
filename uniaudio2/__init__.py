"""UniAudio 2.0 for Hugging Face Transformers: the unified text + audio language model and its ReasoningCodec."""

from .configuration_reasoning_codec import ReasoningCodecConfig
from .configuration_reasoning_codec_decoder import ReasoningCodecDecoderConfig
from .configuration_uniaudio2 import UniAudio2Config, UniAudio2DepthDecoderConfig
from .feature_extraction_uniaudio2 import UniAudio2FeatureExtractor
from .generation_uniaudio2 import UniAudio2AudioGenerationOutput, UniAudio2GenerationMixin
from .modeling_reasoning_codec import ReasoningCodecModel
from .modeling_uniaudio2 import (
    UniAudio2DepthDecoder,
    UniAudio2ForConditionalGeneration,
    UniAudio2Model,
    UniAudio2PreTrainedModel,
)
from .processing_uniaudio2 import UniAudio2Processor


__version__ = "0.1.0.dev0"

__all__ = [
    "ReasoningCodecConfig",
    "ReasoningCodecDecoderConfig",
    "ReasoningCodecModel",
    "UniAudio2AudioGenerationOutput",
    "UniAudio2Config",
    "UniAudio2DepthDecoder",
    "UniAudio2DepthDecoderConfig",
    "UniAudio2FeatureExtractor",
    "UniAudio2ForConditionalGeneration",
    "UniAudio2GenerationMixin",
    "UniAudio2Model",
    "UniAudio2PreTrainedModel",
    "UniAudio2Processor",
]
