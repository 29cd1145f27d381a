"""Training: LoRA fine-tuning with Trainer + peft, the four-stage recipe, Llama initialisation, accelerate DDP."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT, tiny_uniaudio2_config
from uniaudio2.data_uniaudio2 import UniAudio2DataCollator, encode_grids, examples_to_dataset, synthetic_examples, synthetic_special_ids
from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration
from uniaudio2.training_uniaudio2 import (
    STAGES,
    UNIAUDIO2_LORA_TARGETS,
    DataArguments,
    LoraArguments,
    ModelArguments,
    StageArguments,
    apply_freezing,
    finetune_main,
    init_backbone_from_llama,
    lora_target_modules,
    parse_arguments,
    train_main,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # Tiny matrices: one intra-op thread is faster than two (and much faster on a loaded machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


COMMON_FLAGS = ["--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--logging_steps", "1",
                "--dataloader_pin_memory", "false"]


def _save_tiny_model(path, seed=0):
    torch.manual_seed(seed)
    model = UniAudio2ForConditionalGeneration(tiny_uniaudio2_config())
    model.save_pretrained(path)
    return model


def _batch(config, num_examples=4, seed=1):
    ids = synthetic_special_ids(config)
    rows = synthetic_examples(config, ids, num_examples, seed=seed, num_groups=max(1, num_examples // 4))
    grids = encode_grids(examples_to_dataset(rows), ids)
    return UniAudio2DataCollator(ids, cfg_dropout_rate=0.0)([grids[i] for i in range(len(grids))])


def _logits(model, batch):
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "audio_labels")}
        out = model(**inputs, output_audio_logits=True)
    return out.logits, out.audio_logits


def test_lora_targets_cover_the_three_stacks_and_optionally_the_depth_decoder(tiny_model):
    names = [name for name, module in tiny_model.named_modules() if isinstance(module, torch.nn.Linear)]
    hits = [name for name in names if re.fullmatch(UNIAUDIO2_LORA_TARGETS, name)]
    config = tiny_model.config
    layers = config.num_understanding_layers + config.num_backbone_layers + config.num_generation_layers
    assert len(hits) == 7 * layers
    assert {name.split(".")[1] for name in hits} == {"understanding_layers", "layers", "generation_layers"}
    assert not any(name.startswith("depth_decoder") or name == "lm_head" for name in hits)
    with_decoder = [name for name in names if re.fullmatch(lora_target_modules(include_depth_decoder=True), name)]
    assert len(with_decoder) == 7 * (layers + config.depth_decoder_config.num_hidden_layers)
    assert "depth_decoder.input_projection" not in with_decoder
    only_backbone = lora_target_modules(stacks=("backbone",), projections=("self_attn.q_proj",))
    assert [n for n in names if re.fullmatch(only_backbone, n)] == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    with pytest.raises(ValueError, match="Unknown stacks"):
        lora_target_modules(stacks=("middle",))


def test_lora_finetune_loss_falls_and_adapters_reload_merge_and_autoload(tmp_path):
    from peft import AutoPeftModelForCausalLM, PeftModel

    base_dir, out_dir = tmp_path / "base", tmp_path / "lora"
    base = _save_tiny_model(base_dir).eval()
    finetune_main([
        "--model_name_or_path", str(base_dir), "--synthetic_examples", "8", "--output_dir", str(out_dir),
        "--max_steps", "16", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
        "--learning_rate", "1e-2", "--lr_scheduler_type", "constant", "--lora_r", "8", "--lora_alpha", "16",
        "--lora_dropout", "0", "--lora_depth_decoder", "true", "--merge_adapters", "true", "--seed", "0",
        "--activation_checkpointing", "true", *COMMON_FLAGS,
    ])
    history = json.loads((out_dir / "trainer_state.json").read_text())["log_history"]
    assert len([entry for entry in history if "loss" in entry]) == 16

    adapter_config = json.loads((out_dir / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA" and adapter_config["base_model_name_or_path"] == str(base_dir)
    batch = _batch(base.config)
    adapted = PeftModel.from_pretrained(UniAudio2ForConditionalGeneration.from_pretrained(base_dir), out_dir).eval()
    logits, audio_logits = _logits(adapted, batch)
    base_logits, _ = _logits(base, batch)
    assert (logits - base_logits).abs().max() > 1e-3, "the adapter must change the model"
    # The training loss (the same 8 examples, without condition dropout) fell clearly.
    train_batch = _batch(base.config, num_examples=8, seed=0)
    with torch.no_grad():
        before, after = base(**train_batch).loss.item(), adapted(**train_batch).loss.item()
    assert after < before - 0.5, (before, after)

    # Reload in a second model: identical outputs.
    again = PeftModel.from_pretrained(UniAudio2ForConditionalGeneration.from_pretrained(base_dir), out_dir).eval()
    torch.testing.assert_close(_logits(again, batch), (logits, audio_logits), rtol=0, atol=0)
    # The merged model (saved by the recipe, and merged here) equals the adapted model.
    merged_saved = UniAudio2ForConditionalGeneration.from_pretrained(out_dir / "merged").eval()
    torch.testing.assert_close(_logits(merged_saved, batch), (logits, audio_logits), rtol=1e-4, atol=1e-5)
    merged = again.merge_and_unload()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, batch), (logits, audio_logits), rtol=1e-4, atol=1e-5)
    # `AutoPeftModelForCausalLM` finds the base through the adapter config and loads it with its remote code.
    auto = AutoPeftModelForCausalLM.from_pretrained(out_dir, trust_remote_code=True).eval()
    torch.testing.assert_close(_logits(auto, batch), (logits, audio_logits), rtol=0, atol=0)


def test_lora_finetune_in_bf16_stores_the_frozen_base_in_bf16(tmp_path, monkeypatch):
    import uniaudio2.training_uniaudio2 as training

    base_dir = tmp_path / "base"
    _save_tiny_model(base_dir)
    seen = {}
    original = training.Trainer

    def record(*args, model, **kwargs):
        seen.update({name: p.dtype for name, p in model.named_parameters()})
        return original(*args, model=model, **kwargs)

    monkeypatch.setattr(training, "Trainer", record)
    finetune_main([
        "--model_name_or_path", str(base_dir), "--synthetic_examples", "4", "--output_dir", str(tmp_path / "lora"),
        "--max_steps", "1", "--per_device_train_batch_size", "2", "--lora_r", "4", "--bf16", "true", "--use_cpu", "true", "--seed", "0",
        *COMMON_FLAGS,
    ])
    adapters = {dtype for name, dtype in seen.items() if "lora_" in name}
    frozen = {dtype for name, dtype in seen.items() if "lora_" not in name}
    assert adapters == {torch.float32} and frozen == {torch.bfloat16}


def _stage_flags(stage, init, out_dir):
    return [
        "--stage", str(stage), *init, "--synthetic_examples", "12", "--output_dir", str(out_dir), "--max_steps", "2",
        "--per_device_train_batch_size", "6", "--learning_rate", "1e-2", "--weight_decay", "0", "--max_length", "160",
        "--seed", "0", *COMMON_FLAGS,
    ]


def test_four_stages_train_exactly_their_parameters_and_chain(tmp_path):
    config_file = tmp_path / "config.json"
    tiny_uniaudio2_config().to_json_file(str(config_file))
    previous = None
    all_names = [name for name, _ in UniAudio2ForConditionalGeneration(tiny_uniaudio2_config()).named_parameters()]
    for stage in (1, 2, 3, 4):
        out_dir = tmp_path / f"stage{stage}"
        if previous is None:
            # Stage 1 starts from scratch: save the initial weights to compare against.
            previous = tmp_path / "stage0"
            _save_tiny_model(previous, seed=3)
        train_main(_stage_flags(stage, ["--model_name_or_path", str(previous)], out_dir))
        before = load_file(previous / "model.safetensors")
        after = load_file(out_dir / "model.safetensors")
        assert set(after) == set(all_names)
        changed = {name for name in all_names if not torch.equal(before[name], after[name])}
        patterns = STAGES[stage].trainable_parameters
        expected = {name for name in all_names if any(re.fullmatch(p, name) for p in patterns)}
        assert changed == expected, (stage, sorted(changed ^ expected))
        previous = out_dir
    # Stage 1 only trains the understanding side; stage 2 only the generation side.
    stage1 = {n for n in all_names if any(re.fullmatch(p, n) for p in STAGES[1].trainable_parameters)}
    stage2 = {n for n in all_names if any(re.fullmatch(p, n) for p in STAGES[2].trainable_parameters)}
    assert "model.embed_audio_tokens.weight" in stage1 and not stage1 & stage2
    assert not any(n.startswith(("model.layers.", "lm_head", "model.embed_tokens")) for n in stage1 | stage2)
    assert any(n.startswith("depth_decoder.codebooks_head") for n in stage2)
    # The final checkpoint reloads.
    UniAudio2ForConditionalGeneration.from_pretrained(previous)


def test_freezing_is_a_recipe_setting(tiny_model):
    trainable, frozen = apply_freezing(tiny_model, [r"lm_head\..*"])
    assert trainable == ["lm_head.weight"] and len(frozen) == len(list(tiny_model.parameters())) - 1
    assert [n for n, p in tiny_model.named_parameters() if p.requires_grad] == ["lm_head.weight"]
    with pytest.raises(ValueError, match="match no parameter"):
        apply_freezing(tiny_model, [r"model\.decoder\..*"])


def test_backbone_initialises_from_a_llama_checkpoint(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = tiny_uniaudio2_config()
    llama_config = LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_backbone_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim, tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    LlamaForCausalLM(llama_config).save_pretrained(tmp_path / "llama")
    llama_state = LlamaForCausalLM.from_pretrained(tmp_path / "llama").state_dict()
    model = UniAudio2ForConditionalGeneration(config)
    untouched = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("model.understanding", "depth_decoder"))}
    names = init_backbone_from_llama(model, str(tmp_path / "llama"))
    state = model.state_dict()
    assert "model.layers.1.mlp.down_proj.weight" in names and "lm_head.weight" in names
    for name in names:
        torch.testing.assert_close(state[name], llama_state[name], rtol=0, atol=0)
    for name, value in untouched.items():
        assert torch.equal(state[name], value)
    llama_config.num_hidden_layers = 3
    with pytest.raises(ValueError, match="3 layers"):
        init_backbone_from_llama(model, LlamaForCausalLM(llama_config))


def test_recipe_configs_parse_and_flags_override():
    from transformers import TrainingArguments

    configs = REPO_ROOT / "recipes" / "configs"
    for stage in (1, 2, 3, 4):
        model_args, data_args, stage_args, training_args = parse_arguments(
            [str(configs / f"stage{stage}.yaml"), "--output_dir", "x", "--max_steps", "7"],
            (ModelArguments, DataArguments, StageArguments, TrainingArguments),
        )
        assert stage_args.stage == stage and training_args.max_steps == 7 and model_args.bf16_if_available
        assert training_args.learning_rate == 2e-4 and training_args.adam_beta2 == 0.95
        assert data_args.max_length == STAGES[stage].context_length
    assert data_args.auditory_sentences and STAGES[4].context_length == 2048
    _, _, stage_args, training_args = parse_arguments(
        [str(configs / "finetune_lora.yaml"), "--output_dir", "x", "--lora_r", "4"],
        (ModelArguments, DataArguments, LoraArguments, TrainingArguments),
    )
    assert stage_args.lora_r == 4 and stage_args.lora_alpha == 32 and not stage_args.lora_depth_decoder
    # Every adapter is in every step's graph (an audio-free batch still runs the depth decoder): no unused-parameter
    # search; evaluation only needs the loss.
    assert training_args.ddp_find_unused_parameters is False and training_args.prediction_loss_only
    assert training_args.per_device_eval_batch_size == training_args.per_device_train_batch_size == 2
    with pytest.raises(ValueError, match="--stage"):
        parse_arguments(["--stage", "5", "--output_dir", "x"], (StageArguments, TrainingArguments))


FSDP_ROOT_SHARE = """
import sys, torch, yaml
import torch.distributed as dist
from types import SimpleNamespace
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_model
from torch.distributed.fsdp import FSDPModule
sys.path.insert(0, "tests")
from conftest import tiny_uniaudio2_config
from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[1], rank=0, world_size=1)
config = yaml.safe_load(open("recipes/accelerate/fsdp.yaml"))["fsdp_config"]
plugin = FullyShardedDataParallelPlugin(
    fsdp_version=2, auto_wrap_policy="transformer_based_wrap", cpu_ram_efficient_loading=False,
    transformer_cls_names_to_wrap=config["fsdp_transformer_layer_cls_to_wrap"].split(","),
)
model = UniAudio2ForConditionalGeneration(tiny_uniaudio2_config())
total = sum(p.numel() for p in model.parameters())
accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), torch_device_mesh=None, is_main_process=True,
                              mixed_precision="no", device=torch.device("cpu"))
