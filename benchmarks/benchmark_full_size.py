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
Full-size figures measured on a CPU-only machine: host memory of converting and loading the released-size language
model, and the GPU memory of one LoRA training step and one eval step of it.

1. **Conversion and loading (measured, CPU).** A synthetic original-format checkpoint of the full-size model (random
   bfloat16 weights, the original `Model_stage3` key list; keys and shapes are derived by inverting the key mapping of
   `conversion_scripts/convert_uniaudio2_to_hf.py` for the full-size `UniAudio2Config()` and checked against
   `shared/fixtures/reference_llm/keys_full_size.tsv` when present) is written as the training code writes it
   (`{"model": state dict, "optimizer", "scheduler", "reporter"}`) with an `llm_config.yaml`, then
   `convert_uniaudio2_to_hf.py` runs on it in a child process, then a second child loads the result with
   `UniAudio2ForConditionalGeneration.from_pretrained(dir, dtype=torch.bfloat16)`. Each child's peak resident set is
   its `ru_maxrss` from `os.wait4` (the kernel's high-water mark: anonymous memory plus the mapped file pages it
   touched); a 20 ms poller of `/proc/<pid>/status` also records the peak anonymous part, and kills the child if the
   machine's available memory falls under `--min_available_gb` (reported as exceeded). Ratios are to the weights'
   size (bfloat16 bytes of all tensors). Target: <= 1.2x.
2. **GPU memory of LoRA training and eval (computed without a GPU).** The full-size model is built under
   `torch._subclasses.fake_tensor.FakeTensorMode` on a fake `cuda` device (no storage is allocated) in bfloat16,
   wrapped with peft using the LoRA settings of `recipes/configs/finetune_lora.yaml` (read at run time), with gradient
   checkpointing (non-reentrant, as the recipe sets) and `enable_input_require_grads`. One step = forward (text +
   codebook losses) + backward + `AdamW.step()` on the LoRA parameters, on a batch of `per_device_train_batch_size` x
   `max_length` audio-dense rows (every row an audio frame with labels on all 8 codebooks, the depth decoder's worst
   case); the eval step is a `torch.no_grad()` forward with the same labels on `per_device_eval_batch_size` rows
   (the recipe's value, else `TrainingArguments`' default). PyTorch's `torch.distributed._tools.mem_tracker.MemTracker`
   follows every storage that is created (parameters, buffers, gradients, activations, temporaries, optimizer states)
   and reports the peak per device. The data-dependent shapes of the forward (frames selected by boolean masks) get
   their true sizes from a shadow of the integer/boolean tensors computed on CPU. Not modelled: the CUDA caching
   allocator's fragmentation and block rounding, the CUDA context and kernels' workspaces (cuBLAS, flash attention),
   which a real card adds on top (typically 0.5-1.5 GB). Target: <= 22 GB.

    python benchmarks/benchmark_full_size.py [--work_dir /tmp/uniaudio2-full-size] [--output figures.json]
    python benchmarks/benchmark_full_size.py --smoke    # the same code paths on a small configuration, in seconds

The full run needs ~10 GB of free disk for the synthetic checkpoint plus ~10 GB for the converted copy (both deleted
at the end unless `--keep`), ~13 GB of RAM, and takes ~15 minutes on 2 CPU cores.
"""

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch


REPO_ROOT = Path(__file__).resolve().parents[1]
CONVERSION_SCRIPT = REPO_ROOT / "conversion_scripts" / "convert_uniaudio2_to_hf.py"
RECIPE_CONFIG = REPO_ROOT / "recipes" / "configs" / "finetune_lora.yaml"
KEYS_TSV = Path(os.environ.get("UNIAUDIO2_SHARED_DIR", REPO_ROOT.parent / "shared")) / "fixtures" / "reference_llm" / (
    "keys_full_size.tsv"
)
for _path in (REPO_ROOT, REPO_ROOT / "conversion_scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from uniaudio2.configuration_uniaudio2 import UniAudio2Config  # noqa: E402


GB = 1e9
TARGET_RSS_RATIO = 1.2
TARGET_GPU_GB = 22.0


# ----------------------------------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------------------------------


def full_size_config() -> UniAudio2Config:
    """The released model's shapes (the configuration defaults): 4,863,493,120 parameters."""
    return UniAudio2Config()


