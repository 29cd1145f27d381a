import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, fixture_dir_or_skip, tiny_uniaudio2_config


sys.path.insert(0, str(REPO_ROOT / "conversion_scripts"))
import convert_uniaudio2_to_hf as convert  # noqa: E402


SCRIPT = REPO_ROOT / "conversion_scripts" / "convert_uniaudio2_to_hf.py"


def _original_state_dict(config):
    """A random state dict in the original lit-gpt layout for `config` (for mapping / strictness tests)."""
    generator = torch.Generator().manual_seed(0)
    shapes = convert._expected_shapes(config)
    ours = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    original = {}
    inverse = {}
    for key in _original_keys(config):
        names = convert.map_original_key(key)
        inverse[key] = names
        original[key] = torch.cat([ours[n] for n in names], 0) if len(names) == 3 else ours[names[0]]
    return original, ours


def _original_keys(config):
    keys = list(convert.SIMPLE_KEYS)
    stacks = {
        "backbone": config.num_backbone_layers,
        "audio_understanding_expert": config.num_understanding_layers,
        "audio_generation_expert": config.num_generation_layers,
        "decoder": config.depth_decoder_config.num_hidden_layers,
    }
    for stack, layers in stacks.items():
        keys.append(f"{stack}.transformer.ln_f.weight")
        for i in range(layers):
            keys.append(f"{stack}.transformer.h.{i}.attn.qkv.weight")
            keys += [f"{stack}.transformer.h.{i}.{name}" for name in convert.BLOCK_KEYS]
    return keys


def test_fixture_parity_end_to_end(tmp_path):
    fixture = fixture_dir_or_skip("reference_llm")
    output_dir = tmp_path / "converted"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--checkpoint_path", str(fixture / "checkpoint.pt"),
            "--config_path", str(fixture / "config.json"),
            "--output_dir", str(output_dir),
            "--verify_against", str(fixture),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("parity: ") and last.endswith("traces_equal=True"), last
    values = dict(item.split("=") for item in last.removeprefix("parity: ").split())
    for key in ("max_abs_diff_text", "max_abs_diff_audio", "loss_diff"):
        assert float(values[key]) <= 1e-4, last
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "modeling_uniaudio2.py").is_file()


def test_fixture_parity_detects_a_wrong_weight(tmp_path):
    """Negative control: the parity check fails when one weight is perturbed."""
    fixture = fixture_dir_or_skip("reference_llm")
    from uniaudio2_parity import verify_llm_fixture

    original = convert.load_original_checkpoint(fixture / "checkpoint.pt")
    config = convert.config_from_fixture_json(fixture / "config.json")
    converted = convert.convert_state_dict(original, config)
    converted["model.understanding_layers.0.self_attn.k_proj.weight"] = converted[
        "model.understanding_layers.0.self_attn.k_proj.weight"
    ].flip(0)
    model = convert.build_model(config, converted)
    report = verify_llm_fixture(model, fixture)
    assert not report.ok(1e-4)


def test_full_size_keys_map_completely():
    fixture = fixture_dir_or_skip("reference_llm")
    rows = [line.split("\t") for line in (fixture / "keys_full_size.tsv").read_text().splitlines()[1:] if line]
    original = {key: torch.empty(eval(shape), device="meta") for key, shape, *_ in rows}
    config = convert.UniAudio2Config(reasoning_vocab_size=4100, reconstruction_vocab_size=8200)
    converted = convert.convert_state_dict(original, config)
    assert len(original) == 268
    assert len(converted) == 268 + 2 * 33 + 2 * 4  # each fused qkv becomes three projections
    total = sum(t.numel() for t in converted.values())
    assert total == sum(int(numel) for *_, numel in rows) == 4_863_493_120


def test_module_prefix_and_strictness(tmp_path):
    config = tiny_uniaudio2_config()
    original, ours = _original_state_dict(config)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {f"module.{k}": v for k, v in original.items()}, "optimizer": {}}, path)
    loaded = convert.load_original_checkpoint(path)
    converted = convert.convert_state_dict(loaded, config)
    assert converted.keys() == ours.keys()
    assert all(torch.equal(converted[k], ours[k]) for k in ours)

    with pytest.raises(convert.ConversionError, match="backbone.transformer.h.0.attn.extra"):
        convert.convert_state_dict({**original, "backbone.transformer.h.0.attn.extra": torch.zeros(1)}, config)
    missing = dict(original)
    missing.pop("decoder.transformer.h.1.mlp.proj.weight")
    with pytest.raises(convert.ConversionError, match="depth_decoder.layers.1.mlp.down_proj.weight"):
        convert.convert_state_dict(missing, config)
    wrong = dict(original, **{"projection.weight": torch.zeros(3, 3)})
    with pytest.raises(convert.ConversionError, match="depth_decoder.input_projection.weight"):
        convert.convert_state_dict(wrong, config)
    wrong_heads = tiny_uniaudio2_config(num_key_value_heads=4)
    with pytest.raises(convert.ConversionError, match="fused qkv"):
        convert.convert_state_dict(original, wrong_heads)