model = fsdp2_prepare_model(accelerator, model)
units = {name: mod for name, mod in model.named_modules() if isinstance(mod, FSDPModule)}
group = units[""]._get_fsdp_state()._fsdp_param_group
print(sum(p.sharded_size.numel() for p in group.fsdp_params) / total, " ".join(sorted(units)))
dist.destroy_process_group()
"""


def test_fsdp_config_shards_embeddings_and_heads():
    """The recipe's FSDP2 wrapping leaves only norms in the root unit (the audio embeddings and the codebook heads,
    10.5 % of the full-size parameters, stayed there with decoder layers alone)."""
    run = subprocess.run([sys.executable, "-c", FSDP_ROOT_SHARE, str(_free_port())], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    share, units = run.stdout.strip().splitlines()[-1].split(" ", 1)
    for unit in ("model.embed_tokens", "model.embed_audio_tokens", "lm_head", "depth_decoder", "model.layers.0"):
        assert unit in units.split(), units
    assert float(share) < 0.01, share


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_accelerate_launch_two_cpu_processes_stay_in_sync(tmp_path):
    out_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO_ROOT / "recipes/accelerate/ddp_cpu.yaml"),
        "--main_process_port", str(_free_port()), str(REPO_ROOT / "recipes/train_uniaudio2.py"),
        "--config_name", str(REPO_ROOT / "recipes/configs/tiny_uniaudio2_config.json"), "--synthetic_examples", "16",
        "--stage", "3", "--max_steps", "3", "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
        "--output_dir", str(out_dir), "--use_cpu", "true", "--replica_checksums", "true", *COMMON_FLAGS,
    ]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    records = [json.loads((out_dir / "replica_checksums" / f"rank{i}.json").read_text()) for i in (0, 1)]
    # Both ranks belonged to one 2-process group (each saw half of every global batch) and ended identical.
    assert [r["world_size"] for r in records] == [2, 2] and [r["process_index"] for r in records] == [0, 1]
    assert records[0]["global_step"] == records[1]["global_step"] == 3
    assert records[0]["parameters"] == records[1]["parameters"]
    state = json.loads((out_dir / "trainer_state.json").read_text())
    assert state["log_history"][-1]["epoch"] == pytest.approx(3 * 2 * 2 / 16)
    # The saved model loads and equals the replicas.
    saved = UniAudio2ForConditionalGeneration.from_pretrained(out_dir)
    for name, parameter in saved.named_parameters():
        assert float(parameter.detach().double().sum()) == pytest.approx(records[0]["parameters"][name], rel=1e-6, abs=1e-6)


@pytest.fixture
def _no_datasets_cache(tmp_path, monkeypatch):
    """Only explicit cache files may carry results from one run to the next; nothing is written to the user cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    enabled = datasets.is_caching_enabled()
    datasets.disable_caching()
    yield
    if enabled:
        datasets.enable_caching()


