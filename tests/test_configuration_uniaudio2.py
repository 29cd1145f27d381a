import pytest
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from conftest import tiny_uniaudio2_config
from uniaudio2.configuration_uniaudio2 import UniAudio2Config, UniAudio2DepthDecoderConfig


def test_defaults_match_the_released_model():
    config = UniAudio2Config()
    assert (config.num_understanding_layers, config.num_backbone_layers, config.num_generation_layers) == (3, 28, 2)
    assert config.num_hidden_layers == 33
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (3072, 24, 8, 128)
    assert config.vocab_size == 128256 and config.tie_word_embeddings is False
    assert config.rope_parameters["rope_type"] == "llama3" and config.rope_parameters["factor"] == 32.0
    assert config.num_codebooks == 8
    assert config.codebook_loss_weights == [2, 2, 2, 1, 1, 1, 1, 1] and config.text_loss_weight == 1.6
    decoder = config.depth_decoder_config
    assert isinstance(decoder, UniAudio2DepthDecoderConfig)
    assert (decoder.hidden_size, decoder.num_hidden_layers, decoder.num_attention_heads, decoder.head_dim) == (2048, 4, 32, 64)
    assert decoder.backbone_hidden_size == 3072 and decoder.audio_vocab_size == config.audio_vocab_size


def test_round_trip(tmp_path):
    config = tiny_uniaudio2_config(audio_loss_normalization="labeled_frames")
    config.save_pretrained(tmp_path)
    loaded = UniAudio2Config.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert isinstance(loaded.depth_decoder_config, UniAudio2DepthDecoderConfig)
    assert UniAudio2Config.from_dict(config.to_dict()).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_hidden_layers": 7}, "num_hidden_layers"),
        ({"num_key_value_heads": 3}, "multiple"),
        ({"reasoning_eos_token_id": 30}, "reasoning range"),
        ({"reconstruction_eos_token_id": 5}, "reasoning offset"),
        ({"codebook_loss_weights": [1.0, 1.0]}, "one per codebook"),
        ({"audio_loss_normalization": "mean"}, "audio_loss_normalization"),
        ({"text_pad_token_id": 96}, "text_pad_token_id"),
        ({"num_backbone_layers": 0}, "num_backbone_layers"),
    ],
)
def test_validation_raises_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_uniaudio2_config(**overrides)


def test_depth_decoder_follows_the_language_model():
    config = tiny_uniaudio2_config(num_codebooks=8, hidden_size=48, num_attention_heads=6, num_key_value_heads=3)
    assert config.depth_decoder_config.backbone_hidden_size == 48
    assert config.depth_decoder_config.audio_vocab_size == 40


@pytest.mark.parametrize(
    "overrides, name, value",
    [({"eos_token_id": 1000}, "eos_token_id", 1000), ({"eos_token_id": [81, 1001]}, "eos_token_id", 1001),
     ({"pad_token_id": -1}, "pad_token_id", -1), ({"bos_token_id": 97}, "bos_token_id", 97)],
)
def test_text_special_ids_outside_the_vocabulary_warn_like_the_library(overrides, name, value):
    # The library only warns here (Hub configs carry e.g. `pad_token_id=-1`); the model still builds and runs.
    with CaptureLogger(logging.get_logger("uniaudio2.configuration_uniaudio2")) as captured:
        config = tiny_uniaudio2_config(**overrides)
    assert f"{name} must be `None` or an integer within the vocabulary" in captured.out and f"got {value}" in captured.out
    assert getattr(config, name) == overrides[name]