def test_bad_files_give_clear_errors_and_leave_nothing_behind(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(convert.ConversionError, match="Could not read"):
        convert.load_original_checkpoint(corrupt)
    with pytest.raises(FileNotFoundError):
        convert.load_original_checkpoint(tmp_path / "missing.pt")
    fixture = fixture_dir_or_skip("reference_llm")
    output_dir = tmp_path / "out"
    mismatched = tmp_path / "config.json"
    text = (fixture / "config.json").read_text().replace('"audio_semantic_vocab_size": 24', '"audio_semantic_vocab_size": 25')
    mismatched.write_text(text)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoint_path", str(fixture / "checkpoint.pt"), "--config_path", str(mismatched),
         "--output_dir", str(output_dir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "Shape mismatches" in result.stderr and "model.embed_audio_tokens.weight" in result.stderr
    assert not output_dir.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".uniaudio2")] == []


def test_training_yaml_config(tmp_path):
    config = tiny_uniaudio2_config(num_attention_heads=24, num_key_value_heads=8, head_dim=4, hidden_size=96,
                                   depth_decoder_config=dict(hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                                                             num_attention_heads=32, num_key_value_heads=8, head_dim=2))
    original, _ = _original_state_dict(config)
    yaml_path = tmp_path / "llm_config.yaml"
    yaml_path.write_text(
        "llm_name: Llama-3.2-3B\nlocal_model: Llama-3.2-300M\naudio_reason_card: 16\naudio_semantic_card: 24\n"
        "parallel_number: 9\nreason_bos: 12\nreason_eos: 13\nreason_pad: 15\nsemantic_bos: 21\nsemantic_eos: 20\n"
        "semantic_pad: 22\ntext_pad_token: 82\nbos_token_id: 80\neos_token_id: 81\n"
    )
    yaml_config = convert.config_from_training_yaml(yaml_path, original)
    assert (yaml_config.num_understanding_layers, yaml_config.num_backbone_layers, yaml_config.num_generation_layers) == (2, 2, 1)
    assert yaml_config.reconstruction_eos_token_id == 36 and yaml_config.depth_decoder_config.hidden_size == 64
    # the named Llama-3.2-3B layout has head_dim 128: the tiny checkpoint's fused qkv does not fit it
    with pytest.raises(convert.ConversionError, match="fused qkv"):
        convert.convert_state_dict(original, yaml_config)
    yaml_path.write_text(yaml_path.read_text().replace("Llama-3.2-3B", "Llama-Unknown"))
    with pytest.raises(convert.ConversionError, match="Unknown `llm_name`"):
        convert.config_from_training_yaml(yaml_path, original)


def test_conversion_with_tokenizer_and_codec_writes_a_full_bundle(tmp_path):
    """The converted directory carries model, processor (tokenizer + codec) and card, and loads with the Auto classes."""
    from uniaudio2.tiny_default import build_tiny_codec, build_tiny_lm, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    codec = build_tiny_codec(0)
    codec.save_pretrained(tmp_path / "codec")
    config = build_tiny_lm(tokenizer, codec.config).config
    original, _ = _original_state_dict(config)
    processor = convert.build_processor(config, str(tmp_path / "tokenizer"), str(tmp_path / "codec"))
    model = convert.build_model(config, convert.convert_state_dict(original, config))
    convert.save_model(model, tmp_path / "out", processor=processor)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "codec", "README.md",
            "pipeline_uniaudio2.py", "processing_uniaudio2.py"} <= names
    from transformers import AutoProcessor

    loaded = AutoProcessor.from_pretrained(tmp_path / "out", trust_remote_code=True)
    assert loaded.audio_special_ids["reasoning_vocab_size"] == config.reasoning_vocab_size
    with pytest.raises(FileNotFoundError):
        convert.build_processor(config, str(tmp_path / "missing"))
