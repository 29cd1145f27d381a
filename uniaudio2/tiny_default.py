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
Tiny UniAudio 2.0 bundles (language model, ReasoningCodec, tokenizer, processor, pipelines).

* `build_tiny_default`: an *untrained* bundle with random weights, built deterministically from a seed in seconds.
  The tests use it to exercise the whole chain; its outputs carry no meaning.
* The geometry of the *trained* tiny default shipped in `pretrained/tiny-uniaudio2` (`small_codec_config`,
  `SMALL_LM_GEOMETRY`), which `recipes/train_tiny_default.py` trains on a synthesized corpus.
"""

import shutil
from pathlib import Path

import torch

from .configuration_uniaudio2 import UniAudio2Config
from .feature_extraction_uniaudio2 import UniAudio2FeatureExtractor
from .modeling_uniaudio2 import UniAudio2ForConditionalGeneration
from .processing_uniaudio2 import UniAudio2Processor, default_audio_special_ids
from .tasks_uniaudio2 import tag_names
from .utils_uniaudio2 import atomic_directory


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


def build_tiny_tokenizer(vocab_size: int = 400, corpus=None):
    """
    A byte-level BPE tokenizer with the UniAudio 2.0 special tokens, trained on `corpus` (an iterable of strings;
    defaults to a few embedded sentences).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(list(corpus) if corpus is not None else _CORPUS * 4, trainer=trainer)
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


def small_codec_config():
    """
    The geometry of the *trained* tiny default codec (`recipes/train_tiny_default.py`): 4 s encoder windows, 256-entry
    codebooks (reasoning 5 Hz x 8, reconstruction 12.5 Hz x 8 = 800 bit/s), 32-d SQ latents, a 4-layer DiT.
    """
    from .configuration_reasoning_codec import ReasoningCodecConfig

    chunk_seconds = 4
    return ReasoningCodecConfig(
        whisper_config={
            "d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_layers": 1,
            "decoder_attention_heads": 4, "decoder_ffn_dim": 128, "vocab_size": 8, "max_target_positions": 8,
            "max_source_positions": chunk_seconds * 50, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
            "decoder_start_token_id": 1,
        },
        wavlm_config={
            "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 128,
            "conv_dim": [32] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, "num_buckets": 32,
            "max_bucket_distance": 128,
        },
        music_ssl_config={
            "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 128, "conv_dim": 16,
            "conv_depthwise_kernel_size": 7, "acoustic_layer": 1, "semantic_layer": 3,
        },
        reasoning_config={
            "hidden_size": 128, "num_hidden_layers": 2, "head_dim": 32, "rotary_dim": 16, "codebook_size": 256,
            "codebook_dim": 16,
        },
        reconstruction_config={
            "hidden_size": 128, "codebook_size": 256, "codebook_dim": 16, "wavlm_layer_start": 1, "wavlm_layer_end": 4,
        },
        decoder_config={
            "hidden_size": 128, "latent_dim": 32, "dit_num_hidden_layers": 4, "dit_num_attention_heads": 4,
            "dit_attention_head_dim": 32, "dit_timestep_embedding_dim": 128, "sq_init_channel": 6,
            "num_inference_steps": 10, "guidance_scale": 1.5,
        },
        whisper_chunk_length=chunk_seconds,
        encode_window_samples=chunk_seconds * 24000 + 240,
        encode_batch_size=16,
    )


def build_tiny_codec(seed: int = 0):
    from .modeling_reasoning_codec import ReasoningCodecModel

    torch.manual_seed(seed)
    return ReasoningCodecModel(tiny_codec_config()).eval()


TINY_LM_GEOMETRY = dict(
    hidden_size=64, intermediate_size=128, num_understanding_layers=1, num_backbone_layers=2, num_generation_layers=1,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    depth_decoder_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8
    ),
)
"""Geometry of the untrained tiny LM used by the tests."""

SMALL_LM_GEOMETRY = dict(
    hidden_size=256, intermediate_size=768, num_understanding_layers=1, num_backbone_layers=4, num_generation_layers=1,
    num_attention_heads=8, num_key_value_heads=2, head_dim=32,
    depth_decoder_config=dict(
        hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=32,
    ),
)
"""Geometry of the trained tiny default LM (`recipes/train_tiny_default.py`)."""


def tiny_lm_config(tokenizer, codec_config, **geometry) -> UniAudio2Config:
    """A `UniAudio2Config` whose vocabulary and audio ids fit `tokenizer` and the codec (default: `TINY_LM_GEOMETRY`)."""
    audio_ids = default_audio_special_ids(
        codec_config.reasoning_config.codebook_size, codec_config.reconstruction_config.codebook_size
    )
    pad_token_id = tokenizer.convert_tokens_to_ids("<text_pad_token>")
    return UniAudio2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.convert_tokens_to_ids("<|begin_of_text|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|end_of_text|>"),
        pad_token_id=pad_token_id,
        text_pad_token_id=pad_token_id,
        **{**TINY_LM_GEOMETRY, **geometry},
        **audio_ids,
    )


