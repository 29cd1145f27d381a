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
Training UniAudio 2.0 with `Trainer`: the four-stage recipe of the paper and LoRA fine-tuning with PEFT.

* **Stages** ([`STAGES`]): freezing is a recipe setting (regular expressions over parameter names), not a model class.
  Stage 1 trains the audio embeddings and the understanding layers with the text loss, stage 2 the generation layers
  and the depth decoder (input projection, layers, codebook heads), stages 3 and 4 everything; stage 4 trains on
  auditory sentences with a 2048-row context. Stage N starts from stage N−1's output directory.
* **LoRA** ([`lora_target_modules`], [`uniaudio2_lora_config`]): peft has no default targets for `uniaudio2`, so the
  attention and MLP projections of the understanding, backbone and generation stacks (optionally the depth decoder)
  are targeted with an explicit regular expression.
* **Entry points** [`train_main`] and [`finetune_main`] take an argument list (`uniaudio2 train ...`, `uniaudio2
  finetune ...`, `recipes/*.py`, `accelerate launch`); an optional first argument names a YAML/JSON file of
  defaults that later command-line flags override.
"""

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.utils import logging

from .configuration_uniaudio2 import UniAudio2Config
from .data_uniaudio2 import (
    CFG_DROPOUT_RATE,
    UniAudio2DataCollator,
    build_auditory_sentences,
    codec_encode_fn,
    encode_grids,
    examples_to_dataset,
    pack_grids,
    special_ids_from_tokenizer,
    synthetic_examples,
    synthetic_special_ids,
    tokenize_audio_dataset,
    tokenize_text_dataset,
)
from .modeling_uniaudio2 import UniAudio2ForConditionalGeneration
from .utils_uniaudio2 import atomic_directory


logger = logging.get_logger(__name__)

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
               "mlp.up_proj", "mlp.down_proj")
STACKS = {"understanding": "model.understanding_layers", "backbone": "model.layers", "generation": "model.generation_layers"}


def lora_target_modules(
    stacks=("understanding", "backbone", "generation"),
    include_depth_decoder: bool = False,
    projections=PROJECTIONS,
) -> str:
    """
    The peft `target_modules` regular expression of UniAudio 2.0: the given projections of every layer of the given
    stacks (`"understanding"`, `"backbone"`, `"generation"`), and of the depth decoder's layers when
    `include_depth_decoder`. Embeddings, heads and norms are never targeted (use `modules_to_save` for them).
    """
    unknown = set(stacks) - set(STACKS)
    if unknown:
        raise ValueError(f"Unknown stacks {sorted(unknown)}; choose among {sorted(STACKS)}.")
    prefixes = [STACKS[stack] for stack in stacks] + (["depth_decoder.layers"] if include_depth_decoder else [])
    if not prefixes:
        raise ValueError("LoRA needs at least one stack.")
    stack_alternatives = "|".join(re.escape(prefix) for prefix in prefixes)
    projection_alternatives = "|".join(re.escape(projection) for projection in projections)
    return rf"^({stack_alternatives})\.\d+\.({projection_alternatives})$"


UNIAUDIO2_LORA_TARGETS = lora_target_modules()
"""LoRA targets: attention (q, k, v, o) and MLP (gate, up, down) projections of the three stacks."""

UNIAUDIO2_LORA_TARGETS_WITH_DEPTH_DECODER = lora_target_modules(include_depth_decoder=True)
"""[`UNIAUDIO2_LORA_TARGETS`] plus the projections of the depth decoder's layers."""


