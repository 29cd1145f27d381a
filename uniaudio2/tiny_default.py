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
"""
The embedded tiny default: a complete UniAudio 2.0 bundle (language model, ReasoningCodec, tokenizer, processor,
pipelines) with tiny shapes, built deterministically from a seed and saved like a converted checkpoint.

Its weights are random (untrained): it exercises the whole chain, its outputs carry no meaning.
"""

import shutil
import tempfile
from pathlib import Path

import torch

from .configuration_uniaudio2 import UniAudio2Config
from .feature_extraction_uniaudio2 import UniAudio2FeatureExtractor
from .modeling_uniaudio2 import UniAudio2ForConditionalGeneration
from .processing_uniaudio2 import UniAudio2Processor, default_audio_special_ids
from .tasks_uniaudio2 import tag_names


SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<think>", "</think>", *tag_names(), "<answer>", "</answer>", "<reason_token>", "<semantic_token>",
    "<text_pad_token>",
]

_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "speech recognition text to speech audio caption music caption",
    "listen the audio then answer the user's question",
    "a man speaks in a quiet room while a dog barks outside",
    "calm piano music with soft strings and a slow tempo",
    "hello world this is a tiny model for testing the whole chain",
    "zero one two three four five six seven eight nine ten",
]


def build_tiny_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on a few embedded sentences, with the UniAudio 2.0 special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<text_pad_token>",
    )


def tiny_codec_config():
    from .configuration_reasoning_codec import ReasoningCodecConfig

    return ReasoningCodecConfig(
        whisper_config={
            "d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_layers": 1,
            "decoder_attention_heads": 2, "decoder_ffn_dim": 32, "vocab_size": 8, "max_target_positions": 8,
            "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1,
        },
        wavlm_config={
            "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 32,
            "conv_dim": [8] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, "num_buckets": 16,
            "max_bucket_distance": 32,
        },
        music_ssl_config={
            "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 32, "conv_dim": 4,
            "conv_depthwise_kernel_size": 3, "acoustic_layer": 1, "semantic_layer": 2,
        },
        reasoning_config={
            "hidden_size": 32, "num_hidden_layers": 1, "head_dim": 16, "rotary_dim": 8, "codebook_size": 32,
            "codebook_dim": 4,
        },
        reconstruction_config={
            "hidden_size": 32, "codebook_size": 64, "codebook_dim": 4, "wavlm_layer_start": 1, "wavlm_layer_end": 3,
        },
        decoder_config={
            "hidden_size": 32, "dit_num_hidden_layers": 1, "dit_num_attention_heads": 2, "dit_attention_head_dim": 8,
            "sq_init_channel": 2, "num_inference_steps": 2,
        },
    )


def build_tiny_codec(seed: int = 0):
    from .modeling_reasoning_codec import ReasoningCodecModel

    torch.manual_seed(seed)
    return ReasoningCodecModel(tiny_codec_config()).eval()


def build_tiny_lm(tokenizer, codec_config, seed: int = 0) -> UniAudio2ForConditionalGeneration:
    audio_ids = default_audio_special_ids(
        codec_config.reasoning_config.codebook_size, codec_config.reconstruction_config.codebook_size
    )
    config = UniAudio2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_understanding_layers=1,
        num_backbone_layers=2,
        num_generation_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|begin_of_text|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|end_of_text|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<text_pad_token>"),
        text_pad_token_id=tokenizer.convert_tokens_to_ids("<text_pad_token>"),
        depth_decoder_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8,
        ),
        **{key: value for key, value in audio_ids.items()},
    )
    torch.manual_seed(seed)
    model = UniAudio2ForConditionalGeneration(config).eval()
    generation_config = model.generation_config
    generation_config.do_sample = False
    generation_config.max_new_tokens = 32
    generation_config.eos_token_id = config.eos_token_id
    generation_config.pad_token_id = config.pad_token_id
    generation_config.max_new_frames = 64
    generation_config.audio_do_sample = True
    generation_config.audio_temperature = 0.9
    generation_config.audio_top_k = 50
    return model


def build_tiny_default(output_dir, seed: int = 0) -> Path:
    """Build and save the tiny default bundle to `output_dir` (written to a temporary directory, then moved)."""
    output_dir = Path(output_dir)
    tokenizer = build_tiny_tokenizer()
    codec = build_tiny_codec(seed)
    model = build_tiny_lm(tokenizer, codec.config, seed)
    feature_extractor = UniAudio2FeatureExtractor(sampling_rate=codec.config.sampling_rate)
    feature_extractor.set_codec(codec)
    processor = UniAudio2Processor(
        feature_extractor, tokenizer, audio_special_ids={key: getattr(model.config, key) for key in default_audio_special_ids()}
    )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".tiny-uniaudio2-", dir=output_dir.parent))
    try:
        model.save_pretrained(tmp_dir)
        processor.save_pretrained(tmp_dir)
        card = Path(__file__).resolve().parents[1] / "model_cards" / "tiny-uniaudio2.md"
        if card.is_file():
            shutil.copy(card, tmp_dir / "README.md")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        tmp_dir.rename(output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return output_dir


__all__ = ["build_tiny_default", "build_tiny_tokenizer", "build_tiny_codec", "build_tiny_lm", "tiny_codec_config"]
