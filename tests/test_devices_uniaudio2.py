"""What full-size use on accelerators relies on, proven on CPU: split device maps, static cache and compiled decoding
steps, half-precision tables, adapters with reentrant checkpointing, audio-free micro-batches."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import CompileConfig

from conftest import random_grid, tiny_uniaudio2_config
from uniaudio2.generation_uniaudio2 import _sample_from_logits
from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration


TESTS_DIR = Path(__file__).resolve().parent
SPLIT_SCENARIOS = ["train_loss", "eval_loss", "audio_free_batch", "cached_decoding_steps", "harness_catches_a_mix"]
# A pipeline given a model split over the fake devices moves the processor's codec (loaded on CPU) to the model's
# device, and encoding runs there: every encoder stage sees its inputs on that device, no op mixes devices.
CODEC_SCENARIOS = ["audio_to_text_pipeline_codec_on_the_model_device", "text_to_audio_pipeline_codec_on_the_model_device"]


@pytest.fixture(scope="module")
def split_results():
    # The fake accelerator backend is process-global: it runs in a process of its own.
    run = subprocess.run(
        [sys.executable, str(TESTS_DIR / "fake_devices.py")], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("scenario", SPLIT_SCENARIOS)
def test_split_over_two_devices_never_mixes_devices(split_results, scenario):
    assert split_results[scenario] == "ok", split_results[scenario]


@pytest.mark.parametrize("scenario", CODEC_SCENARIOS)
def test_pipeline_codec_follows_the_model_onto_its_device(split_results, scenario):
    assert split_results[scenario] == "ok", split_results[scenario]


def _left_padded_text_prompt():
    grid = random_grid(batch_size=2, seq_len=10, audio_rows=slice(3, 8))
    attention_mask = torch.ones(2, 10, dtype=torch.long)
    attention_mask[1, :2] = 0
    return dict(grid, attention_mask=attention_mask)


def _audio_prompt():
    return {"input_ids": torch.tensor([[80, 10, 20, 81], [82, 80, 11, 81]]), "attention_mask": torch.tensor([[1] * 4, [0, 1, 1, 1]])}


def test_static_cache_generates_the_dynamic_cache_tokens(model):
    text = _left_padded_text_prompt()
    dynamic = model.generate(**text, do_sample=False, max_new_tokens=6, eos_token_id=None)
    static = model.generate(**text, do_sample=False, max_new_tokens=6, eos_token_id=None, cache_implementation="static")
    assert torch.equal(dynamic, static)

    audio = dict(_audio_prompt(), generation_mode="audio", do_sample=False, max_new_frames=10, guidance_scale=1.5)
    dynamic = model.generate(**audio)
    static = model.generate(**audio, cache_implementation="static")
    assert dynamic.frames.shape[1] > 1
    assert torch.equal(dynamic.frames, static.frames)


def test_compiled_decoding_steps_have_no_graph_breaks_and_keep_the_tokens(model, monkeypatch):
    """`fullgraph=True` fails on any data-dependent Python branch or host read in a decoding step; one compilation
    serves every step (a recompilation raises)."""
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    compile_config = CompileConfig(fullgraph=True, backend="aot_eager", dynamic=False)
    compile_config._compile_all_devices = True  # transformers compiles automatically on accelerators only
    audio = dict(_audio_prompt(), generation_mode="audio", do_sample=False, max_new_frames=5)
    dynamic = model.generate(**audio)
    torch._dynamo.reset()
    compiled = model.generate(**audio, cache_implementation="static", compile_config=compile_config)
    assert model._audio_step_compiled[0] is compile_config
    assert torch.equal(dynamic.frames, compiled.frames)


def test_generator_on_another_device_than_the_logits_is_rejected():
    logits = torch.randn(2, 10)
    elsewhere = SimpleNamespace(device=torch.device("cuda", 0))
    with pytest.raises(ValueError, match=r"generator.*cuda:0.*logits are on cpu"):
        _sample_from_logits(logits, True, 1.0, None, elsewhere)
    # The same device with or without an index is the same generator device.
    here = torch.Generator(device="cpu").manual_seed(0)
    assert _sample_from_logits(logits, True, 1.0, None, here).shape == (2,)


def test_rotary_tables_stay_float32_in_bfloat16(model):
    model.to(torch.bfloat16)
    for rotary in (model.model.rotary_emb, model.depth_decoder.rotary_emb):
        assert rotary.inv_freq.dtype == torch.float32 and rotary.original_inv_freq.dtype == torch.float32
    assert model.lm_head.weight.dtype == torch.bfloat16
    out = model(**random_grid(batch_size=1, seq_len=8))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()


def test_training_loss_equals_eval_loss_without_the_full_text_logits(model):
    """In training the text head only runs on labelled rows; the loss is the one of the full logits."""
    grid = random_grid(batch_size=2, seq_len=12)
    labels = grid["input_ids"].masked_fill(grid["audio_codes_mask"], -100)
    labels[0, :4] = -100
    kwargs = dict(grid, labels=labels, audio_labels=grid["audio_codes"])
    evaluated = model(**kwargs)
    model.train()
    trained = model(**kwargs)
    assert trained.logits is None and evaluated.logits.shape[:2] == (2, 12)
    torch.testing.assert_close(trained.text_loss, evaluated.text_loss)
    torch.testing.assert_close(trained.audio_loss, evaluated.audio_loss)


def test_audio_free_micro_batch_trains_every_parameter(model):
    """A micro-batch without audio frames still runs the depth decoder (on a label-less frame): every parameter gets
    a gradient, as DDP needs on every rank."""
    model.train()
    grid = random_grid(batch_size=2, seq_len=10, audio_rows=slice(0, 0))
    out = model(**grid, labels=grid["input_ids"], audio_labels=torch.full_like(grid["audio_codes"], -100))
    assert out.audio_loss == 0 and out.audio_logits.shape[0] == 0
    out.loss.backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_lora_with_checkpointing_reaches_every_stack(use_reentrant):
    """Adapters on a frozen base with gradient checkpointing (reentrant, as `prepare_model_for_kbit_training` sets
    up) get gradients in the understanding, backbone, generation and depth-decoder layers."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = UniAudio2ForConditionalGeneration(tiny_uniaudio2_config())
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    base.enable_input_require_grads()
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.train()
    grid = random_grid(batch_size=2, seq_len=12)
    labels = grid["input_ids"].masked_fill(grid["audio_codes_mask"], -100)
    model(**grid, labels=labels, audio_labels=grid["audio_codes"]).loss.backward()
    stacks = ("understanding_layers", "model.layers", "generation_layers", "depth_decoder.layers")
    for stack in stacks:
        grads = [p.grad for name, p in model.named_parameters() if "lora_" in name and stack in name]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), stack
