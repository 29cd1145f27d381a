"""
Nothing lost (issue 29): a LoRA run and a four-stage-recipe run killed with SIGKILL mid-run and started again with
the same command resume from their last complete checkpoint and reach the same final weights as an uninterrupted run
with the same seed. Subprocesses of the real recipe scripts, on a tiny model: seconds per run.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT, tiny_uniaudio2_config
from test_cli_uniaudio2 import _env, kill_when_ready
from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration


# Only the steps are slowed down (to be killed mid-run): the numbers are those of the recipe script.
SLOW_STEPS = """
import runpy, sys, time
import transformers

training_step = transformers.Trainer.training_step
delay = float(sys.argv[2])

def slow_training_step(self, *args, **kwargs):
    time.sleep(delay)
    return training_step(self, *args, **kwargs)

transformers.Trainer.training_step = slow_training_step
script = sys.argv[1]
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""

MAX_STEPS, SAVE_STEPS = 10, 3


def _command(script, flags, output_dir, step_seconds=0.0):
    return [sys.executable, "-c", SLOW_STEPS, str(REPO_ROOT / "recipes" / script), str(step_seconds), *flags,
            "--output_dir", str(output_dir), "--max_steps", str(MAX_STEPS), "--save_steps", str(SAVE_STEPS),
            "--save_strategy", "steps", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2",
            "--learning_rate", "1e-2", "--seed", "0", "--report_to", "none", "--disable_tqdm", "true",
            "--dataloader_pin_memory", "false", "--use_cpu", "true"]


def _run(command):
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _kill_after_checkpoint(command, output_dir, step):
    """Start `command`, SIGKILL it once `checkpoint-<step>` is complete (training goes on after it)."""
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = output_dir / f"checkpoint-{step}" / "trainer_state.json"
    try:
        deadline = time.monotonic() + 240
        while not marker.is_file():
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def _partial_checkpoint(output_dir, step):
    """What a kill while `Trainer` saves leaves: weights written, no trainer_state.json yet."""
    partial = output_dir / f"checkpoint-{step}"
    if not (partial / "trainer_state.json").is_file():
        partial.mkdir(exist_ok=True)
        (partial / "adapter_model.safetensors").write_bytes(b"cut")
        (partial / "model.safetensors").write_bytes(b"cut")


def _assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)


def _kill_and_resume(tmp_path, script, flags, weights_file):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(_command(script, flags, straight))
    _kill_after_checkpoint(_command(script, flags, resumed, step_seconds=0.25), resumed, SAVE_STEPS)
    assert not (resumed / weights_file).exists(), "a killed run leaves no final weights"
    last = max(int(p.name.split("-")[1]) for p in resumed.glob("checkpoint-*"))
    assert last < MAX_STEPS
    _partial_checkpoint(resumed, last + SAVE_STEPS)
    result = _run(_command(script, flags, resumed))  # the same command again
    assert f"Resuming training from {resumed / f'checkpoint-{last}'}" in result.stderr
    _assert_same_weights(load_file(straight / weights_file), load_file(resumed / weights_file))
    assert not [p.name for p in resumed.iterdir() if p.name.startswith(".")], "no staging leftovers"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "tiny"
    torch.manual_seed(0)
    UniAudio2ForConditionalGeneration(tiny_uniaudio2_config()).save_pretrained(path)
    return path


@pytest.mark.slow
def test_lora_run_killed_mid_run_resumes_to_the_same_adapter(tmp_path, tiny_base):
    # Recipe defaults for the randomness: LoRA dropout 0.05 and condition dropout 0.1 stay on.
    flags = ["--model_name_or_path", str(tiny_base), "--synthetic_examples", "12", "--lora_r", "4"]
    _kill_and_resume(tmp_path, "finetune_lora.py", flags, "adapter_model.safetensors")


@pytest.mark.slow
def test_stage_run_killed_mid_run_resumes_to_the_same_weights(tmp_path, tiny_base):
    flags = ["--model_name_or_path", str(tiny_base), "--stage", "3", "--synthetic_examples", "12",
             "--max_length", "160"]
    _kill_and_resume(tmp_path, "train_uniaudio2.py", flags, "model.safetensors")


# A kill while the final outputs are written: after `Trainer.save_model` wrote the adapter, or after the merged
# bundle's model was written but before its processor.
KILLED_EXPORT = """
import runpy, sys, time
import transformers

stage = sys.argv[1]
target = transformers.Trainer if stage == "adapter" else transformers.PreTrainedModel
name = "save_model" if stage == "adapter" else "save_pretrained"
original = getattr(target, name)

def save_then_hang(self, output_dir=None, *args, **kwargs):
    result = original(self, output_dir, *args, **kwargs)
    if stage == "adapter" or "merged" in str(output_dir):
        print("ready", flush=True)
        time.sleep(600)
    return result

setattr(target, name, save_then_hang)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("stage", ["adapter", "merged"])
def test_a_kill_while_exporting_leaves_no_partial_outputs(tmp_path, tiny_base, stage):
    output_dir = tmp_path / "lora"
    command = [sys.executable, "-c", KILLED_EXPORT, stage, str(REPO_ROOT / "recipes" / "finetune_lora.py"),
               "--model_name_or_path", str(tiny_base), "--synthetic_examples", "4", "--lora_r", "4", "--max_steps",
               "1", "--per_device_train_batch_size", "2", "--merge_adapters", "true", "--save_strategy", "no",
               "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true", "--output_dir", str(output_dir)]
    kill_when_ready(command)
    visible = {p.name for p in output_dir.iterdir() if not p.name.startswith(".")}
    if stage == "adapter":
        assert not visible & {"adapter_model.safetensors", "adapter_config.json", "merged"}, visible
    else:
        assert {"adapter_model.safetensors", "adapter_config.json"} <= visible and "merged" not in visible
