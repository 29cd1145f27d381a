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
Multi-task training data for UniAudio 2.0 with 🤗 Datasets.

The pipeline has three layers, each a `datasets` map so that it works the same on a map-style `Dataset` (cached on
disk, written once) and on a streaming `IterableDataset` (computed lazily):

1. **Examples** are rows with a `task` column and one column per segment key of that task (see
   [`~uniaudio2.tasks_uniaudio2.TASKS`]): text segments are strings or token ids, audio segments are codec codes in codec
   layout `(num_codebooks, frames)`. Audio is turned into codes once with [`tokenize_audio_dataset`] (any callable
   `waveform, sampling_rate -> (reasoning codes, reconstruction codes)`, e.g. the ReasoningCodec) and text into ids
   with [`tokenize_text_dataset`].
2. **Grid features** ([`encode_grids`]): every example becomes the rows of its token grid (text column, codebook
   columns, audio-row mask, loss masks, positions) plus what the collator needs for the condition dropout of
   classifier-free guidance. Grid features can be packed to a context length ([`pack_grids`]) or chained into
   *auditory sentences* of 2–8 related segments ([`build_auditory_sentences`], the data of training stage 4).
3. **Batches** ([`UniAudio2DataCollator`]): condition dropout (probability 0.1 for generation tasks, redrawn at every
   step), padding, labels. The output is exactly what `UniAudio2ForConditionalGeneration.forward` takes, so the
   collator plugs into `Trainer(data_collator=...)`.
