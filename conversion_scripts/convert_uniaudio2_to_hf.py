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
Convert an original UniAudio 2.0 language-model checkpoint (`Model_stage3`, lit-gpt layout) to a transformers
directory loadable with `AutoModel.from_pretrained(..., trust_remote_code=True)`.

Inputs:
* the released checkpoint `llm_ep*.checkpoint` with its training config `llm_config.yaml`, or
* the fixture format of `shared/fixtures/reference_llm/` (`checkpoint.pt` + `config.json` of hyperparameters).

Usage:

```bash
python conversion_scripts/convert_uniaudio2_to_hf.py \
    --checkpoint_path ../shared/fixtures/reference_llm/checkpoint.pt \
    --config_path ../shared/fixtures/reference_llm/config.json \
    --output_dir /tmp/uniaudio2-tiny --verify_against ../shared/fixtures/reference_llm
```

`--verify_against DIR` runs the fixture's recorded inputs through the converted model (reloaded from the output
directory) and compares the text and codebook logits, the losses and the greedy text/audio generation traces. The
last printed line is
`parity: max_abs_diff_text=<x> max_abs_diff_audio=<y> loss_diff=<z> traces_equal=<True|False>` and the exit status
is non-zero when a difference exceeds the tolerance (1e-4) or a trace differs.
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding


REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from uniaudio2.configuration_uniaudio2 import UniAudio2Config  # noqa: E402
from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration  # noqa: E402
from uniaudio2.tiny_default import set_generation_defaults  # noqa: E402


TOLERANCE = 1e-4

# lit-gpt stack prefix → (our layer-list prefix, our final-norm name)
STACKS = {
    "backbone": ("model.layers", "model.norm"),
    "audio_understanding_expert": ("model.understanding_layers", "model.understanding_norm"),
    "audio_generation_expert": ("model.generation_layers", "model.generation_norm"),
    "decoder": ("depth_decoder.layers", "depth_decoder.norm"),
}
SIMPLE_KEYS = {
    "backbone.transformer.wte.weight": "model.embed_tokens.weight",
    "backbone.lm_head.weight": "lm_head.weight",
    "audio_embeddings.weight": "model.embed_audio_tokens.weight",
    "projection.weight": "depth_decoder.input_projection.weight",
    "audio_head": "depth_decoder.codebooks_head",
}
BLOCK_KEYS = {
    "norm_1.weight": "input_layernorm.weight",
    "norm_2.weight": "post_attention_layernorm.weight",
    "attn.proj.weight": "self_attn.o_proj.weight",
    "mlp.fc_1.weight": "mlp.gate_proj.weight",
    "mlp.fc_2.weight": "mlp.up_proj.weight",
    "mlp.proj.weight": "mlp.down_proj.weight",
}
BLOCK_PATTERN = re.compile(r"^(?P<stack>[a-z_]+)\.transformer\.h\.(?P<layer>\d+)\.(?P<rest>.+)$")
NORM_PATTERN = re.compile(r"^(?P<stack>[a-z_]+)\.transformer\.ln_f\.weight$")
# Non-persistent in the original (RoPE tables, KV caches); tolerated if a checkpoint carries them.
IGNORED_ORIGINAL_KEYS = re.compile(r"(^|\.)(cos|sin|mask_cache|kv_cache\..*)$")


class ConversionError(ValueError):
    """Raised when a checkpoint does not match the expected original layout."""