def smoke_config() -> UniAudio2Config:
    """Small widths and depths, but the attention layouts the conversion script knows by name (Llama-3.2-3B, -300M)."""
    return UniAudio2Config(
        vocab_size=512, hidden_size=64, intermediate_size=96,
        num_understanding_layers=1, num_backbone_layers=2, num_generation_layers=1,
        num_attention_heads=24, num_key_value_heads=8, head_dim=128,
        reasoning_vocab_size=20, reconstruction_vocab_size=24,
        reasoning_bos_token_id=16, reasoning_eos_token_id=17, reasoning_pad_token_id=19,
        reconstruction_bos_token_id=41, reconstruction_eos_token_id=40, reconstruction_pad_token_id=42,
        bos_token_id=500, eos_token_id=501, pad_token_id=502, text_pad_token_id=502,
        depth_decoder_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=32,
                                  num_key_value_heads=8, head_dim=64),
    )


def training_yaml(config: UniAudio2Config) -> dict:
    """The `llm_config.yaml` fields the conversion script reads (the rest of the shapes come from the checkpoint)."""
    reason_card = config.reasoning_vocab_size
    return {
        "llm_name": "Llama-3.2-3B",
        "local_model": "Llama-3.2-300M",
        "audio_reason_card": reason_card,
        "audio_semantic_card": config.reconstruction_vocab_size,
        "parallel_number": config.num_codebooks + 1,
        "reason_bos": config.reasoning_bos_token_id,
        "reason_eos": config.reasoning_eos_token_id,
        "reason_pad": config.reasoning_pad_token_id,
        "semantic_bos": config.reconstruction_bos_token_id - reason_card,
        "semantic_eos": config.reconstruction_eos_token_id - reason_card,
        "semantic_pad": config.reconstruction_pad_token_id - reason_card,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "text_pad_token": config.text_pad_token_id,
    }


# ----------------------------------------------------------------------------------------------------------------------
# The original key list, derived from the conversion script's mapping
# ----------------------------------------------------------------------------------------------------------------------


def original_layout(config: UniAudio2Config) -> dict[str, tuple[int, ...]]:
    """
    Original `Model_stage3` key -> shape for `config`, obtained by inverting the conversion script's key tables
    (`SIMPLE_KEYS`, `STACKS`, `BLOCK_KEYS`, fused qkv) over the keys of our model, and checked by mapping every
    original key forward again with the script's own `map_original_key`: the result must be exactly our state dict.
    """
    import convert_uniaudio2_to_hf as convert
    from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration

    with torch.device("meta"):
        model = UniAudio2ForConditionalGeneration(config)
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    layout: dict[str, tuple[int, ...]] = {}
    for original, name in convert.SIMPLE_KEYS.items():
        layout[original] = ours[name]
    for stack, (layers_prefix, norm_name) in convert.STACKS.items():
        layout[f"{stack}.transformer.ln_f.weight"] = ours[f"{norm_name}.weight"]
        num_layers = len({name.split(".")[len(layers_prefix.split("."))] for name in ours if name.startswith(layers_prefix + ".")})
        for i in range(num_layers):
            prefix = f"{layers_prefix}.{i}"
            for original, name in convert.BLOCK_KEYS.items():
                layout[f"{stack}.transformer.h.{i}.{original}"] = ours[f"{prefix}.{name}"]
            q, k, v = (ours[f"{prefix}.self_attn.{p}_proj.weight"] for p in ("q", "k", "v"))
            layout[f"{stack}.transformer.h.{i}.attn.qkv.weight"] = (q[0] + k[0] + v[0], q[1])
    mapped = {name for key in layout for name in convert.map_original_key(key)}
    if mapped != set(ours):
        raise RuntimeError(f"inverted mapping does not cover the model: missing {sorted(set(ours) - mapped)[:5]}, "
                           f"extra {sorted(mapped - set(ours))[:5]}")
    return layout


