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
Task formats of UniAudio 2.0 and the builder of its token grids.

A sequence is a grid of rows. A *text row* carries one text token (and no codes); an *audio row* carries one code per
codebook (and no text). An example is the concatenation of *segments*:

* an optional task prompt (text rows: `<|begin_of_text|> prompt "\\n\\n" <|end_of_text|>`), never with loss;
* text segments, wrapped in their tag (`<transcription>` ... `</transcription>`, `<caption>`, `<lyric>`), except the
  `text_seq*` segments which are not wrapped;
* audio segments: a reasoning segment `[reasoning BOS frame, frames, reasoning EOS frame]` followed by a
  reconstruction segment `[reconstruction BOS frame, frames + offset, reconstruction EOS frame]`.

The loss covers the rows of the task's target segments (text column for text targets, the codebook columns for audio
targets, including their tags and BOS/EOS rows). Task definitions are data: add a `TaskFormat` to `TASKS` to add a
task.
"""

from dataclasses import dataclass, field

import torch


TEXT = "text"
REASONING = "reasoning"
RECONSTRUCTION = "reconstruction"
AUDIO_PROMPT = "audio_prompt"


@dataclass(frozen=True)
class TaskFormat:
    """
    One task: its ordered segments `(key, kind)`, the keys that carry the loss, whether the task prompt is prepended
    and whether the training-time condition dropout (for classifier-free guidance) applies (the reference applies it
    to TTS, Yue_TTS, InstructTTS, TTA, TTM and LTS).
    """

    name: str
    segments: tuple[tuple[str, str], ...]
    loss_keys: frozenset[str]
    use_prompt: bool = True
    generation_task: bool = False

    @property
    def input_keys(self) -> list[str]:
        return [key for key, _ in self.segments]


def _task(name, segments, loss_keys, use_prompt=True, generation_task=False):
    return TaskFormat(name, tuple(segments), frozenset(loss_keys), use_prompt, generation_task)


_AUDIO = [("reason_seq", REASONING), ("semantic_seq", RECONSTRUCTION)]
_AUDIO_TARGET = {"reason_seq", "semantic_seq"}

TASKS: dict[str, TaskFormat] = {
    task.name: task
    for task in [
        _task("ASR", _AUDIO + [("transcription_seq", TEXT)], {"transcription_seq"}),
        _task("Yue_ASR", _AUDIO + [("transcription_seq", TEXT)], {"transcription_seq"}),
        _task("D_ASR", _AUDIO + [("transcription_seq", TEXT)], {"transcription_seq"}),
        _task("lyric_recognition", _AUDIO + [("lyric_seq", TEXT)], {"lyric_seq"}),
        _task("audio_caption", _AUDIO + [("caption_seq", TEXT)], {"caption_seq"}),
        _task("music_caption", _AUDIO + [("caption_seq", TEXT)], {"caption_seq"}),
        _task("TTS", [("transcription_seq", TEXT)] + _AUDIO, _AUDIO_TARGET, generation_task=True),
        _task("Yue_TTS", [("transcription_seq", TEXT)] + _AUDIO, _AUDIO_TARGET, generation_task=True),
        _task(
            "InstructTTS", [("caption_seq", TEXT), ("transcription_seq", TEXT)] + _AUDIO, _AUDIO_TARGET, generation_task=True
        ),
        _task(
            "prompt_instruct_tts",
            [("audio_prompt_seq", AUDIO_PROMPT), ("caption_seq", TEXT), ("transcription_seq", TEXT)] + _AUDIO,
            _AUDIO_TARGET,
        ),
        _task("TTA", [("caption_seq", TEXT)] + _AUDIO, _AUDIO_TARGET, generation_task=True),
        _task("TTM", [("caption_seq", TEXT)] + _AUDIO, _AUDIO_TARGET, generation_task=True),
        _task("LTS", [("lyric_seq", TEXT)] + _AUDIO, _AUDIO_TARGET, generation_task=True),
        _task("speech_s2t", _AUDIO + [("text_seq", TEXT)], {"text_seq"}),
        _task(
            "speech_s2s",
            [("reason_seq_1", REASONING), ("semantic_seq_1", RECONSTRUCTION), ("reason_seq_2", REASONING),
             ("semantic_seq_2", RECONSTRUCTION)],
            {"reason_seq_2", "semantic_seq_2"},
        ),
        _task(
            "audio_understanding",
            [("text_seq_question", TEXT)] + _AUDIO + [("text_seq_answer", TEXT)],
            {"text_seq_answer"},
        ),
        _task("audio_only", _AUDIO, _AUDIO_TARGET, use_prompt=False),
        _task("text_only", [("text_seq", TEXT)], {"text_seq"}, use_prompt=False),
    ]
}

# Task prompts the released model was trained with (the first paraphrase of each task) and the inference prompts of
# the original scripts. Any paraphrase works; these are the defaults.
DEFAULT_PROMPTS: dict[str, str] = {
    "ASR": "speech recognition",
    "Yue_ASR": "speech recognition",
    "D_ASR": "speech recognition",
    "TTS": "text to speech",
    "Yue_TTS": "text to speech",
    "InstructTTS": "text-to-speech with style caption",
    "prompt_instruct_tts": "text-to-speech with style caption",
    "TTA": "text-to-audio generation",
    "TTM": "text-to-music generation",
    "LTS": "lyric-to-song generation",
    "lyric_recognition": "lyric-recognition",
    "audio_caption": "audio caption",
    "music_caption": "music caption",
    "audio_understanding": "listen the audio. then answer the user's question",
    "speech_s2s": "speech-to-speech conversation",
    "speech_s2t": "speech question with text answer",
}

# Convenience aliases users type.
TASK_ALIASES = {
    "asr": "ASR",
    "transcribe": "ASR",
    "caption": "audio_caption",
    "audio-caption": "audio_caption",
    "music-caption": "music_caption",
    "qa": "audio_understanding",
    "ask": "audio_understanding",
    "tts": "TTS",
    "speak": "TTS",
    "instruct-tts": "InstructTTS",
    "instruct_tts": "InstructTTS",
    "text-to-audio": "TTA",
    "text-to-sound": "TTA",
    "tta": "TTA",
    "text-to-music": "TTM",
    "ttm": "TTM",
    "song": "LTS",
    "lyrics-to-song": "LTS",
    "s2t": "speech_s2t",
}


def resolve_task(task: str) -> TaskFormat:
    """The `TaskFormat` of a task name or alias; a clear error for unknown names."""
    name = TASK_ALIASES.get(task, TASK_ALIASES.get(task.lower(), task))
    if name not in TASKS:
        known = sorted(set(TASKS) | set(TASK_ALIASES))
        raise ValueError(f"Unknown task {task!r}. Known tasks and aliases: {', '.join(known)}.")
    return TASKS[name]


def wrapper_tags(key: str) -> tuple[str, str] | None:
    """`transcription_seq` → (`<transcription>`, `</transcription>`); `text_seq*` segments are not wrapped."""
    if key.startswith("text_seq"):
        return None
    tag = key.removesuffix("_seq")
    return f"<{tag}>", f"</{tag}>"


def tag_names() -> list[str]:
    """Every wrapper tag (`<transcription>`, `</transcription>`, ...) the task formats use."""
    names = []
    for task in TASKS.values():
        for key, kind in task.segments:
            tags = wrapper_tags(key) if kind == TEXT else None
            if tags is not None:
                names.extend(tag for tag in tags if tag not in names)
    return names


def tag_ids_from_tokenizer(tokenizer) -> dict[str, int]:
    """Ids of the wrapper tags the tokenizer knows (tasks that need a missing one raise when their grid is built)."""
    tag_ids = {}
    unknown = getattr(tokenizer, "unk_token_id", None)
    for name in tag_names():
        token_id = tokenizer.convert_tokens_to_ids(name)
        if token_id is not None and token_id != unknown:
            tag_ids[name] = int(token_id)
    return tag_ids


@dataclass
class GridSpecialIds:
    """Every special id the grid builder needs: text ids from the tokenizer, audio ids from the model config."""

    bos_token_id: int
    eos_token_id: int
    text_pad_token_id: int
    tag_ids: dict[str, int]
    num_codebooks: int
    reasoning_vocab_size: int
    reasoning_bos_token_id: int
    reasoning_eos_token_id: int
    reasoning_pad_token_id: int
    reconstruction_bos_token_id: int
    reconstruction_eos_token_id: int
    reconstruction_pad_token_id: int
    audio_prompt_bos_token_id: int | None = None
    audio_prompt_eos_token_id: int | None = None

    @classmethod
    def from_config(cls, config, tag_ids: dict[str, int], **overrides) -> "GridSpecialIds":
        values = dict(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id if isinstance(config.eos_token_id, int) else config.eos_token_id[0],
            text_pad_token_id=config.text_pad_token_id,
            tag_ids=dict(tag_ids),
            num_codebooks=config.num_codebooks,
            reasoning_vocab_size=config.reasoning_vocab_size,
            reasoning_bos_token_id=config.reasoning_bos_token_id,
            reasoning_eos_token_id=config.reasoning_eos_token_id,
            reasoning_pad_token_id=config.reasoning_pad_token_id,
            reconstruction_bos_token_id=config.reconstruction_bos_token_id,
            reconstruction_eos_token_id=config.reconstruction_eos_token_id,
            reconstruction_pad_token_id=config.reconstruction_pad_token_id,
        )
        values.update(overrides)
        return cls(**values)

    def tag(self, name: str) -> int:
        if name not in self.tag_ids:
            raise ValueError(f"The tokenizer has no id for the special token {name!r}.")
        return self.tag_ids[name]


@dataclass
class Grid:
    """
    One example as a grid of `S` rows: text column `(S,)`, codebook columns `(S, num_codebooks)`, audio-row mask
    `(S,)`, text-row mask `(S,)` and loss masks for the text column `(S,)` and the codebook columns `(S,)`.
    """

    input_ids: torch.LongTensor
    audio_codes: torch.LongTensor
    audio_rows: torch.BoolTensor
    text_rows: torch.BoolTensor
    text_loss: torch.BoolTensor
    audio_loss: torch.BoolTensor
    segments: list[tuple[str, int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def _text_rows(ids: torch.Tensor, num_codebooks: int):
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    return ids, torch.zeros(ids.shape[0], num_codebooks, dtype=torch.long), False


def _audio_rows(frames: torch.Tensor, bos: int, eos: int, offset: int, num_codebooks: int):
    frames = torch.as_tensor(frames, dtype=torch.long)
    if frames.ndim != 2 or frames.shape[1] != num_codebooks:
        raise ValueError(f"Audio codes must have shape (frames, {num_codebooks}), got {tuple(frames.shape)}.")
    codes = torch.cat([torch.full((1, num_codebooks), bos), frames + offset, torch.full((1, num_codebooks), eos)])
    return torch.zeros(codes.shape[0], dtype=torch.long), codes, True


def build_grid(
    task: TaskFormat | str,
    segments: dict[str, torch.Tensor],
    ids: GridSpecialIds,
    prompt_ids: torch.Tensor | None = None,
    drop_condition: bool = False,
    inference: bool = False,
) -> Grid:
    """
    Build the grid of one example.

    Args:
        task: the task (or its name).
        segments: per segment key, text ids (with BOS/EOS, as `tokenizer(text)` gives) or audio codes `(frames,
            num_codebooks)` in codec layout transposed to frames-first, raw (without offset).
        ids: the special ids.
        prompt_ids: task-prompt ids (`<|begin_of_text|> prompt "\\n\\n" <|end_of_text|>`), required for tasks with a
            prompt.
        drop_condition: replace every non-loss segment (prompt included) by padding ids of the same length, the
            condition dropout that trains the unconditional branch of classifier-free guidance.
        inference: build the generation prompt: stop before the first loss segment (for text targets the model
            generates the opening tag itself, as the released model does).
    """
    task = resolve_task(task) if isinstance(task, str) else task
    pieces = []  # (key, text ids, codes, is_audio, with_loss)

    def add(key, rows, with_loss):
        text, codes, is_audio = rows
        if drop_condition and not with_loss:
            if is_audio:
                pad = ids.reasoning_pad_token_id if key.startswith("reason") else ids.reconstruction_pad_token_id
                codes = torch.full_like(codes, pad)
            else:
                text = torch.full_like(text, ids.text_pad_token_id)
        pieces.append((key, text, codes, is_audio, with_loss))

    if task.use_prompt:
        if prompt_ids is None:
            raise ValueError(f"Task {task.name!r} needs a task prompt.")
        add("prompt", _text_rows(prompt_ids, ids.num_codebooks), False)
    for key, kind in task.segments:
        with_loss = key in task.loss_keys
        if inference and with_loss:
            break
        if key not in segments:
            raise ValueError(f"Task {task.name!r} needs the segment {key!r} (segments: {task.input_keys}).")
        value = segments[key]
        if kind == TEXT:
            text = torch.as_tensor(value, dtype=torch.long).reshape(-1)
            if text.numel() == 0:
                raise ValueError(f"Segment {key!r} of task {task.name!r} is empty.")
            tags = wrapper_tags(key)
            if tags is not None:
                text = torch.cat([torch.tensor([ids.tag(tags[0])]), text, torch.tensor([ids.tag(tags[1])])])
            add(key, _text_rows(text, ids.num_codebooks), with_loss)
        elif kind == REASONING:
            add(key, _audio_rows(value, ids.reasoning_bos_token_id, ids.reasoning_eos_token_id, 0, ids.num_codebooks), with_loss)
        elif kind == RECONSTRUCTION:
            rows = _audio_rows(
                value, ids.reconstruction_bos_token_id, ids.reconstruction_eos_token_id, ids.reasoning_vocab_size,
                ids.num_codebooks,
            )
            add(key, rows, with_loss)
        elif kind == AUDIO_PROMPT:
            if ids.audio_prompt_bos_token_id is None or ids.audio_prompt_eos_token_id is None:
                raise ValueError("Audio-prompt tasks need `audio_prompt_bos_token_id` and `audio_prompt_eos_token_id`.")
            add(key, _audio_rows(value, ids.audio_prompt_bos_token_id, ids.audio_prompt_eos_token_id,
                                 ids.reasoning_vocab_size, ids.num_codebooks), with_loss)
        else:  # pragma: no cover - TaskFormat construction guards this
            raise ValueError(f"Unknown segment kind {kind!r}.")

    input_ids, codes, audio_rows, text_loss, audio_loss, spans = [], [], [], [], [], []
    start = 0
    for key, text, segment_codes, is_audio, with_loss in pieces:
        rows = text.shape[0]
        input_ids.append(text)
        codes.append(segment_codes)
        audio_rows.append(torch.full((rows,), is_audio))
        text_loss.append(torch.full((rows,), with_loss and not is_audio))
        audio_loss.append(torch.full((rows,), with_loss and is_audio))
        spans.append((key, start, start + rows))
        start += rows
    audio_rows = torch.cat(audio_rows)
    return Grid(
        input_ids=torch.cat(input_ids),
        audio_codes=torch.cat(codes),
        audio_rows=audio_rows,
        text_rows=~audio_rows,
        text_loss=torch.cat(text_loss),
        audio_loss=torch.cat(audio_loss),
        segments=spans,
    )


def collate_grids(grids: list[Grid], ids: GridSpecialIds, padding_side: str = "right", max_length: int | None = None) -> dict:
    """
    Pad grids into a batch of model inputs (`input_ids`, `audio_codes`, `audio_codes_mask`, `attention_mask`,
    `labels`, `audio_labels`). Padding rows hold the text padding id and the reconstruction padding frame, with
    attention 0 and no loss. Labels are aligned with the rows (the model shifts them).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"`padding_side` must be 'left' or 'right', got {padding_side!r}.")
    if not grids:
        raise ValueError("Cannot collate an empty list of examples.")
    length = max(len(grid) for grid in grids)
    if max_length is not None and length > max_length:
        raise ValueError(f"An example has {length} rows, more than max_length={max_length}.")
    batch = {
        "input_ids": torch.full((len(grids), length), ids.text_pad_token_id, dtype=torch.long),
        "audio_codes": torch.full((len(grids), length, ids.num_codebooks), ids.reconstruction_pad_token_id, dtype=torch.long),
        "audio_codes_mask": torch.zeros(len(grids), length, dtype=torch.bool),
        "attention_mask": torch.zeros(len(grids), length, dtype=torch.long),
        "labels": torch.full((len(grids), length), -100, dtype=torch.long),
        "audio_labels": torch.full((len(grids), length, ids.num_codebooks), -100, dtype=torch.long),
    }
    for row, grid in enumerate(grids):
        n = len(grid)
        rows = slice(length - n, length) if padding_side == "left" else slice(0, n)
        batch["input_ids"][row, rows] = grid.input_ids
        batch["audio_codes"][row, rows] = grid.audio_codes
        batch["audio_codes_mask"][row, rows] = grid.audio_rows
        batch["attention_mask"][row, rows] = 1
        batch["labels"][row, rows] = torch.where(grid.text_loss, grid.input_ids, -100)
        batch["audio_labels"][row, rows] = torch.where(grid.audio_loss.unsqueeze(-1), grid.audio_codes, -100)
    return batch


__all__ = [
    "DEFAULT_PROMPTS",
    "TASKS",
    "TASK_ALIASES",
    "Grid",
    "GridSpecialIds",
    "TaskFormat",
    "build_grid",
    "collate_grids",
    "resolve_task",
    "tag_ids_from_tokenizer",
    "tag_names",
    "wrapper_tags",
]