def load_original_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load the model state dict of an original training checkpoint (safe `weights_only` loading, `module.` stripped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # corrupt or non-checkpoint files
        raise ConversionError(f"Could not read {path} as a PyTorch checkpoint: {error}") from error
    state_dict = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ConversionError(f"{path} holds no model state dict (expected a dict of tensors, optionally under 'model').")
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def map_original_key(key: str) -> list[str]:
    """Name(s) of our parameter(s) for one original key (a fused `attn.qkv` maps to q/k/v projections)."""
    if key in SIMPLE_KEYS:
        return [SIMPLE_KEYS[key]]
    match = NORM_PATTERN.match(key)
    if match and match["stack"] in STACKS:
        return [STACKS[match["stack"]][1] + ".weight"]
    match = BLOCK_PATTERN.match(key)
    if match and match["stack"] in STACKS:
        prefix = f"{STACKS[match['stack']][0]}.{match['layer']}"
        if match["rest"] == "attn.qkv.weight":
            return [f"{prefix}.self_attn.{name}_proj.weight" for name in ("q", "k", "v")]
        if match["rest"] in BLOCK_KEYS:
            return [f"{prefix}.{BLOCK_KEYS[match['rest']]}"]
    raise ConversionError(f"Unknown key in the original checkpoint: {key!r}")


def _stack_config(config: UniAudio2Config, stack: str):
    """Object with the attention shapes (heads, KV heads, head dim) of one original stack."""
    if stack == "decoder":
        return config.depth_decoder_config
    name = {"backbone": "backbone", "audio_understanding_expert": "understanding", "audio_generation_expert": "generation"}
    return argparse.Namespace(**config.stack_shapes(name[stack]))


def convert_state_dict(original: dict[str, torch.Tensor], config: UniAudio2Config) -> dict[str, torch.Tensor]:
    """
    Map an original `Model_stage3` state dict to our parameter names. Strict: unknown keys, missing keys and shape
    mismatches raise a `ConversionError` that names them.
    """
    model_keys = _expected_shapes(config)
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in original.items():
        if IGNORED_ORIGINAL_KEYS.search(key):
            continue
        try:
            names = map_original_key(key)
        except ConversionError:
            unknown.append(key)
            continue
        if len(names) == 3:  # fused qkv: rows [q (heads*hd) | k (kv*hd) | v (kv*hd)], head-major, rotate-half RoPE
            stack_config = _stack_config(config, BLOCK_PATTERN.match(key)["stack"])
            q_rows = stack_config.num_attention_heads * stack_config.head_dim
            kv_rows = stack_config.num_key_value_heads * stack_config.head_dim
            if tensor.shape[0] != q_rows + 2 * kv_rows:
                raise ConversionError(
                    f"{key}: fused qkv has {tensor.shape[0]} rows, expected {q_rows + 2 * kv_rows} for "
                    f"{stack_config.num_attention_heads} heads / {stack_config.num_key_value_heads} KV heads of "
                    f"dim {stack_config.head_dim}."
                )
            for name, part in zip(names, torch.split(tensor, [q_rows, kv_rows, kv_rows], dim=0)):
                converted[name] = part
        else:
            converted[names[0]] = tensor
    if unknown:
        raise ConversionError(f"Unknown keys in the original checkpoint ({len(unknown)}): {sorted(unknown)}")
    missing = sorted(set(model_keys) - set(converted))
    extra = sorted(set(converted) - set(model_keys))
    if missing or extra:
        raise ConversionError(
            f"The checkpoint does not match the configuration. Missing for the model: {missing}. "
            f"Not used by the model: {extra}."
        )
    wrong_shapes = [
        f"{name}: checkpoint {tuple(tensor.shape)} vs model {model_keys[name]}"
        for name, tensor in converted.items()
        if tuple(tensor.shape) != model_keys[name]
    ]
    if wrong_shapes:
        raise ConversionError("Shape mismatches between checkpoint and configuration: " + "; ".join(wrong_shapes))
    return converted


def _expected_shapes(config: UniAudio2Config) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = UniAudio2ForConditionalGeneration(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _rope_parameters(neutral: dict) -> dict:
    scaling = dict(neutral.get("rope_scaling") or {})
    rope = {"rope_theta": float(neutral["rope_theta"])}
    if scaling:
        rope.update({key: value for key, value in scaling.items()})
        rope["rope_type"] = scaling.get("rope_type", "llama3")
    else:
        rope["rope_type"] = "default"
    return rope


def config_from_fixture_json(path: str | os.PathLike) -> UniAudio2Config:
    """Build the configuration from the fixture `config.json` (per-stack HF-style fields + vocabularies)."""
    data = json.loads(Path(path).read_text())
    try:
        stacks = {name: stack["neutral"] for name, stack in data["stacks"].items()}
        audio, text = data["audio"], data["text"]
    except KeyError as error:
        raise ConversionError(f"{path} is not a UniAudio 2.0 fixture config (missing {error}).") from error
    backbone, decoder = stacks["backbone"], stacks["decoder"]
    expert_layouts = {}
    for expert in ("understanding_expert", "generation_expert"):
        if stacks[expert]["hidden_size"] != backbone["hidden_size"]:
            raise ConversionError(
                f"{expert}.hidden_size ({stacks[expert]['hidden_size']}) differs from the backbone's: the original "
                "model adds the experts' outputs to the backbone's stream, so their widths must match."
            )
        for field in ("rms_norm_eps", "rope_theta", "rope_scaling"):
            if stacks[expert].get(field) != backbone.get(field):
                raise ConversionError(f"{expert}.{field} differs from the backbone's, which this port does not support.")
        overrides = {
            field: stacks[expert][field]
            for field in ("num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size")
            if stacks[expert][field] != backbone[field]
        }
        expert_layouts[expert.split("_")[0]] = overrides or None
    weights = data.get("training_forward", {})
    return UniAudio2Config(
        vocab_size=backbone["vocab_size"],
        hidden_size=backbone["hidden_size"],
        intermediate_size=backbone["intermediate_size"],
        num_understanding_layers=stacks["understanding_expert"]["num_hidden_layers"],
        num_backbone_layers=backbone["num_hidden_layers"],
        num_generation_layers=stacks["generation_expert"]["num_hidden_layers"],
        num_attention_heads=backbone["num_attention_heads"],
        num_key_value_heads=backbone["num_key_value_heads"],
        head_dim=backbone["head_dim"],
        rms_norm_eps=backbone["rms_norm_eps"],
        rope_parameters=_rope_parameters(backbone),
        tie_word_embeddings=bool(backbone.get("tie_word_embeddings", False)),
        num_codebooks=audio["audio_num_codebooks"],
        reasoning_vocab_size=audio["audio_reason_vocab_size"],
        reconstruction_vocab_size=audio["audio_semantic_vocab_size"],
        reasoning_bos_token_id=audio["reason_bos"],
        reasoning_eos_token_id=audio["reason_eos"],
        reasoning_pad_token_id=audio["reason_pad"],
        reconstruction_bos_token_id=audio["semantic_bos_stored"],
        reconstruction_eos_token_id=audio["semantic_eos_stored"],
        reconstruction_pad_token_id=audio["semantic_pad_stored"],
        bos_token_id=text["bos"],
        eos_token_id=text["eos"],
        pad_token_id=text["text_pad"],
        text_pad_token_id=text["text_pad"],
        text_loss_weight=float(weights.get("lambda_text", 1.6)),
        audio_loss_weight=float(weights.get("lambda_audio", 1.0)),
        codebook_loss_weights=[float(w) for w in weights.get("codebook_loss_weights", [2, 2, 2, 1, 1, 1, 1, 1])],
        understanding_layer_config=expert_layouts["understanding"],
        generation_layer_config=expert_layouts["generation"],
        depth_decoder_config={
            "hidden_size": decoder["hidden_size"],
            "intermediate_size": decoder["intermediate_size"],
            "num_hidden_layers": decoder["num_hidden_layers"],
            "num_attention_heads": decoder["num_attention_heads"],
            "num_key_value_heads": decoder["num_key_value_heads"],
            "head_dim": decoder["head_dim"],
            "rms_norm_eps": decoder["rms_norm_eps"],
            "rope_parameters": _rope_parameters(decoder),
        },
    )


# Attention layouts of the lit-gpt configs the released model names (`llm_name` / `local_model`); widths, depths and
# vocabulary sizes are read from the checkpoint itself.
KNOWN_ATTENTION = {
    "Llama-3.2-3B": {"num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128},
    "Llama-3.2-300M": {"num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64},
    "Llama-3.2-4Layer": {"num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64},
}


def config_from_training_yaml(path: str | os.PathLike, state_dict: dict[str, torch.Tensor]) -> UniAudio2Config:
    """
    Build the configuration of the released model from its training `llm_config.yaml` (audio cards and special ids)
    and the checkpoint's tensor shapes (widths, depths, vocabularies).
    """
    import yaml

    args = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(args, dict):
        raise ConversionError(f"{path} is not a mapping of training arguments.")

    def layers(stack: str) -> int:
        found = {int(m["layer"]) for k in state_dict if (m := BLOCK_PATTERN.match(k)) and m["stack"] == stack}
        return max(found) + 1 if found else 0

    def attention(name_key: str, default: str) -> dict:
        name = str(args.get(name_key, default)).split("/")[-1]
        if name not in KNOWN_ATTENTION:
            raise ConversionError(f"Unknown `{name_key}` {name!r}; known: {sorted(KNOWN_ATTENTION)}.")
        return KNOWN_ATTENTION[name]

    try:
        reason_card = int(args["audio_reason_card"])
        semantic_card = int(args["audio_semantic_card"])
    except KeyError as error:
        raise ConversionError(f"{path} lacks {error}, needed for the audio vocabulary.") from error
    num_codebooks = int(args.get("parallel_number", 9)) - 1
    wte = state_dict["backbone.transformer.wte.weight"]
    decoder_hidden, _ = state_dict["projection.weight"].shape
    decoder_ffn = state_dict["decoder.transformer.h.0.mlp.fc_1.weight"].shape[0]
    backbone_attention = attention("llm_name", "Llama-3.2-3B")
    decoder_attention = attention("local_model", "Llama-3.2-300M")
    return UniAudio2Config(
        vocab_size=wte.shape[0],
        hidden_size=wte.shape[1],
        intermediate_size=state_dict["backbone.transformer.h.0.mlp.fc_1.weight"].shape[0],
        num_understanding_layers=layers("audio_understanding_expert"),
        num_backbone_layers=layers("backbone"),
        num_generation_layers=layers("audio_generation_expert"),
        **backbone_attention,
        num_codebooks=num_codebooks,
        reasoning_vocab_size=reason_card,
        reconstruction_vocab_size=semantic_card,
        reasoning_bos_token_id=int(args.get("reason_bos", 4096)),
        reasoning_eos_token_id=int(args.get("reason_eos", 4097)),
        reasoning_pad_token_id=int(args.get("reason_pad", 4099)),
        reconstruction_bos_token_id=int(args.get("semantic_bos", 8193)) + reason_card,
        reconstruction_eos_token_id=int(args.get("semantic_eos", 8192)) + reason_card,
        reconstruction_pad_token_id=int(args.get("semantic_pad", 8194)) + reason_card,
        bos_token_id=int(args.get("bos_token_id", 128000)),
        eos_token_id=int(args.get("eos_token_id", 128001)),
        pad_token_id=int(args.get("text_pad_token", 128020)),
        text_pad_token_id=int(args.get("text_pad_token", 128020)),
        depth_decoder_config={
            "hidden_size": decoder_hidden,
            "intermediate_size": decoder_ffn,
            "num_hidden_layers": layers("decoder"),
            **decoder_attention,
        },
    )


def build_model(config: UniAudio2Config, converted: dict[str, torch.Tensor]) -> UniAudio2ForConditionalGeneration:
    with torch.device("meta"):
        model = UniAudio2ForConditionalGeneration(config)
    model.load_state_dict(converted, strict=True, assign=True)
    # The rotary tables are non-persistent buffers created on the meta device: rebuild them on CPU.
    for owner in (model.model, model.depth_decoder):
        for name, module in list(owner.named_children()):
            if isinstance(module, LlamaRotaryEmbedding):
                setattr(owner, name, type(module)(config=module.config))
    return model.eval()


def build_processor(config: UniAudio2Config, tokenizer_path: str, codec_dir: str | None = None):
    """The processor of the converted model: its text tokenizer, and the converted ReasoningCodec when given."""
    from transformers import AutoTokenizer

    from uniaudio2.feature_extraction_uniaudio2 import UniAudio2FeatureExtractor
    from uniaudio2.processing_uniaudio2 import UniAudio2Processor, audio_special_ids_from_config

    if not Path(tokenizer_path).exists():
        raise FileNotFoundError(f"Tokenizer not found: {tokenizer_path}")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    feature_extractor = UniAudio2FeatureExtractor()
    if codec_dir is not None:
        from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel

        if not (Path(codec_dir) / "config.json").is_file():
            raise FileNotFoundError(f"No converted codec (config.json) in {codec_dir}")
        feature_extractor.set_codec(ReasoningCodecModel.from_pretrained(codec_dir))
    processor = UniAudio2Processor(feature_extractor, tokenizer, audio_special_ids=audio_special_ids_from_config(config))
    ids = processor.special_ids()  # raises if the tokenizer lacks the UniAudio special tokens
    for name in ("bos_token_id", "eos_token_id", "text_pad_token_id"):
        if getattr(ids, name) != getattr(config, name):
            raise ConversionError(
                f"The tokenizer's {name} ({getattr(ids, name)}) differs from the checkpoint's ({getattr(config, name)})."
            )
    return processor


def save_model(
    model: UniAudio2ForConditionalGeneration, output_dir: str | os.PathLike, max_shard_size: str = "5GB", processor=None
):
    """Save with remote code into a temporary directory first, then move into place (no half-written output)."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".uniaudio2-convert-", dir=output_dir.parent))
    try:
        model.save_pretrained(tmp_dir, max_shard_size=max_shard_size)
        if processor is not None:
            processor.save_pretrained(tmp_dir)
        card = REPO_ROOT / "model_cards" / "uniaudio2.md"
        if card.is_file():
            shutil.copy(card, tmp_dir / "README.md")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp_dir, output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _output_dtype(name: str, state_dict: dict[str, torch.Tensor]) -> torch.dtype:
    """The requested dtype, or for `auto` the checkpoint's floating dtype (float32 when it mixes several)."""
    if name != "auto":
        return getattr(torch, name)
    dtypes = {tensor.dtype for tensor in state_dict.values() if tensor.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--checkpoint_path", required=True, help="original checkpoint (llm_ep*.checkpoint or checkpoint.pt)")
    parser.add_argument(
        "--config_path", required=True, help="training config yaml of the released model, or a fixture config.json"
    )
    parser.add_argument("--output_dir", required=True, help="where to write the transformers checkpoint")
    parser.add_argument("--verify_against", default=None, help="fixture directory to check parity against")
    parser.add_argument("--tokenizer_path", default=None, help="text tokenizer (Llama-3.2 + UniAudio tags) to save as processor")
    parser.add_argument("--codec_dir", default=None, help="converted ReasoningCodec to bundle with the processor")
    parser.add_argument("--max_shard_size", default="5GB")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
        help="dtype of the saved weights; auto (default) keeps the checkpoint's (a bfloat16 checkpoint is not upcast "
             "to float32, which would double the conversion's memory and the output's size)",
    )
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    with tqdm(total=4, desc="convert", unit="step") as progress:
        original = load_original_checkpoint(args.checkpoint_path)
        progress.update()
        config_path = Path(args.config_path)
        if not config_path.is_file():
            raise FileNotFoundError(f"Config not found: {config_path}")
        if config_path.suffix == ".json":
            config = config_from_fixture_json(config_path)
        else:
            config = config_from_training_yaml(config_path, original)
        converted = convert_state_dict(original, config)
        progress.update()
        # The converted tensors are views of the memory-mapped checkpoint; `.to` copies only when the dtype changes.
        model = build_model(config, converted).to(_output_dtype(args.dtype, converted))
        set_generation_defaults(model, max_new_tokens=500, max_new_frames=500)  # the reference scripts' bounds
        processor = build_processor(config, args.tokenizer_path, args.codec_dir) if args.tokenizer_path else None
        if args.codec_dir and processor is None:
            raise ValueError("--codec_dir needs --tokenizer_path (the codec is saved with the processor).")
        progress.update()
        save_model(model, args.output_dir, args.max_shard_size, processor=processor)
        progress.update()
    print(f"Saved the converted model to {args.output_dir}")

    if args.verify_against:
        from uniaudio2_parity import verify_llm_fixture

        report = verify_llm_fixture(args.output_dir, args.verify_against)
        for line in report.details:
            print(line)
        print(report.summary_line())
        return 0 if report.ok(TOLERANCE) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