def check_against_keys_tsv(layout: dict[str, tuple[int, ...]]) -> str:
    """Compare with the fixture's listing of the reference class's full-size state dict (when available)."""
    if not KEYS_TSV.is_file():
        return "keys_full_size.tsv not found (not compared)"
    listed = {}
    for line in KEYS_TSV.read_text().splitlines()[1:]:
        key, shape, _dtype, _count = line.split("\t")
        listed[key] = tuple(json.loads(shape))
    if listed != layout:
        missing, extra = sorted(set(listed) - set(layout)), sorted(set(layout) - set(listed))
        wrong = sorted(k for k in set(listed) & set(layout) if listed[k] != layout[k])
        raise RuntimeError(f"layout differs from {KEYS_TSV}: missing {missing[:5]}, extra {extra[:5]}, shapes {wrong[:5]}")
    return f"same {len(listed)} keys and shapes as keys_full_size.tsv"


# ----------------------------------------------------------------------------------------------------------------------
# Peak resident memory of a child process
# ----------------------------------------------------------------------------------------------------------------------


def _status_fields(pid: int) -> dict[str, int]:
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:")):
                    name, value = line.split(":")
                    fields[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return fields


def _available_bytes() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


def run_measured(cmd: list[str], log_path: Path, min_available_bytes: float) -> dict:
    """Run `cmd`; its peak RSS (`ru_maxrss` via `os.wait4`), the polled peak anonymous RSS, wall time, exit code."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    killed = []
    done = threading.Event()

    def poll():
        while not done.is_set():
            fields = _status_fields(proc.pid)
            for name in peaks:
                peaks[name] = max(peaks[name], fields.get(name, 0))
            if _available_bytes() < min_available_bytes and not killed:
                killed.append(fields.get("VmRSS", 0))
                proc.kill()
            done.wait(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": proc.returncode,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # kilobytes on Linux
        "peak_anon_bytes_polled": peaks["RssAnon"],
        "peak_file_bytes_polled": peaks["RssFile"],
        "killed_for_memory": bool(killed),
        "wall_s": time.perf_counter() - start,
        "log_tail": log_path.read_text()[-2000:],
    }


# ----------------------------------------------------------------------------------------------------------------------
# Children: write the synthetic checkpoint, load the converted model
# ----------------------------------------------------------------------------------------------------------------------


def child_write_checkpoint(preset: str, path: str) -> int:
    config = full_size_config() if preset == "full" else smoke_config()
    layout = original_layout(config)
    generator = torch.Generator().manual_seed(0)
    state_dict = {}
    for key, shape in layout.items():
        tensor = torch.empty(shape, dtype=torch.bfloat16)
        if len(shape) == 1:
            tensor.fill_(1.0)
        else:
            tensor.normal_(0.0, 0.02, generator=generator)
        state_dict[key] = tensor
    # The training checkpoint of the reference `save_checkpoint` (FSDP full state dict: no `module.` prefix).
    checkpoint = {
        "model": state_dict,
        "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": sorted(state_dict)}]},
        "scheduler": {"warmup_steps": 10000, "last_epoch": 0},
        "reporter": {},
    }
    torch.save(checkpoint, path)
    print(json.dumps({"tensors": len(state_dict), "parameters": sum(t.numel() for t in state_dict.values()),
                      "bytes": sum(t.numel() * t.element_size() for t in state_dict.values())}))
    return 0


def child_load(model_dir: str) -> int:
    from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration

    model = UniAudio2ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16)
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "dtypes": dtypes,
                      "devices": sorted({str(p.device) for p in model.parameters()})}))
    return 0


def conversion_and_loading(preset: str, work_dir: Path, keep: bool, min_available_gb: float, extra_args=()) -> dict:
    import yaml

    config = full_size_config() if preset == "full" else smoke_config()
    layout = original_layout(config)
    keys_check = check_against_keys_tsv(layout) if preset == "full" else "smoke configuration (not compared)"
    weights_bytes = sum(2 * math.prod(shape) for shape in layout.values())  # bfloat16
    needed = 2.2 * weights_bytes
    free_disk = shutil.disk_usage(work_dir.parent if not work_dir.exists() else work_dir).free
    if free_disk < needed:
        raise RuntimeError(f"{work_dir}: {free_disk / GB:.1f} GB free on disk, {needed / GB:.1f} GB needed")
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint, config_path, output_dir = work_dir / "llm_ep1.checkpoint", work_dir / "llm_config.yaml", work_dir / "hf"
    config_path.write_text(yaml.safe_dump(training_yaml(config)))
    min_available = min_available_gb * GB
    result = {"preset": preset, "tensors": len(layout), "parameters": sum(math.prod(s) for s in layout.values()),
              "weights_bytes": weights_bytes, "keys_check": keys_check}
    try:
        me = [sys.executable, str(Path(__file__).resolve())]
        write = run_measured(me + ["--_child", "write", preset, str(checkpoint)], work_dir / "write.log", min_available)
        if write["returncode"] != 0:
            raise RuntimeError(f"writing the synthetic checkpoint failed:\n{write['log_tail']}")
        result["checkpoint_file_bytes"] = checkpoint.stat().st_size
        result["write_wall_s"] = write["wall_s"]
        convert = run_measured(
            [sys.executable, str(CONVERSION_SCRIPT), "--checkpoint_path", str(checkpoint), "--config_path",
             str(config_path), "--output_dir", str(output_dir), *extra_args],
            work_dir / "convert.log", min_available,
        )
        result["conversion"] = _summary(convert, weights_bytes)
        if convert["returncode"] == 0:
            result["converted_bytes"] = sum(f.stat().st_size for f in output_dir.glob("*.safetensors"))
            load = run_measured(me + ["--_child", "load", str(output_dir)], work_dir / "load.log", min_available)
            result["loading"] = _summary(load, weights_bytes)
            if load["returncode"] == 0:
                result["loading"]["model"] = json.loads(load["log_tail"].strip().splitlines()[-1])
    finally:
        if not keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    return result


def _summary(run: dict, weights_bytes: int) -> dict:
    summary = {key: run[key] for key in ("returncode", "peak_rss_bytes", "peak_anon_bytes_polled",
                                         "peak_file_bytes_polled", "killed_for_memory", "wall_s")}
    summary["peak_rss_ratio"] = run["peak_rss_bytes"] / weights_bytes
    summary["peak_anon_ratio"] = run["peak_anon_bytes_polled"] / weights_bytes
    if run["returncode"] != 0:
        summary["log_tail"] = run["log_tail"]
    return summary


# ----------------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small configuration: the same code paths in seconds")
    parser.add_argument("--work_dir", default=None, help="where the synthetic and converted checkpoints go "
                        "(default /tmp/uniaudio2-full-size or /tmp/uniaudio2-full-size-smoke)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints in --work_dir")
    parser.add_argument("--skip_rss", action="store_true", help="skip the conversion/loading figures")
    parser.add_argument("--skip_gpu_memory", action="store_true", help="skip the LoRA step/eval figures")
    parser.add_argument("--min_available_gb", type=float, default=1.0,
                        help="kill a measured child when the machine's available memory falls below this")
    parser.add_argument("--recipe", default=str(RECIPE_CONFIG), help="LoRA recipe config (default: finetune_lora.yaml)")
    parser.add_argument("--output", default=None, help="write the figures as JSON")
    parser.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        kind, *rest = args._child
        return child_write_checkpoint(*rest) if kind == "write" else child_load(*rest)

    preset = "smoke" if args.smoke else "full"
    work_dir = Path(args.work_dir or f"/tmp/uniaudio2-full-size{'-smoke' if args.smoke else ''}")
    figures = {"preset": preset, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                             "torch": torch.__version__}}
    failed = False
    if not args.skip_rss:
        figures["rss"] = rss = conversion_and_loading(preset, work_dir, args.keep, args.min_available_gb)
        weights = rss["weights_bytes"]
        print(f"weights: {rss['parameters']:,} parameters in {rss['tensors']} tensors, {weights / GB:.2f} GB bfloat16 "
              f"({rss['keys_check']})")
        for name in ("conversion", "loading"):
            if name not in rss:
                print(f"{name}_peak_rss: not run")
                failed = True
                continue
            run = rss[name]
            status = "ok" if run["returncode"] == 0 and run["peak_rss_ratio"] <= TARGET_RSS_RATIO else "EXCEEDS TARGET"
            if run["returncode"] != 0:
                status = "killed for memory" if run["killed_for_memory"] else f"FAILED (exit {run['returncode']})"
            failed |= status != "ok"
            print(f"{name}_peak_rss: {run['peak_rss_bytes'] / GB:.2f} GB = {run['peak_rss_ratio']:.3f}x the weights "
                  f"(anonymous {run['peak_anon_ratio']:.3f}x; target <= {TARGET_RSS_RATIO}x; {run['wall_s']:.0f} s) "
                  f"{status}")
    if not args.skip_gpu_memory:
        from_recipe = lora_memory_figures(preset, Path(args.recipe))
        figures["gpu_memory"] = from_recipe
        print(f"gpu_memory_method: {from_recipe['method']}")
        for name in ("lora_train_step", "eval_step"):
            run = from_recipe[name]
            status = "ok" if run["peak_bytes"] <= TARGET_GPU_GB * GB else "EXCEEDS TARGET"
            failed |= status != "ok"
            print(f"{name}_peak_gpu: {run['peak_bytes'] / GB:.2f} GB ({run['describe']}; target <= {TARGET_GPU_GB:.0f} "
                  f"GB) {status}")
        if "eval_note" in from_recipe:
            print(f"eval_note: {from_recipe['eval_note']}")
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=2))
    return 1 if failed and not args.smoke else 0


# ----------------------------------------------------------------------------------------------------------------------
# GPU memory of a LoRA step and an eval step, without a GPU
# ----------------------------------------------------------------------------------------------------------------------


_INTEGER_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _shadow_mode_class():
    from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
    from torch.utils._pytree import tree_flatten, tree_map
    from torch.utils.weak import WeakIdKeyDictionary

    aten = torch.ops.aten

    class ShadowIntegerValues(TorchDispatchMode):
        """
        Fake tensors hold no values, so the sizes of data-dependent ops (`nonzero`, boolean indexing) and `.item()`
        are unknown under `FakeTensorMode`. This mode keeps a real CPU copy of every integer/boolean tensor computed
        from integer/boolean tensors with known values (the batch's ids, codes, masks and labels) and hands the true
        count to `nonzero` (through the fake tensor's `nonzero_memo`) and the true value to `.item()`.
        """

        def __init__(self):
            super().__init__()
            self.values = WeakIdKeyDictionary()
            self.ops = set()

        def _count(self, tensor):
            with _disable_current_modes():
                return int(self.values[tensor].count_nonzero())

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            self.ops.add(str(func))
            inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            if func is aten.nonzero.default and args[0] in self.values:
                args[0].nonzero_memo = self._count(args[0])
            if func is aten.index.Tensor:
                for index in args[1]:
                    if index is not None and index.dtype == torch.bool and index in self.values:
                        index.nonzero_memo = self._count(index)
            if func is aten._local_scalar_dense.default and args[0] in self.values:
                with _disable_current_modes():
                    return self.values[args[0]].item()
            out = func(*args, **kwargs)
            outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            if (outputs and all(t.dtype in _INTEGER_DTYPES for t in outputs) and all(t in self.values for t in inputs)
                    and sum(t.numel() for t in outputs) < 10_000_000):

                def real(value):
                    if isinstance(value, torch.Tensor):
                        return self.values[value]
                    return torch.device("cpu") if isinstance(value, torch.device) else value

                real_args, real_kwargs = tree_map(real, (args, kwargs))
                with _disable_current_modes():
                    real_out = func(*real_args, **real_kwargs)
                real_outputs = [t for t in tree_flatten(real_out)[0] if isinstance(t, torch.Tensor)]
                for fake, value in zip(outputs, real_outputs):
                    self.values[fake] = value
            return out

    return ShadowIntegerValues


def _frozen_aware_mem_tracker():
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

    class FrozenAwareMemTracker(MemTracker):
        """`MemTracker` registers a gradient hook on every parameter; a frozen one (the LoRA base) cannot take one."""

        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            def grad_hook(grad):
                self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

            param_memory = 0
            for param in module.parameters():
                param_memory += sum(w.mem_consumed for w in self._update_and_maybe_create_winfos(param, _MemRefType.PARAM))
                if param.grad is not None:
                    self._update_and_maybe_create_winfos(param.grad, _MemRefType.GRAD)
                if param.requires_grad and install_grad_hooks and self._param_to_grad_hook_handles.get(param) is None:
                    self._param_to_grad_hook_handles[param] = (
                        param.register_hook(grad_hook),
                        param.register_post_accumulate_grad_hook(lambda p: grad_hook(p.grad)),
                    )
            buffer_memory = 0
            for buffer in module.buffers():
                buffer_memory += sum(w.mem_consumed for w in self._update_and_maybe_create_winfos(buffer, _MemRefType.BUFFER))
            return param_memory, buffer_memory

    return FrozenAwareMemTracker


def _recipe_settings(recipe: Path) -> dict:
    """The LoRA recipe's settings, parsed as `uniaudio2 finetune` parses them (its defaults where the file is silent)."""
    from transformers import TrainingArguments

    from uniaudio2.training_uniaudio2 import STAGES, DataArguments, LoraArguments, ModelArguments, parse_arguments

    model_args, data_args, lora_args, training_args = parse_arguments(
        [str(recipe), "--output_dir", "unused", "--report_to", "none"],
        (ModelArguments, DataArguments, LoraArguments, TrainingArguments),
    )
    return {
        "lora_r": lora_args.lora_r,
        "lora_alpha": lora_args.lora_alpha,
        "lora_dropout": lora_args.lora_dropout,
        "lora_depth_decoder": lora_args.lora_depth_decoder,
        "lora_target_modules": lora_args.lora_target_modules,
        "modules_to_save": lora_args.modules_to_save,
        "max_length": data_args.max_length or STAGES[3].context_length,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "per_device_eval_batch_size": training_args.per_device_eval_batch_size,
        "activation_checkpointing": training_args.activation_checkpointing,
        # On a GPU `bf16_if_available` turns bf16 on (see `_training_arguments`).
        "bf16": training_args.bf16 or model_args.bf16_if_available,
        "optim": str(getattr(training_args.optim, "value", training_args.optim)),
        "learning_rate": training_args.learning_rate,
        "weight_decay": training_args.weight_decay,
        "prediction_loss_only": training_args.prediction_loss_only,
    }


def _with_recipe_lora(model, settings: dict):
    """`model` with the LoRA recipe's checkpointing and adapters (`settings` from `_recipe_settings`)."""
    from peft import get_peft_model

    from uniaudio2.training_uniaudio2 import uniaudio2_lora_config

    if settings["activation_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = uniaudio2_lora_config(
        r=settings["lora_r"], lora_alpha=settings["lora_alpha"], lora_dropout=settings["lora_dropout"],
        include_depth_decoder=settings["lora_depth_decoder"], target_modules=settings["lora_target_modules"],
        modules_to_save=settings["modules_to_save"],
    )
    return get_peft_model(model, lora)


def _audio_dense_batch(config: UniAudio2Config, batch_size: int, length: int) -> dict[str, torch.Tensor]:
    """Every row an audio frame (all 8 codebooks labelled), as in the middle of a TTS target: the depth decoder's
    worst case. Audio rows carry no text target (the collator's `labels` are -100 there)."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, min(config.reasoning_vocab_size, config.reconstruction_vocab_size) - 8,
                          (batch_size, length, config.num_codebooks), generator=generator)
    return {
        "input_ids": torch.full((batch_size, length), config.text_pad_token_id),
        "audio_codes": codes,
        "audio_codes_mask": torch.ones(batch_size, length, dtype=torch.bool),
        "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
        "labels": torch.full((batch_size, length), -100),
        "audio_labels": codes.clone(),
    }


def _fakeify(module: torch.nn.Module, device: str):
    """Replace every parameter and buffer (meta) by an uninitialised fake tensor (no storage) on `device`."""
    for owner in module.modules():
        for name, tensor in list(owner._parameters.items()):
            if tensor is not None:
                owner._parameters[name] = torch.nn.Parameter(
                    torch.empty(tensor.shape, dtype=tensor.dtype, device=device), requires_grad=tensor.requires_grad
                )
        for name, tensor in list(owner._buffers.items()):
            if tensor is not None:
                owner._buffers[name] = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)


def lora_memory_figures(preset: str, recipe: Path) -> dict:
    """Peak memory of one LoRA training step and one eval step (see the module docstring for the method)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import _MemRefType
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration

    settings = _recipe_settings(recipe)
    config = full_size_config() if preset == "full" else smoke_config()
    config.use_cache = False  # as `load_model` of the recipe sets for training
    # A CPU-only build cannot index fake `cuda` tensors (indexing opens a CUDA device guard) nor run autograd on a fake
    # accelerator backend, so the fake tensors live on the fake `cpu` device; no memory is allocated either way.
    device = "cpu"
    ShadowIntegerValues = _shadow_mode_class()
    MemTracker = _frozen_aware_mem_tracker()
    results = {"recipe": str(recipe), "settings": settings}

    def build(train: bool):
        with torch.device("meta"):
            model = UniAudio2ForConditionalGeneration(config).to(torch.bfloat16)
        return _with_recipe_lora(model, settings).train(train)

    def measure(train: bool, batch_size: int) -> dict:
        model = build(train)
        trainable = [p for p in model.parameters() if p.requires_grad]
        batch = _audio_dense_batch(config, batch_size, settings["max_length"])
        mode = FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv(allow_dynamic_output_shape_ops=True))
        shadow = ShadowIntegerValues()
        with mode:
            _fakeify(model, device)
            trainable = [p for p in model.parameters() if p.requires_grad]
            inputs = {}
            for key, value in batch.items():
                inputs[key] = torch.empty(value.shape, dtype=value.dtype, device=device)
                shadow.values[inputs[key]] = value
            optimizer = None
            if train:
                optimizer = torch.optim.AdamW(trainable, lr=settings["learning_rate"],
                                              weight_decay=settings["weight_decay"],
                                              fused="fused" in settings["optim"])
            tracker = MemTracker()
            tracker.track_external(model, *([optimizer] if optimizer else []), *inputs.values())
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings["bf16"])
            with tracker, shadow:
                if train:
                    with autocast:
                        out = model(**inputs)
                    out.loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    del out
                else:
                    with torch.no_grad(), autocast:
                        out = model(**inputs)
                    kept = sum(t.numel() * t.element_size() for t in (out.logits, out.audio_logits, out.last_hidden_state)
                               if t is not None)
                    del out
            peak = tracker.get_tracker_snapshot("peak")[torch.device(device)]
        by_kind = {kind.value if hasattr(kind, "value") else str(kind): int(v) for kind, v in peak.items() if kind != "Total"}
        result = {
            "peak_bytes": int(peak["Total"]),
            "peak_by_kind_bytes": by_kind,
            "batch": f"{batch_size} x {settings['max_length']} audio-dense rows",
            "trainable_parameters": sum(p.numel() for p in trainable),
            "parameters": sum(p.numel() for p in model.parameters()),
            "attention_kernels": sorted(op for op in shadow.ops if "attention" in op and "backward" not in op),
        }
        if not train:
            result["outputs_bytes"] = kept
        parts = ", ".join(f"{k.lower()} {v / GB:.2f}" for k, v in by_kind.items() if v >= 0.005 * GB)
        result["describe"] = f"{result['batch']}; at the peak: {parts} GB"
        return result

    results["lora_train_step"] = measure(True, settings["per_device_train_batch_size"])
    results["eval_step"] = measure(False, settings["per_device_eval_batch_size"])
    results["method"] = (
        "FakeTensorMode (fake CPU device: no storage) + torch.distributed._tools.mem_tracker.MemTracker, bf16 weights, "
        f"peft LoRA r={settings['lora_r']} from {recipe.name}, activation checkpointing "
        f"{'on (non-reentrant)' if settings['activation_checkpointing'] else 'off'}, "
        f"{'bf16 autocast, ' if settings['bf16'] else ''}AdamW{' (fused)' if 'fused' in settings['optim'] else ''} "
        "on the LoRA parameters; CUDA context, cuBLAS/attention workspaces and allocator fragmentation not included"
    )
    if not settings["prediction_loss_only"]:
        results["eval_note"] = (
            "Trainer keeps every eval step's outputs (logits) on the device unless prediction_loss_only is set: "
            f"{results['eval_step']['outputs_bytes'] / GB:.2f} GB more per eval step of "
            f"{settings['per_device_eval_batch_size']} rows"
        )
    return results


if __name__ == "__main__":
    sys.exit(main())