@pytest.mark.usefixtures("_no_datasets_cache")
def test_finetune_from_raw_audio_and_text_encodes_audio_once_with_the_processor_codec(tmp_path):
    import shutil

    import datasets
    import numpy as np

    from uniaudio2.tiny_default import build_tiny_default

    bundle = build_tiny_default(tmp_path / "bundle", seed=0)
    rows = tmp_path / "rows.jsonl"
    durations = [0.5, 0.6, 0.7, 0.8]
    with open(rows, "w") as file:
        for i, seconds in enumerate(durations):
            wave = 0.1 * np.sin(np.arange(int(seconds * 24000)) * 0.05 * (i + 1))
            row = {"task": ["ASR", "TTS"][i % 2], "audio": {"array": wave.tolist(), "sampling_rate": 24000},
                   "transcription_seq": f"hello world number {i}"}
            file.write(json.dumps(row) + "\n")
    flags = ["--model_name_or_path", str(bundle), "--processor", str(bundle), "--trust_remote_code", "true",
             "--dataset", str(rows), "--audio_cache_dir", str(tmp_path / "cache"), "--max_steps", "2",
             "--per_device_train_batch_size", "2", "--lora_r", "4", *COMMON_FLAGS]
    finetune_main(flags + ["--output_dir", str(tmp_path / "first")])
    codes = datasets.Dataset.from_file(str(tmp_path / "cache" / "train-codes.arrow"))
    assert [np.array(c).shape for c in codes["reason_seq"]] == [(8, int(s * 5) + 1) for s in durations]
    assert [np.array(c).shape for c in codes["semantic_seq"]] == [(8, int(s * 12.5) + 1) for s in durations]
    # Without the codec the second run only works from the cached codes.
    shutil.rmtree(bundle / "codec")
    finetune_main(flags + ["--output_dir", str(tmp_path / "second")])
    assert (tmp_path / "second" / "adapter_model.safetensors").is_file()
    history = json.loads((tmp_path / "second" / "trainer_state.json").read_text())["log_history"]
    assert all(np.isfinite(entry["loss"]) for entry in history if "loss" in entry)