def set_generation_defaults(
    model: UniAudio2ForConditionalGeneration, max_new_tokens: int = 32, max_new_frames: int = 64,
    min_reconstruction_frames: int = 0,
):
    """
    Generation defaults of UniAudio 2.0 bundles (the tiny ones and converted checkpoints): those of the reference
    inference scripts (greedy text, sampled audio with temperature 0.9 and top-k 50, no guidance), the length bounds
    given, and at least `min_reconstruction_frames` frames of generated audio.
    """
    generation_config = model.generation_config
    # Deliberate defaults, not derived from the model config: with the flag set, `GenerationConfig.from_pretrained`
    # would drop the audio entries below (`max_new_frames`, ...) when the bundle is loaded.
    generation_config._from_model_config = False
    generation_config.do_sample = False
    generation_config.max_new_tokens = max_new_tokens
    generation_config.bos_token_id = model.config.bos_token_id
    generation_config.eos_token_id = model.config.eos_token_id
    generation_config.pad_token_id = model.config.pad_token_id
    generation_config.max_new_frames = max_new_frames
    # Codebook sampling of audio mode: the depth decoder's settings, stored with its prefix (as CSM does); no
    # guidance (`guidance_scale` unset).
    generation_config.depth_decoder_do_sample = True
    generation_config.depth_decoder_temperature = 0.9
    generation_config.depth_decoder_top_k = 50
    generation_config.min_reconstruction_frames = min_reconstruction_frames
    return model


def build_tiny_lm(tokenizer, codec_config, seed: int = 0) -> UniAudio2ForConditionalGeneration:
    config = tiny_lm_config(tokenizer, codec_config)
    torch.manual_seed(seed)
    return set_generation_defaults(UniAudio2ForConditionalGeneration(config).eval())


def build_processor(tokenizer, codec, model_config) -> UniAudio2Processor:
    """The processor of a bundle: `tokenizer`, a feature extractor owning `codec`, the model's audio special ids."""
    feature_extractor = UniAudio2FeatureExtractor(sampling_rate=codec.config.sampling_rate)
    feature_extractor.set_codec(codec)
    return UniAudio2Processor(
        feature_extractor, tokenizer, audio_special_ids={key: getattr(model_config, key) for key in default_audio_special_ids()}
    )


CODEC_ENCODE_PATH_PREFIXES = (
    "whisper_encoder.", "wavlm_encoder.", "music_ssl_encoder.", "reasoning_encoder.", "reconstruction_encoder."
)
"""Codec weights that produce the tokens: nearest-codeword search is sensitive to their rounding (in float16 about a
quarter of the reasoning codes of the tiny default change), so a reduced-precision bundle keeps them in float32."""


def cast_safetensors_file(path: str | Path, dtype: torch.dtype, keep_prefixes: tuple[str, ...] = ()) -> None:
    """
    Rewrite the floating-point tensors of a safetensors file in `dtype` (other tensors and the metadata as they are).
    Tensors whose name starts with one of `keep_prefixes` keep their precision unless `dtype` holds them exactly
    (e.g. weights released in float16).
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
        tensors = {name: file.get_tensor(name) for name in file.keys()}
    for name, value in tensors.items():
        if not value.is_floating_point():
            continue
        cast = value.to(dtype)
        if not name.startswith(keep_prefixes) or torch.equal(cast.to(value.dtype), value):
            tensors[name] = cast
    mode = Path(path).stat().st_mode
    save_file(tensors, str(path), metadata=metadata)
    Path(path).chmod(mode)  # safetensors writes a new file, with the restrictive mode of a temporary file


def save_bundle(
    model,
    processor,
    output_dir,
    card: str | Path | None = None,
    extra_files: dict | None = None,
    storage_dtype: torch.dtype | None = None,
) -> Path:
    """
    Save model + processor (+ `card` as README.md, + `extra_files` `{path in the bundle: source file}`) to
    `output_dir`: written to a temporary directory, then moved. `storage_dtype` (e.g. `torch.float16`) stores the
    weights of the model and of the codec's decoder in that precision to keep the bundle small (the codec's
    tokenizing branches stay as they are, see `CODEC_ENCODE_PATH_PREFIXES`); the configs keep the dtype the models run
    in, so `from_pretrained` (whose default `dtype="auto"` reads the config) loads them back in it.
    """
    with atomic_directory(output_dir) as tmp_dir:
        model.save_pretrained(tmp_dir)
        processor.save_pretrained(tmp_dir)
        if storage_dtype is not None:
            cast_safetensors_file(tmp_dir / "model.safetensors", storage_dtype)
            codec_dir = tmp_dir / processor.feature_extractor.codec_subfolder
            for weights in sorted(codec_dir.glob("*.safetensors")):
                cast_safetensors_file(weights, storage_dtype, keep_prefixes=CODEC_ENCODE_PATH_PREFIXES)
        if card is not None and Path(card).is_file():
            shutil.copy(card, tmp_dir / "README.md")
        for name, source in (extra_files or {}).items():
            shutil.copy(source, tmp_dir / name)
    return Path(output_dir)


def build_tiny_default(output_dir, seed: int = 0) -> Path:
    """Build and save the untrained tiny bundle (random weights, used by the tests) to `output_dir`."""
    tokenizer = build_tiny_tokenizer()
    codec = build_tiny_codec(seed)
    model = build_tiny_lm(tokenizer, codec.config, seed)
    card = Path(__file__).resolve().parents[1] / "model_cards" / "tiny-uniaudio2-random.md"
    return save_bundle(model, build_processor(tokenizer, codec, model.config), output_dir, card)


__all__ = [
    "CODEC_ENCODE_PATH_PREFIXES", "SMALL_LM_GEOMETRY", "TINY_LM_GEOMETRY", "build_processor", "build_tiny_codec", "build_tiny_default", "build_tiny_lm",
    "build_tiny_tokenizer", "cast_safetensors_file", "save_bundle", "set_generation_defaults", "small_codec_config", "tiny_codec_config",
    "tiny_lm_config",
]