def uniaudio2_lora_config(
    r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    include_depth_decoder: bool = False,
    target_modules: str | None = None,
    modules_to_save: list[str] | None = None,
):
    """A `peft.LoraConfig` (task type `CAUSAL_LM`) with the UniAudio 2.0 targets."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules or lora_target_modules(include_depth_decoder=include_depth_decoder),
        modules_to_save=modules_to_save,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingStage:
    """
    One stage of the recipe: which parameters train (regular expressions matched in full against the names of
    `UniAudio2ForConditionalGeneration.named_parameters()`; every other parameter is frozen), the context length,
    which losses are computed and whether the data are auditory sentences.
    """

    stage: int
    name: str
    trainable_parameters: tuple[str, ...]
    context_length: int = 1024
    text_loss: bool = True
    audio_loss: bool = True
    auditory_sentences: bool = False


STAGES: dict[int, TrainingStage] = {
    1: TrainingStage(
        1,
        "audio-understanding warm-up",
        (r"model\.embed_audio_tokens\..*", r"model\.understanding_layers\..*", r"model\.understanding_norm\..*"),
        audio_loss=False,
    ),
    2: TrainingStage(
        2,
        "audio-generation warm-up",
        (r"model\.generation_layers\..*", r"model\.generation_norm\..*", r"depth_decoder\..*"),
    ),
    3: TrainingStage(3, "audio-text pre-training", (r".*",)),
    4: TrainingStage(4, "mid-training on auditory sentences", (r".*",), context_length=2048, auditory_sentences=True),
}
"""The four stages of the paper (§4.4, Table 18) as data."""


def apply_freezing(model: torch.nn.Module, trainable_parameters) -> tuple[list[str], list[str]]:
    """
    Set `requires_grad` from regular expressions: a parameter trains iff its name fully matches one of them. Returns
    the trainable and the frozen parameter names. Raises when a pattern matches nothing (a typo would otherwise
    silently freeze the whole model).
    """
    patterns = [re.compile(pattern) for pattern in trainable_parameters]
    used = [False] * len(patterns)
    trainable, frozen = [], []
    for name, parameter in model.named_parameters():
        matches = [i for i, pattern in enumerate(patterns) if pattern.fullmatch(name)]
        for i in matches:
            used[i] = True
        parameter.requires_grad_(bool(matches))
        (trainable if matches else frozen).append(name)
    unused = [p.pattern for p, hit in zip(patterns, used) if not hit]
    if unused:
        raise ValueError(f"These trainable-parameter patterns match no parameter: {unused}.")
    return trainable, frozen


def freeze_for_stage(model: torch.nn.Module, stage: int | TrainingStage, trainable_parameters=None):
    """Freeze `model` for a stage of [`STAGES`] (or custom `trainable_parameters`); see [`apply_freezing`]."""
    stage = STAGES[stage] if isinstance(stage, int) else stage
    return apply_freezing(model, trainable_parameters or stage.trainable_parameters)


def init_backbone_from_llama(model: UniAudio2ForConditionalGeneration, llama) -> list[str]:
    """
    Copy a Llama checkpoint in Hugging Face format (a `LlamaForCausalLM`, its state dict, or a directory / hub id)
    into the backbone: text embeddings, backbone layers, final norm and text head. The shapes must match (e.g. a
    Llama-3.2-3B directory for the default config). Returns the names of the parameters that were set.
    """
    if isinstance(llama, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        llama = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32)
    state = llama if isinstance(llama, dict) else llama.state_dict()
    own = model.state_dict()
    mapping = {"model.embed_tokens.weight": "model.embed_tokens.weight", "model.norm.weight": "model.norm.weight"}
    mapping["lm_head.weight"] = "lm_head.weight" if "lm_head.weight" in state else "model.embed_tokens.weight"
    num_layers = model.config.num_backbone_layers
    llama_layers = {int(m.group(1)) for k in state if (m := re.match(r"model\.layers\.(\d+)\.", k))}
    if len(llama_layers) != num_layers:
        raise ValueError(f"The Llama checkpoint has {len(llama_layers)} layers, the backbone {num_layers}.")
    for key in state:
        if key.startswith("model.layers.") and key in own:
            mapping[key] = key
    for target, source in mapping.items():
        if source not in state:
            raise ValueError(f"The Llama checkpoint has no {source!r}.")
        if state[source].shape != own[target].shape:
            raise ValueError(f"Shape mismatch for {target}: Llama {tuple(state[source].shape)}, model {tuple(own[target].shape)}.")
    with torch.no_grad():
        for target, source in mapping.items():
            own[target].copy_(state[source])
    return sorted(mapping)


def parameters_checksum(model: torch.nn.Module) -> dict[str, float]:
    """Per-parameter sums (float64) of a model, to compare replicas (e.g. the ranks of a distributed run)."""
    return {name: float(p.detach().double().sum()) for name, p in model.named_parameters()}


class ReplicaChecksumCallback(TrainerCallback):
    """
    At the end of training, every process writes `<directory>/rank<i>.json` with its world size, step and
    [`parameters_checksum`] of its model replica: in a data-parallel run the files of all ranks must agree.
    """

    def __init__(self, directory: str):
        self.directory = directory

    def on_train_end(self, args, state, control, model=None, **kwargs):
        os.makedirs(self.directory, exist_ok=True)
        record = {
            "process_index": args.process_index,
            "world_size": args.world_size,
            "global_step": state.global_step,
            "parameters": parameters_checksum(model),
        }
        with open(os.path.join(self.directory, f"rank{args.process_index}.json"), "w") as file:
            json.dump(record, file)


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    """Which model to train."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "UniAudio 2.0 checkpoint to start from (e.g. the output of the previous stage)."}
    )
    config_name: str | None = field(
        default=None, metadata={"help": "UniAudio2Config file or directory, to train from scratch (stage 1)."}
    )
    backbone_from: str | None = field(
        default=None, metadata={"help": "Llama checkpoint in HF format to initialise the backbone (with --config_name)."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Load --model_name_or_path and --processor with their remote code."}
    )
    bf16_if_available: bool = field(
        default=False, metadata={"help": "Train in bf16 mixed precision when the accelerator supports it."}
    )
    text_loss_weight: float | None = field(default=None, metadata={"help": "Override the text loss weight (1.6)."})
    audio_loss_weight: float | None = field(default=None, metadata={"help": "Override the codebook loss weight (1.0)."})
    codebook_loss_weights: list[float] | None = field(
        default=None, metadata={"help": "Override the per-codebook weights (2 2 2 1 1 1 1 1)."}
    )


@dataclass
class DataArguments:
    """Where the data come from and how they are built."""

    dataset: str | None = field(
        default=None,
        metadata={"help": "Example rows: a `save_to_disk` directory, or data files (.json/.jsonl/.parquet/.csv)."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of --dataset data files."})
    eval_dataset: str | None = field(default=None, metadata={"help": "Evaluation rows (same formats as --dataset)."})
    eval_split_size: float = field(default=0.0, metadata={"help": "Hold out this fraction of --dataset for evaluation."})
    streaming: bool = field(default=False, metadata={"help": "Stream --dataset data files (needs --max_steps)."})
    tasks: list[str] | None = field(default=None, metadata={"help": "Keep only rows of these tasks."})
    synthetic_examples: int = field(default=0, metadata={"help": "Train on this many synthetic examples instead."})
    synthetic_tasks: list[str] = field(default_factory=lambda: ["ASR", "TTS"], metadata={"help": "Synthetic tasks."})
    processor: str | None = field(
        default=None,
        metadata={"help": "UniAudio2Processor directory: its tokenizer tokenises text, its codec encodes raw audio."},
    )
    tokenizer: str | None = field(default=None, metadata={"help": "Llama-3 tokenizer for text given as strings."})
    codec: str | None = field(default=None, metadata={"help": "ReasoningCodec directory for rows with raw audio."})
    audio_columns: str | None = field(
        default=None,
        metadata={"help": 'JSON map audio column -> [reasoning key, reconstruction key] (default {"audio": '
                          '["reason_seq", "semantic_seq"]}).'},
    )
    audio_cache_dir: str | None = field(
        default=None, metadata={"help": "Directory of the encoded-audio cache (written once, reused)."}
    )
    max_length: int | None = field(default=None, metadata={"help": "Context length in rows (default: the stage's)."})
    packing: bool = field(default=False, metadata={"help": "Pack examples to the context length."})
    auditory_sentences: bool | None = field(default=None, metadata={"help": "Chain related rows (default: stage 4)."})
    min_segments: int = field(default=2, metadata={"help": "Fewest segments of an auditory sentence."})
    max_segments: int = field(default=8, metadata={"help": "Most segments of an auditory sentence."})
    group_column: str = field(default="group", metadata={"help": "Column telling which rows are related."})
    cfg_dropout_rate: float = field(default=CFG_DROPOUT_RATE, metadata={"help": "Condition dropout probability."})


@dataclass
class StageArguments:
    """Which stage of the recipe runs (freezing, context, losses)."""

    stage: int = field(default=3, metadata={"help": "Training stage 1-4."})
    trainable_parameters: list[str] | None = field(
        default=None, metadata={"help": "Regular expressions of the trainable parameters (default: the stage's)."}
    )
    replica_checksums: bool = field(
        default=False,
        metadata={"help": "Each process writes the checksums of its replica to <output_dir>/replica_checksums/."},
    )

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {sorted(STAGES)}, got {self.stage}.")


@dataclass
class LoraArguments:
    """LoRA settings of `finetune`."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_depth_decoder: bool = field(default=False, metadata={"help": "Also adapt the depth decoder's layers."})
    lora_target_modules: str | None = field(default=None, metadata={"help": "Custom target regular expression."})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "Modules trained in full and saved."})
    merge_adapters: bool = field(default=False, metadata={"help": "Also save the merged model, a complete bundle, to <output_dir>/merged."})


def parse_arguments(argv, dataclass_types):
    """
    Parse `argv` into the dataclasses. When the first argument is a `.yaml`/`.yml`/`.json` file, its keys are
    defaults that the remaining flags override.
    """
    argv = list(argv or [])
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        path = Path(argv.pop(0))
        if path.suffix == ".json":
            values = json.loads(path.read_text())
        else:
            import yaml

            values = yaml.safe_load(path.read_text()) or {}
        argv = _dict_to_argv(values) + argv
    parser = HfArgumentParser(dataclass_types)
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def _dict_to_argv(values: dict) -> list[str]:
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, list):
            argv += [f"--{key}", *[str(v) for v in value]]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks of the entry points
# ----------------------------------------------------------------------------------------------------------------------


def _absolute_if_local(name_or_path: str) -> str:
    return os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else name_or_path


def load_processor(name_or_path, trust_remote_code: bool = False):
    """
    The `UniAudio2Processor` (tokenizer + feature extractor with its codec) of a saved bundle. Without
    `trust_remote_code` it is built from this package's classes, as [`load_model`] builds the model, so a bundle
    whose configs name remote code (e.g. `pretrained/tiny-uniaudio2`) loads without it; with it, from the bundle's code.
    """
    if trust_remote_code:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(name_or_path, trust_remote_code=True)
    from .feature_extraction_uniaudio2 import UniAudio2FeatureExtractor
    from .processing_uniaudio2 import UniAudio2Processor

    # An explicit feature extractor keeps `ProcessorMixin` from resolving it through `AutoFeatureExtractor` (which
    # refuses the bundle's `auto_map` without remote code); the tokenizer is a plain `tokenizers` one.
    extractor = UniAudio2FeatureExtractor.from_pretrained(name_or_path)
    return UniAudio2Processor.from_pretrained(name_or_path, feature_extractor=extractor)


def load_model(model_args: ModelArguments, dtype: torch.dtype | None = None) -> UniAudio2ForConditionalGeneration:
    """
    The model to train: a checkpoint (in `dtype`, float32 by default), or a fresh model from a config (with an optional
    Llama backbone).
    """
    if model_args.model_name_or_path:
        kwargs = {"dtype": dtype or torch.float32}
        # A local directory is recorded by its absolute path (peft writes it to adapter_config.json as the base to
        # reload), so the outputs work from any working directory; a hub id stays as it is.
        source = _absolute_if_local(model_args.model_name_or_path)
        if model_args.trust_remote_code:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=True, **kwargs)
        else:
            model = UniAudio2ForConditionalGeneration.from_pretrained(source, **kwargs)
    elif model_args.config_name:
        path = Path(model_args.config_name)
        config = (
            UniAudio2Config.from_json_file(str(path)) if path.is_file() else UniAudio2Config.from_pretrained(str(path))
        )
        model = UniAudio2ForConditionalGeneration(config)
    else:
        raise ValueError("Give --model_name_or_path (a checkpoint) or --config_name (to train from scratch).")
    if model_args.backbone_from:
        init_backbone_from_llama(model, model_args.backbone_from)
    for name in ("text_loss_weight", "audio_loss_weight", "codebook_loss_weights"):
        value = getattr(model_args, name)
        if value is not None:
            setattr(model.config, name, value)
    model.config.validate_architecture()
    # Training never reuses a KV cache; without one, packed rows get a block-diagonal causal mask.
    model.config.use_cache = False
    return model


def _load_rows(path: str, split: str, streaming: bool):
    import datasets

    directory = Path(path)
    if directory.is_dir() and ((directory / "dataset_dict.json").exists() or (directory / "state.json").exists()):
        dataset = datasets.load_from_disk(path)
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[split]
        return dataset.to_iterable_dataset() if streaming else dataset
    suffix = Path(path).suffix.lstrip(".")
    builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv", "arrow": "arrow"}.get(suffix)
    if builder is None:
        return datasets.load_dataset(path, split=split, streaming=streaming)
    return datasets.load_dataset(builder, data_files=path, split="train", streaming=streaming)


def build_datasets(
    data_args: DataArguments,
    config,
    stage: TrainingStage | None,
    seed: int = 0,
    trust_remote_code: bool = False,
    device: torch.device | str | None = None,
):
    """
    Train and eval datasets of grid features and the grid ids, from `--dataset` rows (text tokenised, audio encoded
    with the codec, on `device`, once and cached) or from synthetic examples.
    """
    max_length = data_args.max_length or (stage.context_length if stage is not None else None)
    tokenizer = processor = None
    if data_args.processor:
        processor = load_processor(data_args.processor, trust_remote_code)
        processor.feature_extractor.place_codec(device)
        tokenizer = processor.tokenizer
        special_ids = processor.special_ids()
    elif data_args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(data_args.tokenizer)
        special_ids = special_ids_from_tokenizer(config, tokenizer)
    else:
        special_ids = synthetic_special_ids(config)

    def prepare(rows, name):
        if data_args.tasks:
            wanted = set(data_args.tasks)
            rows = rows.filter(lambda task: task in wanted, input_columns="task")
        columns = getattr(rows, "column_names", None) or []
        audio_columns = json.loads(data_args.audio_columns) if data_args.audio_columns else {"audio": ["reason_seq", "semantic_seq"]}
        if any(column in columns for column in audio_columns):
            if processor is not None:
                codec_name = Path(data_args.processor).name

                def encode_fn(waveform, sampling_rate):
                    return processor.feature_extractor.encode(waveform, sampling_rate=sampling_rate)[0]
            elif data_args.codec:
                from .modeling_reasoning_codec import ReasoningCodecModel

                codec_name = Path(data_args.codec).name
                codec = ReasoningCodecModel.from_pretrained(data_args.codec).eval()
                encode_fn = codec_encode_fn(codec.to(device) if device is not None else codec)
            else:
                raise ValueError("The dataset has raw audio: give --processor or --codec to encode it.")
            cache = {}
            if data_args.audio_cache_dir and hasattr(rows, "cache_files"):
                os.makedirs(data_args.audio_cache_dir, exist_ok=True)
                cache = {"cache_file_name": os.path.join(data_args.audio_cache_dir, f"{name}-codes.arrow"),
                         "load_from_cache_file": True, "new_fingerprint": f"codes-{codec_name}-{name}"}
            rows = tokenize_audio_dataset(rows, encode_fn, {k: tuple(v) for k, v in audio_columns.items()}, **cache)
        if tokenizer is not None:
            rows = tokenize_text_dataset(rows, tokenizer, special_ids)
        grids = encode_grids(rows, special_ids, seed=seed, max_length=max_length)
        sentences = data_args.auditory_sentences if data_args.auditory_sentences is not None else (
            stage is not None and stage.auditory_sentences)
        if sentences:
            grids = build_auditory_sentences(grids, max_length, data_args.min_segments, data_args.max_segments,
                                             group_column=data_args.group_column, seed=seed)
        elif data_args.packing:
            grids = pack_grids(grids, max_length)
        return grids

    if data_args.synthetic_examples:
        rows = examples_to_dataset(synthetic_examples(
            config, special_ids, data_args.synthetic_examples, tasks=data_args.synthetic_tasks, seed=seed,
            num_groups=max(1, data_args.synthetic_examples // 4),
        ))
    elif data_args.dataset:
        rows = _load_rows(data_args.dataset, data_args.dataset_split, data_args.streaming)
    else:
        raise ValueError("Give --dataset (example rows) or --synthetic_examples N.")
    eval_rows = None
    if data_args.eval_dataset:
        eval_rows = _load_rows(data_args.eval_dataset, data_args.dataset_split, False)
    elif data_args.eval_split_size > 0:
        split = rows.train_test_split(test_size=data_args.eval_split_size, seed=seed)
        rows, eval_rows = split["train"], split["test"]
    train = prepare(rows, "train")
    evaluation = prepare(eval_rows, "eval") if eval_rows is not None else None
    return train, evaluation, special_ids


def _training_arguments(training_args: TrainingArguments, model_args: ModelArguments) -> TrainingArguments:
    # The grid columns are not forward arguments: the collator needs them all.
    training_args.remove_unused_columns = False
    if model_args.bf16_if_available and not (training_args.bf16 or training_args.fp16) and not training_args.use_cpu:
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            training_args.bf16 = True
    # Non-reentrant checkpointing also gives gradients to adapters and layers whose inputs come from frozen modules.
    if training_args.activation_checkpointing and not training_args.activation_checkpointing_kwargs:
        training_args.activation_checkpointing_kwargs = {"use_reentrant": False}
    return training_args


class ResumableCollator(TrainerCallback):
    """
    A [`UniAudio2DataCollator`] whose random draws (the condition dropout) do not depend on whether the run was
    interrupted: each batch draws from a generator seeded by (the collator's seed, the epoch, the batch's ids), not
    from one stream advanced batch after batch. A resumed `Trainer` skips the batches it already trained on without
    collating them, and collates one batch ahead of the step it checkpoints, so a single stream would be out of step
    after a resume. It is also the callback that tells it the epoch: pass it as `data_collator` and in `callbacks`.
    """

    def __init__(self, collator: UniAudio2DataCollator):
        if collator.seed is None:
            raise ValueError("ResumableCollator needs a collator with a seed.")
        self.collator = collator
        self.epoch = 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        # `state.epoch` is the epoch index at its start (a fraction of it when resuming mid-epoch).
        self.epoch = math.floor((state.epoch or 0) + 1e-6)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        digest = hashlib.blake2b(f"{self.collator.seed}/{self.epoch}".encode(), digest_size=8)
        for feature in features:
            for key in ("input_ids", "audio_codes"):
                if key in feature:
                    digest.update(np.asarray(feature[key], dtype=np.int64).tobytes())
        seed = int.from_bytes(digest.digest(), "little") & (2**63 - 1)
        return dataclasses.replace(self.collator, seed=seed)(features)


def last_complete_checkpoint(output_dir) -> str | None:
    """
    The newest `checkpoint-N` folder of `output_dir` that was saved completely, or `None`. `Trainer` writes a
    checkpoint's `trainer_state.json` last, so a run killed while saving leaves a folder without a readable one: it is
    skipped, and the run resumes from the checkpoint before.
    """
    if not os.path.isdir(output_dir):
        return None
    steps = []
    for name in os.listdir(output_dir):
        match = re.fullmatch(r"checkpoint-(\d+)", name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            steps.append((int(match.group(1)), name))
    for _, name in sorted(steps, reverse=True):
        try:
            with open(os.path.join(output_dir, name, "trainer_state.json")) as file:
                json.load(file)
        except (OSError, ValueError):
            continue
        return os.path.join(output_dir, name)
    return None


def _resume_checkpoint(training_args: TrainingArguments) -> str | None:
    """
    Where training resumes: `--resume_from_checkpoint DIR`; with `last` (or `true`), or by default when `--output_dir`
    already holds one (as the transformers example scripts do), its [`last_complete_checkpoint`].
    """
    resume = training_args.resume_from_checkpoint
    if resume is not None and str(resume).lower() not in ("last", "true"):
        return resume
    last = last_complete_checkpoint(training_args.output_dir)
    if last is None and resume is not None:
        raise ValueError(f"--resume_from_checkpoint {resume}: {training_args.output_dir} holds no complete checkpoint.")
    if last is not None:
        logger.warning(f"Resuming training from {last} (a complete checkpoint found in --output_dir).")
    return last


def _save_final_model(trainer: Trainer, output_dir: str) -> None:
    """
    `trainer.save_model` through a staging folder: each file is moved into `output_dir` only when all are written,
    the configs (which loaders read first) last, so a failure or a kill never leaves half-written weights there.
    """
    staging = os.path.join(output_dir, ".final-model-partial")
    main_process = trainer.args.should_save
    if main_process:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(staging)  # every process calls it (sharded state dicts are gathered), the main one writes
    if main_process:
        for name in sorted(os.listdir(staging), key=lambda name: name.endswith("config.json")):
            target = os.path.join(output_dir, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.replace(os.path.join(staging, name), target)
        os.rmdir(staging)


def _train_and_save(trainer: Trainer, training_args: TrainingArguments, eval_dataset):
    result = trainer.train(resume_from_checkpoint=_resume_checkpoint(training_args))
    # `load_model` turned the KV cache off for training; the saved model generates with it.
    trainer.model.config.use_cache = True
    _save_final_model(trainer, training_args.output_dir)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    trainer.save_state()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Every rank leaves the group together and tears it down before the interpreter exits: left to exit, a rank's
        # gloo threads can abort it ("terminate called without an active exception") after a successful run.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def save_merged_bundle(peft_model, output_dir, processor=None) -> Path:
    """
    Merge the adapters of `peft_model` into its base and save a complete bundle to `output_dir`: weights, config,
    generation config and remote code of the model and, given the `processor` of the base, its tokenizer, processor
    config and codec, so that `pipeline(..., model=output_dir, trust_remote_code=True)` loads it. Written to a
    temporary folder and moved into place when complete.
    """
    merged = peft_model.merge_and_unload()
    with atomic_directory(output_dir) as tmp_dir:
        merged.save_pretrained(tmp_dir)
        if processor is not None:
            processor.save_pretrained(tmp_dir)
    return Path(output_dir)


def _bundle_processor(data_args: DataArguments, model_args: ModelArguments):
    """The processor a merged bundle ships: `--processor`'s, else the base checkpoint's when it has one."""
    source = data_args.processor
    if source is None and model_args.model_name_or_path:
        candidate = Path(model_args.model_name_or_path)
        if (candidate / "processor_config.json").is_file():
            source = str(candidate)
    return load_processor(source, model_args.trust_remote_code) if source else None


def train_main(argv=None) -> int:
    """
    `uniaudio2 train`: run one stage of the four-stage recipe with `Trainer` and save the model (with its remote code)
    to `--output_dir`, ready to initialise the next stage (`--model_name_or_path <output_dir>`).
    """
    model_args, data_args, stage_args, training_args = parse_arguments(
        argv, (ModelArguments, DataArguments, StageArguments, TrainingArguments)
    )
    training_args = _training_arguments(training_args, model_args)
    set_seed(training_args.seed)
    stage = STAGES[stage_args.stage]
    model = load_model(model_args)
    trainable, frozen = freeze_for_stage(model, stage, stage_args.trainable_parameters)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(f"Stage {stage.stage} ({stage.name}): {len(trainable)} trainable tensors ({count:,} parameters), "
                f"{len(frozen)} frozen.")
    with training_args.main_process_first(desc="dataset preparation"):
        train_dataset, eval_dataset, special_ids = build_datasets(
            data_args, model.config, stage, training_args.seed, model_args.trust_remote_code, training_args.device
        )
    collator = ResumableCollator(UniAudio2DataCollator(
        special_ids, cfg_dropout_rate=data_args.cfg_dropout_rate, seed=training_args.seed + training_args.process_index,
        text_loss=stage.text_loss, audio_loss=stage.audio_loss,
    ))
    callbacks = [collator]
    if stage_args.replica_checksums:
        callbacks.append(ReplicaChecksumCallback(os.path.join(training_args.output_dir, "replica_checksums")))
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                      data_collator=collator, callbacks=callbacks)
    _train_and_save(trainer, training_args, eval_dataset)
    return 0


def finetune_main(argv=None) -> int:
    """
    `uniaudio2 finetune`: LoRA fine-tuning of a UniAudio 2.0 checkpoint with `Trainer` + peft; saves the adapter to
    `--output_dir` (loadable with `PeftModel.from_pretrained` or `AutoPeftModelForCausalLM`: `adapter_config.json`
    names a local base by its absolute path) and, with `--merge_adapters`, the merged model with the base's processor
    (tokenizer, codec) to `<output_dir>/merged` (see [`save_merged_bundle`]). A run resumes from the last complete
    checkpoint of `--output_dir` (see [`_resume_checkpoint`]).
    """
    from peft import get_peft_model

    model_args, data_args, lora_args, training_args = parse_arguments(
        argv, (ModelArguments, DataArguments, LoraArguments, TrainingArguments)
    )
    training_args = _training_arguments(training_args, model_args)
    set_seed(training_args.seed)
    # The frozen base is stored in the training precision (bf16: half the memory of float32 weights); peft keeps the
    # adapters in float32.
    model = load_model(model_args, dtype=torch.bfloat16 if training_args.bf16 else None)
    lora_config = uniaudio2_lora_config(
        r=lora_args.lora_r, lora_alpha=lora_args.lora_alpha, lora_dropout=lora_args.lora_dropout,
        include_depth_decoder=lora_args.lora_depth_decoder, target_modules=lora_args.lora_target_modules,
        modules_to_save=lora_args.modules_to_save,
    )
    model = get_peft_model(model, lora_config)
    with training_args.main_process_first(desc="dataset preparation"):
        train_dataset, eval_dataset, special_ids = build_datasets(
            data_args, model.config, None if data_args.max_length else STAGES[3], training_args.seed,
            model_args.trust_remote_code, training_args.device,
        )
    collator = ResumableCollator(UniAudio2DataCollator(
        special_ids, cfg_dropout_rate=data_args.cfg_dropout_rate, seed=training_args.seed + training_args.process_index
    ))
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                      data_collator=collator, callbacks=[collator])
    _train_and_save(trainer, training_args, eval_dataset)
    if lora_args.merge_adapters and training_args.process_index == 0:
        save_merged_bundle(trainer.model, os.path.join(training_args.output_dir, "merged"),
                           _bundle_processor(data_args, model_args))
    return 0


__all__ = [
    "STAGES",
    "UNIAUDIO2_LORA_TARGETS",
    "UNIAUDIO2_LORA_TARGETS_WITH_DEPTH_DECODER",
    "DataArguments",
    "LoraArguments",
    "ModelArguments",
    "ReplicaChecksumCallback",
    "ResumableCollator",
    "StageArguments",
    "TrainingStage",
    "apply_freezing",
    "build_datasets",
    "finetune_main",
    "freeze_for_stage",
    "init_backbone_from_llama",
    "last_complete_checkpoint",
    "load_model",
    "load_processor",
    "lora_target_modules",
    "parameters_checksum",
    "parse_arguments",
    "save_merged_bundle",
    "train_main",
    "uniaudio2_lora_config",
]