"""

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from transformers.utils import logging

from .tasks_uniaudio2 import (
    AUDIO_PROMPT,
    DEFAULT_PROMPTS,
    REASONING,
    TASKS,
    TEXT,
    GridSpecialIds,
    TaskFormat,
    build_grid,
    resolve_task,
    tag_ids_from_tokenizer,
    tag_names,
)


logger = logging.get_logger(__name__)

CFG_DROPOUT_RATE = 0.1
"""Probability with which the condition of a generation example is replaced by padding (reference collate)."""

NO_CFG_GROUP = -1
"""`cfg_group` value of the rows that condition dropout never touches (targets, understanding tasks, sentences)."""

GRID_COLUMNS = (
    "task",
    "input_ids",
    "audio_codes",
    "audio_codes_mask",
    "text_loss_mask",
    "audio_loss_mask",
    "position_ids",
    "cfg_group",
    "cfg_pad",
    "length",
    "num_segments",
)
"""Columns written by [`encode_grids`], [`pack_grids`] and [`build_auditory_sentences`]."""

# Ids of the Llama-3 special tokens UniAudio 2.0 wraps text segments with (spec §2.1).
LLAMA3_TAG_IDS = {
    "<transcription>": 128011,
    "</transcription>": 128012,
    "<lyric>": 128013,
    "</lyric>": 128014,
    "<caption>": 128015,
    "</caption>": 128016,
}


# ----------------------------------------------------------------------------------------------------------------------
# Special ids
# ----------------------------------------------------------------------------------------------------------------------


def special_ids_from_tokenizer(config, tokenizer, **overrides) -> GridSpecialIds:
    """
    The grid ids of a model config and a Llama-3 tokenizer with the UniAudio 2.0 added tokens (`<transcription>`, ...).
    Tags the tokenizer does not know are left out (tasks that need them raise a clear error when built).
    """
    return GridSpecialIds.from_config(config, tag_ids_from_tokenizer(tokenizer), **overrides)


def synthetic_special_ids(config, **overrides) -> GridSpecialIds:
    """
    Grid ids for a config without a tokenizer (tests, smoke runs): the real Llama-3 tag ids when the vocabulary has
    them, otherwise the highest ids of the vocabulary that are not BOS/EOS/padding.
    """
    if config.vocab_size > max(LLAMA3_TAG_IDS.values()):
        tag_ids = dict(LLAMA3_TAG_IDS)
    else:
        reserved = {config.bos_token_id, config.pad_token_id, config.text_pad_token_id}
        reserved.update(config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id])
        free = [i for i in range(config.vocab_size - 1, -1, -1) if i not in reserved]
        tag_ids = dict(zip(tag_names(), free))
    return GridSpecialIds.from_config(config, tag_ids, **overrides)


# ----------------------------------------------------------------------------------------------------------------------
# Examples: text and audio tokenisation
# ----------------------------------------------------------------------------------------------------------------------


def text_segment_ids(value, tokenizer=None, bos_token_id: int | None = None, eos_token_id: int | None = None) -> list[int]:
    """
    Token ids of one text segment framed by BOS and EOS, as the reference text tokenizer produces them. `value` is a
    string (tokenised with `tokenizer`, without its own special tokens) or a list of ids (framed when not yet framed).
    """
    if isinstance(value, str):
        if tokenizer is None:
            raise ValueError("A tokenizer is needed to tokenise text segments given as strings.")
        ids = list(tokenizer(value, add_special_tokens=False)["input_ids"])
    else:
        ids = [int(i) for i in value]
    if bos_token_id is not None and (not ids or ids[0] != bos_token_id):
        ids = [bos_token_id] + ids
    if eos_token_id is not None and ids[-1] != eos_token_id:
        ids = ids + [eos_token_id]
    return ids


def prompt_ids_for(prompt: str, tokenizer, bos_token_id: int, eos_token_id: int) -> list[int]:
    """Task-prompt ids as the released model saw them: `<|begin_of_text|> prompt "\\n\\n" <|end_of_text|>`."""
    return text_segment_ids(prompt + "\n\n", tokenizer, bos_token_id, eos_token_id)


def tokenize_text_dataset(dataset, tokenizer, special_ids: GridSpecialIds, prompts: dict[str, str] | None = None, **map_kwargs):
    """
    Tokenise the text segments of an example dataset and add a `prompt_ids` column.

    Every text key of every task (`transcription_seq`, `caption_seq`, `text_seq_answer`, ...) found in the columns is
    turned into ids framed by BOS/EOS; rows whose value is already a list of ids are only framed. The task prompt is
    the `prompt` column when present, else `prompts[task]`, else the default prompt of the task.

    Args:
        dataset (`datasets.Dataset` or `datasets.IterableDataset`): rows with a `task` column.
        tokenizer: a Llama-3 tokenizer (any callable returning `{"input_ids": [...]}`).
        special_ids ([`GridSpecialIds`]): BOS/EOS ids.
        prompts (`dict[str, str]`, *optional*): prompt text per task.
        map_kwargs: passed to `dataset.map` (`cache_file_name`, `num_proc`, ...).
    """
    prompts = {**DEFAULT_PROMPTS, **(prompts or {})}
    text_keys = sorted({key for task in TASKS.values() for key, kind in task.segments if kind == TEXT})
    columns = _column_names(dataset)

    def tokenize(row):
        out = {}
        for key in text_keys:
            if key in columns and row.get(key) is not None:
                out[key] = text_segment_ids(row[key], tokenizer, special_ids.bos_token_id, special_ids.eos_token_id)
        task = resolve_task(row["task"])
        prompt = row.get("prompt") or prompts.get(task.name)
        out["prompt_ids"] = (
            prompt_ids_for(prompt, tokenizer, special_ids.bos_token_id, special_ids.eos_token_id)
            if task.use_prompt and prompt
            else []
        )
        return out

    features = getattr(dataset, "features", None)
    if features is not None and "features" not in map_kwargs:
        # A text column becomes token ids in every row at once: rows of other tasks (None there) would otherwise
        # leave the column typed as string (or null) and the ids could not be written.
        import datasets

        features = features.copy()
        for key in [*[k for k in text_keys if k in columns], "prompt_ids"]:
            features[key] = datasets.Sequence(datasets.Value("int64"))
        map_kwargs = {**map_kwargs, "features": features}
    return _map(dataset, tokenize, desc="Tokenising text", **map_kwargs)


AUDIO_ENCODE_BATCH_SIZE = 16


def tokenize_audio_dataset(
    dataset,
    encode_fn: Callable,
    audio_columns: dict[str, tuple[str | None, str | None]] | None = None,
    remove_audio: bool = True,
    batch_size: int = AUDIO_ENCODE_BATCH_SIZE,
    **map_kwargs,
):
    """
    Replace audio columns by codec codes, once: with `cache_file_name` (or a dataset loaded from disk) the result is
    written to an Arrow file and reused by later runs instead of calling the codec again.

    Rows are mapped in batches of `batch_size` (`dataset.map(batched=True)`). An `encode_fn` with an `encode_batch`
    attribute ([`codec_encode_fn`], [`feature_extractor_encode_fn`]) encodes the clips of a column of each batch in
    one call (a padded batch with its padding mask, on the codec's device); any other callable is called clip by
    clip. Either way every clip gets the codes it gets alone.

    Args:
        dataset (`datasets.Dataset` or `datasets.IterableDataset`): rows with audio columns. An audio value is a
            `{"array": ..., "sampling_rate": ...}` dict (the decoded `datasets.Audio` format), or `None` for rows
            without that audio.
        encode_fn (`Callable`): `encode_fn(waveform: np.ndarray, sampling_rate: int) -> (reasoning_codes,
            reconstruction_codes)`, codes in codec layout `(num_codebooks, frames)`, raw (without grid offsets),
            optionally with `encode_fn.encode_batch(waveforms, sampling_rates) -> [(reasoning_codes,
            reconstruction_codes), ...]`. See [`codec_encode_fn`] for the ReasoningCodec.
        audio_columns (`dict`, *optional*): audio column → `(reasoning key, reconstruction key)` of the segments it
            fills; either key may be `None`. Defaults to `{"audio": ("reason_seq", "semantic_seq")}`. For speech-to-
            speech data use e.g. `{"audio_1": ("reason_seq_1", "semantic_seq_1"), "audio_2": ("reason_seq_2",
            "semantic_seq_2")}`; an audio prompt only needs its reconstruction codes: `{"prompt_audio": (None,
            "audio_prompt_seq")}`.
        remove_audio (`bool`, *optional*, defaults to `True`): drop the waveform columns from the result.
        batch_size (`int`, *optional*, defaults to 16): rows per map batch, hence clips per `encode_batch` call (the
            codec further splits them into forward passes of `config.encode_batch_size` windows).
        map_kwargs: passed to `dataset.map` (`cache_file_name`, `load_from_cache_file`, `new_fingerprint` ...). Pass a
            `new_fingerprint` naming the codec when `encode_fn` cannot be hashed cheaply. `num_proc > 1` forks
            workers that each call `encode_fn`: use it with a CPU codec only (a CUDA context does not survive a fork).
    """
    audio_columns = audio_columns or {"audio": ("reason_seq", "semantic_seq")}
    encode_batch = getattr(encode_fn, "encode_batch", None)

    def check(codes):
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.ndim != 2:
            raise ValueError(f"`encode_fn` must return codes of shape (num_codebooks, frames), got {tuple(codes.shape)}.")
        return codes.tolist()

    def encode(batch):
        num_rows = len(next(iter(batch.values())))
        out = {}
        for column, keys in audio_columns.items():
            values = batch.get(column) or [None] * num_rows
            present = [row for row, audio in enumerate(values) if audio is not None]
            waveforms = [np.asarray(values[row]["array"], dtype=np.float32) for row in present]
            rates = [int(values[row]["sampling_rate"]) for row in present]
            if encode_batch is not None and present:
                codes = list(encode_batch(waveforms, rates))
            else:
                codes = [encode_fn(waveform, rate) for waveform, rate in zip(waveforms, rates)]
            for position, key in enumerate(keys):
                if key is not None:
                    out[key] = [None] * num_rows
                    for row, pair in zip(present, codes):
                        out[key][row] = check(pair[position])
        return out

    remove = [column for column in audio_columns if column in _column_names(dataset)] if remove_audio else None
    return _map(dataset, encode, batched=True, batch_size=batch_size, remove_columns=remove, desc="Encoding audio",
                **map_kwargs)


def _padded_batch(waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips → `(batch, 1, max samples)` float32 zero-padded on the right, and the `(batch, max samples)` mask."""
    clips = [torch.as_tensor(np.asarray(w, dtype=np.float32)).reshape(-1) for w in waveforms]
    length = max(clip.shape[0] for clip in clips)
    values = torch.zeros(len(clips), 1, length)
    mask = torch.zeros(len(clips), length, dtype=torch.long)
    for row, clip in enumerate(clips):
        values[row, 0, : clip.shape[0]] = clip
        mask[row, : clip.shape[0]] = 1
    return values, mask


def _by_rate(sampling_rates: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for index, rate in enumerate(sampling_rates):
        groups.setdefault(int(rate), []).append(index)
    return groups


def codec_encode_fn(codec, exact_length: bool = False) -> Callable:
    """
    Wrap a `ReasoningCodecModel` as the `encode_fn` of [`tokenize_audio_dataset`] (mono waveform at any rate →
    reasoning codes `(8, T5)` and reconstruction codes `(8, T12.5)`, on CPU); the codec runs on its own device. Its
    `encode_batch(waveforms, sampling_rates)` encodes clips of one rate as one padded batch with its padding mask
    (each clip gets the codes it gets alone; other rates are resampled by the codec, clip by clip).
    """

    @torch.no_grad()
    def encode_batch(waveforms, sampling_rates):
        results = [None] * len(waveforms)
        for rate, indices in _by_rate(sampling_rates).items():
            values, mask = _padded_batch([waveforms[i] for i in indices])
            output = codec.encode(values.to(codec.device), padding_mask=mask.to(codec.device), sampling_rate=rate,
                                  resample=True, exact_length=exact_length, return_dict=True)
            reasoning, reconstruction = output.reasoning_codes.cpu(), output.reconstruction_codes.cpu()
            num_reasoning = output.reasoning_padding_mask.sum(-1).tolist()
            num_reconstruction = output.reconstruction_padding_mask.sum(-1).tolist()
            for row, index in enumerate(indices):
                results[index] = (reasoning[row, :, : num_reasoning[row]], reconstruction[row, :, : num_reconstruction[row]])
        return results

    def encode(waveform: np.ndarray, sampling_rate: int):
        return encode_batch([waveform], [sampling_rate])[0]

    encode.encode_batch = encode_batch
    return encode


def feature_extractor_encode_fn(feature_extractor) -> Callable:
    """
    Wrap a `UniAudio2FeatureExtractor` (`processor.feature_extractor`, whose codec it places with `place_codec`) as
    the `encode_fn` of [`tokenize_audio_dataset`]: its validation and soxr resampling, then its codec, on the codec's
    device; `encode_batch` encodes the clips of one rate of a batch in one `feature_extractor.encode` call.
    """

    def encode_batch(waveforms, sampling_rates):
        results = [None] * len(waveforms)
        for rate, indices in _by_rate(sampling_rates).items():
            pairs = feature_extractor.encode([np.asarray(waveforms[i], dtype=np.float32) for i in indices], sampling_rate=rate)
            for index, pair in zip(indices, pairs):
                results[index] = pair
        return results

    def encode(waveform: np.ndarray, sampling_rate: int):
        return encode_batch([waveform], [sampling_rate])[0]

    encode.encode_batch = encode_batch
    return encode


# ----------------------------------------------------------------------------------------------------------------------
# Grid features
# ----------------------------------------------------------------------------------------------------------------------


def _segment_kind(task: TaskFormat, key: str) -> str:
    return TEXT if key == "prompt" else dict(task.segments)[key]


def grid_features(
    task: TaskFormat | str,
    segments: dict,
    special_ids: GridSpecialIds,
    prompt_ids=None,
) -> dict:
    """
    Grid features of one example (plain Python lists, as stored in a `datasets` row).

    `segments` maps the task's keys to text ids (framed by BOS/EOS) or audio codes in codec layout `(num_codebooks,
    frames)`. Besides the grid itself, the features record for each row whether condition dropout may replace it
    (`cfg_group`: the example index inside the row, or [`NO_CFG_GROUP`]) and the padding id it is then replaced with
    (`cfg_pad`), so that the dropout can be drawn anew at every step by the collator.
    """
    task = resolve_task(task) if isinstance(task, str) else task
    values = {}
    for key, kind in task.segments:
        if key not in segments or segments[key] is None:
            continue
        value = torch.as_tensor(segments[key], dtype=torch.long)
        values[key] = value.T if kind != TEXT else value
    grid = build_grid(task, values, special_ids, prompt_ids=torch.as_tensor(prompt_ids) if prompt_ids is not None else None)
    length = len(grid)
    cfg_group = [NO_CFG_GROUP] * length
    cfg_pad = [0] * length
    if task.generation_task:
        for key, start, end in grid.segments:
            if key in task.loss_keys:
                continue
            kind = _segment_kind(task, key)
            if kind == TEXT:
                pad = special_ids.text_pad_token_id
            elif key.startswith("reason"):
                pad = special_ids.reasoning_pad_token_id
            else:
                pad = special_ids.reconstruction_pad_token_id
            cfg_group[start:end] = [0] * (end - start)
            cfg_pad[start:end] = [pad] * (end - start)
    return {
        "task": task.name,
        "input_ids": grid.input_ids.tolist(),
        "audio_codes": grid.audio_codes.tolist(),
        "audio_codes_mask": grid.audio_rows.tolist(),
        "text_loss_mask": grid.text_loss.tolist(),
        "audio_loss_mask": grid.audio_loss.tolist(),
        "position_ids": list(range(length)),
        "cfg_group": cfg_group,
        "cfg_pad": cfg_pad,
        "length": length,
        "num_segments": 1,
    }


def encode_grids(
    dataset,
    special_ids: GridSpecialIds,
    prompt_ids: dict[str, list[int] | list[list[int]]] | None = None,
    seed: int = 0,
    max_length: int | None = None,
    **map_kwargs,
):
    """
    Turn a dataset of tokenised examples into grid features (columns [`GRID_COLUMNS`]: the grid, its loss masks,
    positions, condition-dropout rows, `length` in rows and `num_segments`, the number of examples in the row); other
    columns are dropped, except a `group` column (kept for [`build_auditory_sentences`]).

    Args:
        dataset (`datasets.Dataset` or `datasets.IterableDataset`): rows with `task`, the task's segment columns (text
            ids, audio codes in codec layout) and, for tasks with a prompt, a `prompt_ids` column or an entry in
            `prompt_ids`.
        special_ids ([`GridSpecialIds`]): the grid ids.
        prompt_ids (`dict`, *optional*): per task name, the ids of its prompt or a list of paraphrases (one is chosen
            per example, reproducibly from `seed` and the example index, as the reference samples a paraphrase).
        seed (`int`, *optional*, defaults to 0): seed of the paraphrase choice.
        max_length (`int`, *optional*): drop examples longer than this many rows.
        map_kwargs: passed to `dataset.map`.
    """
    prompt_ids = prompt_ids or {}

    def encode(row, index):
        task = resolve_task(row["task"])
        prompt = row.get("prompt_ids") or None
        if prompt is None and task.use_prompt:
            choices = prompt_ids.get(task.name)
            if choices is None:
                raise ValueError(f"No prompt ids for task {task.name!r}: add a `prompt_ids` column or pass `prompt_ids`.")
            if choices and isinstance(choices[0], (list, tuple)):
                choices = choices[random.Random(f"{seed}-{index}").randrange(len(choices))]
            prompt = choices
        return grid_features(task, {key: row.get(key) for key in task.input_keys}, special_ids, prompt)

    columns = _column_names(dataset)
    remove = [c for c in columns if c not in GRID_COLUMNS and c != "group"] if columns is not None else None
    encoded = _map(dataset, encode, with_indices=True, remove_columns=remove, desc="Building grids", **map_kwargs)
    if max_length is not None:
        encoded = encoded.filter(lambda length: length <= max_length, input_columns="length")
    return encoded


def apply_condition_dropout(features: dict, dropped_groups: Iterable[int]) -> dict:
    """
    Replace the condition rows of the given `cfg_group`s by their padding ids (text column on text rows, every
    codebook column on audio rows), as `build_grid(..., drop_condition=True)` does. Returns new features.
    """
    dropped = set(dropped_groups)
    if not dropped:
        return features
    input_ids = list(features["input_ids"])
    audio_codes = [list(frame) for frame in features["audio_codes"]]
    for row, (group, pad) in enumerate(zip(features["cfg_group"], features["cfg_pad"])):
        if group in dropped:
            if features["audio_codes_mask"][row]:
                audio_codes[row] = [pad] * len(audio_codes[row])
            else:
                input_ids[row] = pad
    return {**features, "input_ids": input_ids, "audio_codes": audio_codes}


def _concat_features(parts: list[dict], task: str, restart_positions: bool, keep_cfg: bool, mask_first_rows: bool) -> dict:
    out = {name: [] for name in GRID_COLUMNS if name not in ("task", "length", "num_segments")}
    for index, part in enumerate(parts):
        start = len(out["input_ids"])
        for name in ("input_ids", "audio_codes", "audio_codes_mask", "cfg_pad"):
            out[name].extend(part[name])
        text_loss, audio_loss = list(part["text_loss_mask"]), list(part["audio_loss_mask"])
        if mask_first_rows:
            # The first row of a packed example would be predicted from the previous example: no loss there.
            text_loss[0] = audio_loss[0] = False
        out["text_loss_mask"].extend(text_loss)
        out["audio_loss_mask"].extend(audio_loss)
        offset = 0 if restart_positions else start
        out["position_ids"].extend(offset + p for p in part["position_ids"])
        out["cfg_group"].extend(
            (index if group != NO_CFG_GROUP else NO_CFG_GROUP) if keep_cfg else NO_CFG_GROUP for group in part["cfg_group"]
        )
    out["task"] = task
    out["length"] = len(out["input_ids"])
    out["num_segments"] = sum(part["num_segments"] for part in parts)
    return out


def _rows(batch: dict) -> list[dict]:
    names = list(batch)
    return [dict(zip(names, values)) for values in zip(*(batch[name] for name in names))]


def _columns(rows: list[dict], names) -> dict:
    return {name: [row[name] for row in rows] for name in names}


def pack_grids(dataset, max_length: int, batch_size: int = 1000, **map_kwargs):
    """
    Pack grid features into rows of at most `max_length` rows (first fit, in order of arrival, within windows of
    `batch_size` examples so that streaming datasets pack too). Packed examples stay independent: positions restart
    at every example, and [`UniAudio2DataCollator`] flattens batches of packed rows into one row delimited by the
    restarting positions and flash-attention's `cu_seq_lens` (no example sees another under any attention
    implementation); the first row of every example carries no loss. Condition dropout stays per example.
    Examples longer than `max_length` are dropped.
    """

    def pack(batch):
        bins: list[list[dict]] = []
        sizes: list[int] = []
        dropped = 0
        for row in _rows(batch):
            if row["length"] > max_length:
                dropped += 1
                continue
            for index, size in enumerate(sizes):
                if size + row["length"] <= max_length:
                    bins[index].append(row)
                    sizes[index] += row["length"]
                    break
            else:
                bins.append([row])
                sizes.append(row["length"])
        if dropped:
            logger.warning(f"pack_grids: dropped {dropped} example(s) longer than max_length={max_length}.")
        packed = [
            _concat_features(parts, "packed" if len(parts) > 1 else parts[0]["task"], True, True, True) for parts in bins
        ]
        return _columns(packed, GRID_COLUMNS)

    remove = _column_names(dataset)
    return _map(dataset, pack, batched=True, batch_size=batch_size, remove_columns=remove, desc="Packing",
                       **map_kwargs)


def build_auditory_sentences(
    dataset,
    max_length: int,
    min_segments: int = 2,
    max_segments: int = 8,
    group_column: str = "group",
    keep_remainder: bool = False,
    seed: int = 0,
    batch_size: int = 1000,
    **map_kwargs,
):
    """
    Chain related grid features into *auditory sentences*: 2–8 segments (consecutive rows with the same value in
    `group_column`, e.g. the consecutive pieces of a long recording, alternating speech and text, audio and its
    caption) concatenated into one sequence of at most `max_length` rows, the long-context data of training stage 4.

    The number of segments of each sentence is drawn uniformly in `[min_segments, max_segments]` (reproducibly from
    `seed`); a sentence closes earlier when the group ends or the next segment would exceed `max_length`. Positions
    run through the whole sentence (later segments attend to earlier ones), every segment keeps its own loss rows, and
    condition dropout does not apply inside sentences. Sentences with fewer than `min_segments` segments are dropped
    unless `keep_remainder=True`. Groups are only chained within windows of `batch_size` rows.
    """
    if not 1 <= min_segments <= max_segments:
        raise ValueError(f"Need 1 <= min_segments <= max_segments, got {min_segments} and {max_segments}.")

    def chain(batch, indices):
        rng = random.Random(f"{seed}-{indices[0] if indices else 0}")
        sentences, current, length, target = [], [], 0, 0

        def close():
            if len(current) >= min_segments or (keep_remainder and current):
                sentences.append(_concat_features(current, "auditory_sentence", False, False, False))

        for row in _rows(batch):
            if row["length"] > max_length:
                close()
                current, length = [], 0
                continue
            fits = length + row["length"] <= max_length
            if current and (row[group_column] != current[0][group_column] or len(current) >= target or not fits):
                close()
                current, length = [], 0
            if not current:
                target = rng.randint(min_segments, max_segments)
            current.append(row)
            length += row["length"]
        close()
        return _columns(sentences, GRID_COLUMNS)

    remove = _column_names(dataset)
    return _map(dataset, chain, batched=True, batch_size=batch_size, with_indices=True, remove_columns=remove,
                       desc="Building auditory sentences", **map_kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Collator
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class UniAudio2DataCollator:
    """
    Data collator for `Trainer`: grid features → a batch of `UniAudio2ForConditionalGeneration` inputs
    (`input_ids`, `audio_codes`, `audio_codes_mask`, `labels`, `audio_labels`, and `attention_mask` for padded rows).

    Batches with packed features (positions that restart inside a row, see [`pack_grids`]), and every batch when
    `padding_free=True`, are flattened padding-free into a single row, as `DataCollatorWithFlattening(
    return_flash_attn_kwargs=True)` does: `position_ids` restart at every example, `cu_seq_lens_q`/`cu_seq_lens_k`
    (int32 cumulative example lengths) and `max_length_q`/`max_length_k` (ints) delimit the examples for
    flash-attention's variable-length kernel, and there is no `attention_mask`, so that eager and sdpa attention get
    the block-diagonal causal mask that transformers builds from the restarting positions. Examples never attend to
    each other, whatever the attention implementation and the batch size. The first row of every example carries no
    loss (it would be predicted from the previous example).

    Condition dropout for classifier-free guidance is drawn here, at every step: each generation example (each
    `cfg_group` of a row) has its condition replaced by padding with probability `cfg_dropout_rate`.

    Use it with `TrainingArguments(remove_unused_columns=False)`: the grid columns are not model arguments.

    Args:
        special_ids ([`GridSpecialIds`]): padding ids.
        cfg_dropout_rate (`float`, *optional*, defaults to 0.1): condition-dropout probability (0 disables it).
        seed (`int`, *optional*): seed of the dropout draws (`None`: from `torch`'s global generator).
        padding_side (`str`, *optional*, defaults to `"right"`): `"right"` or `"left"` (padded batches).
        pad_to_multiple_of (`int`, *optional*): pad the length to a multiple of this (a flattened row gets the
            padding as one more example without loss).
        text_loss (`bool`, *optional*, defaults to `True`): return `labels`.
        audio_loss (`bool`, *optional*, defaults to `True`): return `audio_labels` (stage 1 trains with text loss only).
        padding_free (`bool`, *optional*, defaults to `False`): flatten unpacked batches too (no padding rows).
    """

    special_ids: GridSpecialIds
    cfg_dropout_rate: float = CFG_DROPOUT_RATE
    seed: int | None = None
    padding_side: str = "right"
    pad_to_multiple_of: int | None = None
    text_loss: bool = True
    audio_loss: bool = True
    padding_free: bool = False

    def __post_init__(self):
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"`padding_side` must be 'left' or 'right', got {self.padding_side!r}.")
        if not 0.0 <= self.cfg_dropout_rate <= 1.0:
            raise ValueError(f"`cfg_dropout_rate` must lie in [0, 1], got {self.cfg_dropout_rate}.")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"`pad_to_multiple_of` must be a positive integer, got {self.pad_to_multiple_of}.")
        self._generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None

    def _dropped_groups(self, features: dict) -> list[int]:
        groups = sorted({group for group in features["cfg_group"] if group != NO_CFG_GROUP})
        if not groups or self.cfg_dropout_rate == 0.0:
            return []
        draws = torch.rand(len(groups), generator=self._generator)
        return [group for group, draw in zip(groups, draws.tolist()) if draw < self.cfg_dropout_rate]

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty list of examples.")
        features = [apply_condition_dropout(f, self._dropped_groups(f)) for f in features]
        packed = any(list(f["position_ids"]) != list(range(len(f["position_ids"]))) for f in features)
        if packed or self.padding_free:
            return self._flatten(features)
        return self._pad(features)

    def _padded_length(self, length: int) -> int:
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return length

    def _labels(self, batch: dict, text_loss: torch.Tensor, audio_loss: torch.Tensor) -> dict:
        if self.text_loss:
            batch["labels"] = torch.where(text_loss, batch["input_ids"], -100)
        if self.audio_loss:
            batch["audio_labels"] = torch.where(audio_loss.unsqueeze(-1), batch["audio_codes"], -100)
        return batch

    def _pad(self, features: list[dict]) -> dict[str, torch.Tensor]:
        length = self._padded_length(max(len(f["input_ids"]) for f in features))
        ids = self.special_ids
        batch_size, num_codebooks = len(features), ids.num_codebooks
        input_ids = torch.full((batch_size, length), ids.text_pad_token_id, dtype=torch.long)
        audio_codes = torch.full((batch_size, length, num_codebooks), ids.reconstruction_pad_token_id, dtype=torch.long)
        audio_codes_mask = torch.zeros(batch_size, length, dtype=torch.bool)
        attention_mask = torch.zeros(batch_size, length, dtype=torch.long)
        text_loss = torch.zeros(batch_size, length, dtype=torch.bool)
        audio_loss = torch.zeros(batch_size, length, dtype=torch.bool)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            rows = slice(length - n, length) if self.padding_side == "left" else slice(0, n)
            input_ids[row, rows] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            audio_codes[row, rows] = torch.as_tensor(f["audio_codes"], dtype=torch.long).reshape(n, num_codebooks)
            audio_codes_mask[row, rows] = torch.as_tensor(f["audio_codes_mask"], dtype=torch.bool)
            attention_mask[row, rows] = 1
            text_loss[row, rows] = torch.as_tensor(f["text_loss_mask"], dtype=torch.bool)
            audio_loss[row, rows] = torch.as_tensor(f["audio_loss_mask"], dtype=torch.bool)
        batch = {
            "input_ids": input_ids,
            "audio_codes": audio_codes,
            "audio_codes_mask": audio_codes_mask,
            "attention_mask": attention_mask,
        }
        return self._labels(batch, text_loss, audio_loss)

    def _flatten(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids = self.special_ids
        num_codebooks = ids.num_codebooks
        positions = []
        for index, f in enumerate(features):
            feature_positions = torch.as_tensor(f["position_ids"], dtype=torch.long)
            # Every example must count its rows from 0: both the flash kwargs and transformers' packed-sequence
            # detection (a position that does not follow its predecessor starts an example) read them so.
            steps = feature_positions[1:] - feature_positions[:-1]
            if feature_positions.numel() == 0 or feature_positions[0] != 0 or (
                (steps != 1) & (feature_positions[1:] != 0)
            ).any():
                raise ValueError(
                    f"Feature {index}: `position_ids` must count the rows of each packed example from 0 "
                    f"(0, 1, 2, ..., 0, 1, ...), got {f['position_ids']}."
                )
            positions.append(feature_positions)
        length = sum(len(p) for p in positions)
        total = self._padded_length(length)
        padding = total - length
        input_ids = torch.cat(
            [torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features]
            + [torch.full((padding,), ids.text_pad_token_id, dtype=torch.long)]
        )
        audio_codes = torch.cat(
            [torch.as_tensor(f["audio_codes"], dtype=torch.long).reshape(-1, num_codebooks) for f in features]
            + [torch.full((padding, num_codebooks), ids.reconstruction_pad_token_id, dtype=torch.long)]
        )
        no_rows = torch.zeros(padding, dtype=torch.bool)
        audio_codes_mask = torch.cat([torch.as_tensor(f["audio_codes_mask"], dtype=torch.bool) for f in features] + [no_rows])
        text_loss = torch.cat([torch.as_tensor(f["text_loss_mask"], dtype=torch.bool) for f in features] + [no_rows])
        audio_loss = torch.cat([torch.as_tensor(f["audio_loss_mask"], dtype=torch.bool) for f in features] + [no_rows])
        # The padding rows form one more example of their own.
        position_ids = torch.cat(positions + [torch.arange(padding)])
        starts = (position_ids == 0).nonzero().flatten()
        # The first row of an example would be predicted from the last row of the previous one.
        text_loss[starts] = False
        audio_loss[starts] = False
        cu_seq_lens = torch.cat([starts, torch.tensor([total])]).to(torch.int32)
        max_length = int((cu_seq_lens[1:] - cu_seq_lens[:-1]).max())
        batch = {
            "input_ids": input_ids[None],
            "audio_codes": audio_codes[None],
            "audio_codes_mask": audio_codes_mask[None],
            "position_ids": position_ids[None],
            "cu_seq_lens_q": cu_seq_lens,
            "cu_seq_lens_k": cu_seq_lens.clone(),
            "max_length_q": max_length,
            "max_length_k": max_length,
            "use_cache": False,
        }
        return self._labels(batch, text_loss[None], audio_loss[None])


# ----------------------------------------------------------------------------------------------------------------------
# Synthetic data (tests, smoke runs, benchmarks)
# ----------------------------------------------------------------------------------------------------------------------


def synthetic_examples(
    config,
    special_ids: GridSpecialIds,
    num_examples: int,
    tasks: Iterable[str] = ("ASR", "TTS"),
    seed: int = 0,
    text_length: tuple[int, int] = (3, 6),
    reasoning_frames: tuple[int, int] = (2, 4),
    frames_per_reasoning_frame: float = 2.5,
    num_groups: int | None = None,
) -> list[dict]:
    """
    Deterministic, learnable example rows (already tokenised) for smoke runs, tests and benchmarks. Every example is
    built around random clips whose reconstruction codes and text are fixed functions of their reasoning codes, so
    that a model can fit the data. Rows follow the example schema of [`encode_grids`]: `task`, the task's segment
    columns (text ids framed by BOS/EOS, codes in codec layout `(num_codebooks, frames)`), `prompt_ids` and `group`
    (`num_groups` runs of consecutive examples share a group, for auditory sentences).
    """
    rng = random.Random(seed)
    specials = {
        special_ids.bos_token_id, special_ids.eos_token_id, special_ids.text_pad_token_id, *special_ids.tag_ids.values()
    }
    text_vocab = min(min(specials), config.vocab_size)
    reasoning_vocab = min(
        special_ids.reasoning_bos_token_id, special_ids.reasoning_eos_token_id, special_ids.reasoning_pad_token_id
    )
    reconstruction_vocab = min(
        special_ids.reconstruction_bos_token_id, special_ids.reconstruction_eos_token_id,
        special_ids.reconstruction_pad_token_id,
    ) - special_ids.reasoning_vocab_size
    if min(text_vocab, reasoning_vocab, reconstruction_vocab) < 2:
        raise ValueError("The config leaves too few non-special ids for synthetic data.")
    num_codebooks = special_ids.num_codebooks
    tasks = [resolve_task(task) for task in tasks]
    prompts = {
        task.name: [special_ids.bos_token_id, (7 * index + 1) % text_vocab, special_ids.eos_token_id]
        for index, task in enumerate(tasks)
    }
    run = max(1, num_examples // num_groups) if num_groups else 1

    def clip():
        frames = rng.randint(*reasoning_frames)
        reasoning = [[rng.randrange(reasoning_vocab) for _ in range(frames)] for _ in range(num_codebooks)]
        length = max(1, int(round(frames * frames_per_reasoning_frame)))
        reconstruction = [
            [(reasoning[k][(t * frames) // length] * 3 + k + t) % reconstruction_vocab for t in range(length)]
            for k in range(num_codebooks)
        ]
        words = rng.randint(*text_length)
        text = [(reasoning[0][i % frames] * 5 + i) % text_vocab for i in range(words)]
        return reasoning, reconstruction, [special_ids.bos_token_id] + text + [special_ids.eos_token_id]

    rows = []
    for index in range(num_examples):
        task = tasks[index % len(tasks)]
        clips = {}  # one clip per suffix: `reason_seq_2`, `semantic_seq_2` share clip "_2"
        row = {"task": task.name, "prompt_ids": prompts[task.name] if task.use_prompt else [], "group": index // run}
        text_keys = [key for key, kind in task.segments if kind == TEXT]
        for key, kind in task.segments:
            suffix = key.rsplit("_seq", 1)[-1] if kind != TEXT else ""
            if kind == AUDIO_PROMPT:
                suffix = "prompt"
            if suffix not in clips:
                clips[suffix] = clip()
            reasoning, reconstruction, text = clips[suffix]
            if kind == TEXT:
                # The first text segment of a task is the transcription / caption of its main clip.
                row[key] = text if key == text_keys[0] else clip()[2]
            elif kind == REASONING:
                row[key] = reasoning
            else:
                row[key] = reconstruction
        rows.append(row)
    return rows


def examples_to_dataset(rows: list[dict]):
    """A `datasets.Dataset` from example rows of different tasks (missing segment columns become `None`)."""
    import datasets

    names = []
    for row in rows:
        names.extend(name for name in row if name not in names)
    return datasets.Dataset.from_dict({name: [row.get(name) for row in rows] for name in names})


def _column_names(dataset):
    names = getattr(dataset, "column_names", None)
    if names is None and getattr(dataset, "features", None) is not None:
        names = list(dataset.features)
    if names is None:
        # A lazily mapped `IterableDataset` does not know its columns: read them from its first row.
        first = next(iter(dataset), None)
        names = list(first) if first is not None else []
    return names


def _map(dataset, function, **kwargs):
    # `IterableDataset.map` is lazy: it has no progress bar and no cache arguments.
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        unsupported = ("desc", "cache_file_name", "load_from_cache_file", "num_proc", "new_fingerprint", "keep_in_memory")
        kwargs = {k: v for k, v in kwargs.items() if k not in unsupported}
    return dataset.map(function, **kwargs)


__all__ = [
    "CFG_DROPOUT_RATE",
    "GRID_COLUMNS",
    "LLAMA3_TAG_IDS",
    "NO_CFG_GROUP",
    "UniAudio2DataCollator",
    "apply_condition_dropout",
    "build_auditory_sentences",
    "codec_encode_fn",
    "encode_grids",
    "examples_to_dataset",
    "feature_extractor_encode_fn",
    "grid_features",
    "pack_grids",
    "prompt_ids_for",
    "special_ids_from_tokenizer",
    "synthetic_examples",
    "synthetic_special_ids",
    "tag_names",
    "text_segment_ids",
    "tokenize_audio_dataset",
    "tokenize_text_dataset",
]
