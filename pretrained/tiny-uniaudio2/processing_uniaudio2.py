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
"""Processor of UniAudio 2.0: text tokenizer + codec-owning feature extractor → model grids, and back."""

import numpy as np
import torch
from huggingface_hub.dataclasses import validate_typed_dict
from huggingface_hub.errors import StrictDataclassError
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import AudioKwargs, ProcessingKwargs, ProcessorMixin, TextKwargs, Unpack
from transformers.tokenization_utils_base import TruncationStrategy
from transformers.utils import PaddingStrategy, TensorType, logging

from .feature_extraction_uniaudio2 import as_code_tensor, read_audio_file
from .tasks_uniaudio2 import (
    DEFAULT_PROMPTS,
    REASONING,
    RECONSTRUCTION,
    TEXT,
    Grid,
    GridSpecialIds,
    build_grid,
    collate_grids,
    resolve_task,
    tag_ids_from_tokenizer,
)


logger = logging.get_logger(__name__)


class UniAudio2TextKwargs(TextKwargs, total=False):
    """
    split_special_tokens (`bool`, *optional*):
        Tokenize special-token strings inside the text (e.g. a literal `<|end_of_text|>`) as plain text rather than as
        the special token, so that user text cannot inject control tokens into the grid.
    """

    split_special_tokens: bool | None


class UniAudio2ProcessorKwargs(ProcessingKwargs, total=False):
    text_kwargs: UniAudio2TextKwargs


# Text kwargs that shape the output grid (one sequence of rows per example) rather than the tokenization of a segment.
_GRID_KWARGS = ("padding", "padding_side", "max_length", "pad_to_multiple_of", "truncation", "return_tensors",
                "return_attention_mask")
# Text kwargs that ask for per-token outputs of the tokenizer, which a grid does not have.
_TOKEN_OUTPUT_KWARGS = ("text_pair", "text_target", "text_pair_target", "is_split_into_words", "stride",
                        "return_overflowing_tokens", "return_offsets_mapping", "return_token_type_ids",
                        "return_special_tokens_mask", "return_length", "return_mm_token_type_ids",
                        "return_text_replacement_offsets", "sanitize_control_tokens")


def default_audio_special_ids(reasoning_codebook_size: int = 4096, reconstruction_codebook_size: int = 8192, num_codebooks: int = 8) -> dict:
    """
    Audio special ids following the layout of the released model, for a codec with the given codebook sizes: the
    reasoning block holds the codes, BOS (`size`), EOS (`size + 1`) and PAD (`size + 3`); the reconstruction block
    holds the codes, EOS (`size`), BOS (`size + 1`) and PAD (`size + 2`), stored with the reasoning offset.
    """
    reasoning_vocab_size = reasoning_codebook_size + 4
    return {
        "num_codebooks": num_codebooks,
        "reasoning_vocab_size": reasoning_vocab_size,
        "reconstruction_vocab_size": reconstruction_codebook_size + 8,
        "reasoning_bos_token_id": reasoning_codebook_size,
        "reasoning_eos_token_id": reasoning_codebook_size + 1,
        "reasoning_pad_token_id": reasoning_codebook_size + 3,
        "reconstruction_bos_token_id": reasoning_vocab_size + reconstruction_codebook_size + 1,
        "reconstruction_eos_token_id": reasoning_vocab_size + reconstruction_codebook_size,
        "reconstruction_pad_token_id": reasoning_vocab_size + reconstruction_codebook_size + 2,
    }


def audio_special_ids_from_config(config) -> dict:
    """The audio special ids of a `UniAudio2Config`, in the form the processor stores."""
    return {key: getattr(config, key) for key in default_audio_special_ids()}


# Which argument of the processor fills which segment, per task. `target` segments only appear with labels.
_TEXT_TARGETS = {"transcription_seq", "caption_seq", "lyric_seq", "text_seq", "text_seq_answer"}


class UniAudio2Processor(ProcessorMixin):
    r"""
    Builds UniAudio 2.0 inputs for every task of the released model from text and raw audio, and turns generated
    tokens back into text or audio.

    Inputs per task (all batched; one entry per example):

    * understanding tasks (`"ASR"`, `"audio_caption"`, `"music_caption"`, `"lyric_recognition"`, `"speech_s2t"`):
      `audio`; with `output_labels=True` also `text`, the target;
    * audio QA (`"audio_understanding"`): `audio` and `text` (the question); with labels also `answer`;
    * generation tasks (`"TTS"`, `"TTA"`, `"TTM"`, `"LTS"`): `text` (transcription / caption / lyrics); with labels
      also `audio`, the target; `"InstructTTS"` also takes `instruction` (the style caption);
    * `"text_only"` (and `"audio_only"`): `text` (`audio`), for training grids only (`output_labels=True`).

    The task prompt (`prompt`, defaulting to the one the released model was trained with) is prepended as
    `<|begin_of_text|> prompt "\\n\\n" <|end_of_text|>`, text segments get `<|begin_of_text|> ... <|end_of_text|>`
    and their tags, audio is tokenized by the feature extractor's codec into a reasoning segment followed by a
    reconstruction segment. Without labels the grid stops before the task's target (the generation prompt) and is
    left-padded; with `output_labels=True` it is complete, right-padded and carries `labels` / `audio_labels` on the
    task's target rows only. Processing options (`padding`, `max_length`, `padding_side`, `return_tensors`,
    `sampling_rate`, ...) follow transformers' `ProcessingKwargs` (see [`~UniAudio2Processor.__call__`]).

    Args:
        feature_extractor ([`UniAudio2FeatureExtractor`]):
            Audio validation, resampling and the ReasoningCodec.
        tokenizer ([`PreTrainedTokenizerBase`]):
            The text tokenizer (Llama-3.2 with the UniAudio tags for the released model).
        audio_special_ids (`dict`, *optional*):
            Audio special ids and vocabulary layout of the model (see [`default_audio_special_ids`]).
        max_length (`int`, *optional*, defaults to 2048):
            Longest accepted grid, in rows (the released model's context).
        chat_template (`str`, *optional*):
            Jinja chat template.
    """

    def __init__(self, feature_extractor, tokenizer, audio_special_ids: dict | None = None, max_length: int = 2048, chat_template=None):
        self.audio_special_ids = dict(audio_special_ids or default_audio_special_ids())
        self.max_length = max_length
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        extractor = processor.feature_extractor
        if not extractor.has_codec:
            # Since transformers 5.25 `ProcessorMixin` builds its feature extractor with `from_dict`, which never sees
            # the directory: tell it where its codec lives.
            extractor.set_codec_source(pretrained_model_name_or_path, **kwargs)
        return processor

    # ------------------------------------------------------------------------------------------------------- ids
    def special_ids(self) -> GridSpecialIds:
        tokenizer = self.tokenizer
        tags = tag_ids_from_tokenizer(tokenizer)
        for name in ("<|begin_of_text|>", "<|end_of_text|>", "<text_pad_token>"):
            token_id = tokenizer.convert_tokens_to_ids(name)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(f"The tokenizer lacks the special token {name!r} that UniAudio 2.0 needs.")
        ids = self.audio_special_ids
        return GridSpecialIds(
            bos_token_id=tokenizer.convert_tokens_to_ids("<|begin_of_text|>"),
            eos_token_id=tokenizer.convert_tokens_to_ids("<|end_of_text|>"),
            text_pad_token_id=tokenizer.convert_tokens_to_ids("<text_pad_token>"),
            tag_ids=tags,
            **{key: value for key, value in ids.items() if key != "reconstruction_vocab_size"},
        )

    def tokenize_segment(self, text: str, **tokenizer_kwargs) -> torch.LongTensor:
        """
        `<|begin_of_text|> text <|end_of_text|>`, as every text segment of the released model. `tokenizer_kwargs`
        (e.g. `split_special_tokens=True`) go to the tokenizer, which adds no special tokens of its own by default.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Expected a non-empty string, got {text!r}.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:  # lone surrogates: the tokenizer would raise a TypeError
            raise ValueError(f"Text {text[:40]!r} is not valid Unicode ({error}).") from error
        ids = self.special_ids()
        body = self.tokenizer(text, **{"add_special_tokens": False, **tokenizer_kwargs})["input_ids"]
        return torch.tensor([ids.bos_token_id, *body, ids.eos_token_id], dtype=torch.long)

    def tokenize_prompt(self, prompt: str, **tokenizer_kwargs) -> torch.LongTensor:
        return self.tokenize_segment(prompt + "\n\n", **tokenizer_kwargs)

    # -------------------------------------------------------------------------------------------------- building
    valid_processor_kwargs = UniAudio2ProcessorKwargs
    # Defaults of the kwargs (`ProcessorMixin._merge_kwargs` step 7): grids are padded and returned as PyTorch
    # tensors; the tokenizer adds no special tokens (segments get their own BOS / EOS). There is deliberately no
    # default `sampling_rate`.
    text_kwargs = {"padding": True, "add_special_tokens": False, "return_tensors": "pt"}

    def __call__(
        self,
        text: str | list[str] | None = None,
        audio=None,
        task: str = "ASR",
        *,
        prompt: str | list[str] | None = None,
        answer: str | list[str] | None = None,
        instruction: str | list[str] | None = None,
        audio_codes=None,
        output_labels: bool = False,
        drop_condition: bool | list[bool] = False,
        **kwargs: Unpack[UniAudio2ProcessorKwargs],
    ) -> BatchFeature:
        """
        Build a batch for `task` (a task name of the released model or an alias such as `"transcribe"`, `"tts"`).

        Processing options follow transformers' `ProcessingKwargs`: pass them flat (`padding="max_length"`), per
        modality (`text_kwargs={...}`, `audio_kwargs={...}`) or for all modalities (`common_kwargs={...}`); the same
        option twice raises, an unknown flat option is ignored with a warning, as in every transformers processor.

        Args:
            text (`str` or `list[str]`, *optional*): see the class docstring.
            audio (array, tensor, or a list of them, *optional*): raw audio; requires `sampling_rate`.
            task (`str`, *optional*, defaults to `"ASR"`): the task.
            prompt (`str` or `list[str]`, *optional*): task prompt(s) replacing the default.
            answer (`str` or `list[str]`, *optional*): QA targets (with `output_labels=True`).
            instruction (`str` or `list[str]`, *optional*): style captions for `"InstructTTS"`.
            audio_codes (`list[tuple[Tensor, Tensor]]`, *optional*): pre-computed `(reasoning (8, T_r),
                reconstruction (8, T_s))` codes instead of `audio` (no codec needed).
            output_labels (`bool`, *optional*, defaults to `False`): build complete training grids with labels.
            drop_condition (`bool` or `list[bool]`, *optional*): condition dropout (unconditional CFG examples).
            sampling_rate (`int`): sampling rate of `audio`. Of the audio kwargs it is the one that applies: the codec
                tokenizes each clip whole, so the waveform padding options of `audio_kwargs` change nothing.
            padding (`bool` or `str`, *optional*, defaults to `True`): `True` / `"longest"` pads the grids to the
                longest example, `"max_length"` to `max_length` rows, `False` / `"do_not_pad"` not at all (then
                examples of different lengths need `return_tensors=None`).
            max_length (`int`, *optional*): the longest accepted grid, in rows, and the length `padding="max_length"`
                pads to; defaults to the processor's `max_length` (2048 for the released model).
            pad_to_multiple_of (`int`, *optional*): round the padded length up to a multiple of this.
            padding_side (`str`, *optional*): `"left"` or `"right"`; defaults to `"left"` for generation prompts and
                `"right"` with `output_labels=True`.
            return_tensors (`str`, *optional*, defaults to `"pt"`): `"pt"`, `"np"`, or `None` for Python lists.
            return_attention_mask (`bool`, *optional*, defaults to `True`): whether to return `attention_mask`.
            split_special_tokens (`bool`, *optional*): tokenize special-token strings in the text as plain text.
            Other text kwargs reach the tokenizer for every text segment (the prompt included).

        Where this processor deliberately departs from the library's processors:

        * audio without `sampling_rate` raises instead of being assumed to be at the extractor's rate (a wrong
          guess silently gives garbage codes);
        * `padding`, `max_length`, `padding_side`, `pad_to_multiple_of` and `return_tensors` apply to the grid
          rows, not to the tokens of each text, and the tokenizer's own padding settings do not apply;
        * a grid longer than `max_length` raises, and `truncation` other than `False` raises: cutting a grid would
          drop part of the task prompt or of the target;
        * text kwargs asking for per-token outputs (offsets, token type ids, overflowing tokens, text pairs, ...)
          raise, since a grid has no such outputs.

        Returns:
            [`BatchFeature`] with `input_ids`, `audio_codes`, `audio_codes_mask`, `attention_mask` (and `labels`,
            `audio_labels` with `output_labels=True`).
        """
        try:
            merged = self._merge_kwargs(UniAudio2ProcessorKwargs, **kwargs)
            # The feature extractor declares no `valid_kwargs`, so `_merge_kwargs` does not check the audio kwargs.
            validate_typed_dict(AudioKwargs, merged["audio_kwargs"])
        except StrictDataclassError as error:  # the library's typed-kwargs check: a wrong type of a known option
            raise ValueError(str(error)) from error
        tokenizer_kwargs = merged["text_kwargs"]  # what is left of them once the grid options are taken out
        grid_kwargs = self._grid_options(tokenizer_kwargs, merged["audio_kwargs"].get("truncation"))
        max_length = grid_kwargs["max_length"] or self.max_length

        if not isinstance(task, str):
            raise ValueError(f"`task` must be a task name (a string such as 'ASR' or 'TTS'), got {task!r}.")
        task_format = resolve_task(task)
        if not output_labels and not task_format.use_prompt and {key for key, _ in task_format.segments} <= set(
            task_format.loss_keys
        ):
            raise ValueError(
                f"Task {task_format.name!r} has no input to condition on (all of its grid is the target): it builds "
                "training grids only, pass `output_labels=True`."
            )
        ids = self.special_ids()
        texts = self._as_list(text, name="text")
        answers, instructions, prompts = (self._as_list(value, name=name) for value, name in
                                          ((answer, "answer"), (instruction, "instruction"), (prompt, "prompt")))
        codes = self._audio_codes(audio, audio_codes, merged["audio_kwargs"].get("sampling_rate"))
        batch_size = max(len(texts or []), len(codes or []), 1)
        for name, values in (("text", texts), ("audio", codes)):
            if values is not None and len(values) != batch_size:
                raise ValueError(f"Got {len(values)} {name} entries for a batch of {batch_size}.")
        answers = self._as_list(answers, batch_size, "answer")
        instructions = self._as_list(instructions, batch_size, "instruction")
        prompts = self._as_list(prompts, batch_size, "prompt") or [DEFAULT_PROMPTS.get(task_format.name)] * batch_size
        drops = drop_condition if isinstance(drop_condition, (list, tuple)) else [drop_condition] * batch_size
        if len(drops) != batch_size:
            raise ValueError(f"Got {len(drops)} `drop_condition` entries for a batch of {batch_size}.")

        grids = []
        for row in range(batch_size):
            segments = {}
            text_keys = [key for key, kind in task_format.segments if kind == TEXT]
            audio_keys = [key for key, kind in task_format.segments if kind in (REASONING, RECONSTRUCTION)]
            for key in text_keys:
                value = self._text_for(key, task_format, row, texts, answers, instructions, output_labels)
                if value is not None:
                    segments[key] = self.tokenize_segment(value, **tokenizer_kwargs)
            if codes is not None and audio_keys:
                reasoning, reconstruction = codes[row]
                for key in audio_keys:
                    segments[key] = (reasoning if key.startswith("reason") else reconstruction).T
            prompt_ids = None
            if task_format.use_prompt and prompts[row]:
                prompt_ids = self.tokenize_prompt(prompts[row], **tokenizer_kwargs)
            grid = build_grid(task_format, segments, ids, prompt_ids=prompt_ids, drop_condition=bool(drops[row]),
                              inference=not output_labels)
            if len(grid) > max_length:
                raise ValueError(
                    f"Example {row} needs {len(grid)} rows, more than max_length={max_length}: shorten the text or "
                    "the audio, or pass a larger `max_length`."
                )
            grids.append(grid)
        side = grid_kwargs["padding_side"] or ("right" if output_labels else "left")
        batch = self._pad(grids, ids, side, grid_kwargs, max_length)
        dropped = [] if output_labels else ["labels", "audio_labels"]
        if grid_kwargs["return_attention_mask"] is False:
            dropped.append("attention_mask")
        batch = {key: value for key, value in batch.items() if key not in dropped}
        return BatchFeature(batch, tensor_type=grid_kwargs["return_tensors"])

    @staticmethod
    def _grid_options(text_kwargs: dict, audio_truncation=None) -> dict:
        """
        Take the grid options out of the merged `text_kwargs` and validate them (before any audio is encoded), with
        errors naming the option; `padding` comes back as a `PaddingStrategy`.
        """
        grid_kwargs = {key: text_kwargs.pop(key, None) for key in _GRID_KWARGS}
        if grid_kwargs["padding_side"] not in (None, "left", "right"):
            raise ValueError(f"`padding_side` must be 'left' or 'right', got {grid_kwargs['padding_side']!r}.")
        for key in ("max_length", "pad_to_multiple_of"):
            value = grid_kwargs[key]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"`{key}` must be a positive integer (grid rows), got {value!r}.")
        padding = grid_kwargs["padding"]
        grid_kwargs["padding"] = PaddingStrategy(
            "longest" if padding is True or padding is None else "do_not_pad" if padding is False else padding
        )
        for truncation in (grid_kwargs["truncation"], audio_truncation):
            if truncation in (None, False) or TruncationStrategy(
                "longest_first" if truncation is True else truncation
            ) == TruncationStrategy.DO_NOT_TRUNCATE:
                continue
            raise ValueError(
                f"`truncation={truncation!r}` is not supported: cutting a UniAudio 2.0 grid (or a clip) would drop "
                "part of the task prompt or target. Shorten the text or the audio, or pass a larger `max_length`."
            )
        if grid_kwargs["return_tensors"] is not None:
            TensorType(grid_kwargs["return_tensors"])  # the library's error for an unknown framework
        requested = {key: text_kwargs.pop(key, None) for key in _TOKEN_OUTPUT_KWARGS}
        token_outputs = sorted(key for key, value in requested.items() if value)
        if token_outputs:
            raise ValueError(f"{token_outputs} ask for per-token outputs, which UniAudio 2.0 grids do not have.")
        return grid_kwargs

    @staticmethod
    def _pad(grids: list[Grid], ids: GridSpecialIds, side: str, grid_kwargs: dict, max_length: int) -> dict:
        """Collate the grids with the requested padding; returns tensors, or lists when `return_tensors=None`."""
        lengths = [len(grid) for grid in grids]
        if grid_kwargs["padding"] == PaddingStrategy.DO_NOT_PAD and len(set(lengths)) > 1:
            if grid_kwargs["return_tensors"] is not None:
                raise ValueError(
                    f"With padding=False the examples keep their lengths ({lengths} rows) and cannot be stacked into "
                    "tensors: pass padding=True, or return_tensors=None for lists."
                )
            rows = [collate_grids([grid], ids) for grid in grids]
            return {key: [row[key][0].tolist() for row in rows] for key in rows[0]}
        length = max(lengths)
        if grid_kwargs["padding"] == PaddingStrategy.MAX_LENGTH:
            length = max_length
        if grid_kwargs["pad_to_multiple_of"] and grid_kwargs["padding"] != PaddingStrategy.DO_NOT_PAD:
            multiple = grid_kwargs["pad_to_multiple_of"]
            length = -(-length // multiple) * multiple
        extra = []
        if length > max(lengths):
            # A placeholder example of the target length makes `collate_grids` pad every example to it (with its own
            # padding ids); its row is dropped again.
            empty = torch.zeros(length, dtype=torch.bool)
            codes = torch.zeros(length, ids.num_codebooks, dtype=torch.long)
            placeholder = Grid(input_ids=empty.long(), audio_codes=codes, audio_rows=empty, text_rows=empty,
                               text_loss=empty, audio_loss=empty)
            extra = [placeholder]
        batch = collate_grids(grids + extra, ids, padding_side=side)
        batch = {key: value[: len(grids)] for key, value in batch.items()}
        if grid_kwargs["return_tensors"] is None:
            batch = {key: value.tolist() for key, value in batch.items()}
        return batch

    @staticmethod
    def _as_list(value, batch_size: int | None = None, name: str = "text"):
        """A string or a list of strings as a list (one string repeats over the batch); a `ValueError` otherwise."""
        if value is None:
            return None
        if not isinstance(value, (str, list, tuple)) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"`{name}` must be a string or a list of strings, got {value!r:.80}.")
        values = [value] if isinstance(value, str) else list(value)
        if batch_size is not None and len(values) == 1 and batch_size > 1:
            values = values * batch_size
        if batch_size is not None and len(values) != batch_size:
            raise ValueError(f"Got {len(values)} `{name}` entries for a batch of {batch_size}.")
        return values

    def _text_for(self, key, task_format, row, texts, answers, instructions, output_labels):
        is_target = key in task_format.loss_keys
        if is_target and not output_labels:
            return None
        if key == "text_seq_answer":
            if answers is None:
                raise ValueError(f"Task {task_format.name!r} with labels needs `answer`.")
            return answers[row]
        if task_format.name in ("InstructTTS", "prompt_instruct_tts") and key == "caption_seq":
            if instructions is None:
                raise ValueError(f"Task {task_format.name!r} needs `instruction` (the style caption).")
            return instructions[row]
        if texts is None:
            role = "target" if is_target else "input"
            raise ValueError(f"Task {task_format.name!r} needs `text` ({role} for the segment {key!r}).")
        return texts[row]

    def _audio_codes(self, audio, audio_codes, sampling_rate):
        if audio is not None and audio_codes is not None:
            raise ValueError("Pass either `audio` or `audio_codes`, not both.")
        if audio_codes is not None:
            if not isinstance(audio_codes, (list, tuple)) or not all(
                isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in audio_codes
            ):
                raise ValueError(
                    "`audio_codes` must be a list with one (reasoning_codes, reconstruction_codes) pair per example, "
                    f"got {type(audio_codes).__name__}" + (f" of {len(audio_codes)} entries." if isinstance(
                        audio_codes, (list, tuple)) else ".")
                )
            pairs = [tuple(as_code_tensor(c, "`audio_codes`") for c in pair) for pair in audio_codes]
        elif audio is not None:
            pairs = self.feature_extractor.encode(audio, sampling_rate=sampling_rate)
        else:
            return None
        ids = self.audio_special_ids
        num_codebooks = ids["num_codebooks"]
        # Raw codes lie below the first special id of their block (see `default_audio_special_ids`).
        sizes = {"reasoning": ids["reasoning_bos_token_id"],
                 "reconstruction": ids["reconstruction_eos_token_id"] - ids["reasoning_vocab_size"]}
        for example, pair in enumerate(pairs):
            for name, value in zip(sizes, pair):
                if value.ndim != 2 or value.shape[0] != num_codebooks or value.shape[1] == 0:
                    raise ValueError(
                        f"Example {example}: {name} codes must have shape ({num_codebooks}, frames>0), got "
                        f"{tuple(value.shape)}."
                    )
                low, high = int(value.min()), int(value.max())
                if low < 0 or high >= sizes[name]:
                    raise ValueError(
                        f"Example {example}: {name} codes must lie in [0, {sizes[name] - 1}] (raw codes, without the "
                        f"vocabulary offset), got values in [{low}, {high}]."
                    )
        return pairs

    def apply_chat_template(self, conversation, task: str | None = None, sampling_rate: int | None = None, **kwargs):
        """
        Build inputs from chat messages (`[{"role": "user", "content": [{"type": "audio", "audio": array}, {"type":
        "text", "text": "..."}]}]`), as transformers' multimodal processors do. UniAudio 2.0 was trained on task
        grids, not on chats: the last user turn is mapped to a task. With audio and text it is audio question
        answering, with audio only ASR (pass `task=` for captioning), with text only TTS (pass `task="TTA"` /
        `"TTM"` for sound / music). Audio items may give `"audio"` (with `sampling_rate=`) or `"path"`.
        """
        turns = [turn for turn in conversation if turn.get("role") == "user"]
        if not turns:
            raise ValueError("The conversation has no user turn.")
        content = turns[-1]["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        audios, texts = [], []
        for item in content:
            if item.get("type") == "audio":
                if "path" in item:
                    waveform, rate = read_audio_file(item["path"])
                elif "audio" in item:
                    waveform, rate = item["audio"], item.get("sampling_rate", sampling_rate)
                else:
                    raise ValueError("An audio item needs 'audio' (with a sampling rate) or 'path'.")
                audios.append(self.feature_extractor.to_mono_float(waveform, rate))
            elif item.get("type") == "text":
                texts.append(item["text"])
            else:
                raise ValueError(f"Unsupported content type {item.get('type')!r} (use 'audio' or 'text').")
        if len(audios) > 1:
            raise ValueError("UniAudio 2.0 takes one audio clip per turn.")
        text = " ".join(texts) if texts else None
        if task is None:
            task = ("audio_understanding" if text else "ASR") if audios else "TTS"
        audio = audios[0] if audios else None
        rate = self.feature_extractor.sampling_rate if audios else None
        return self(text=text, audio=audio, sampling_rate=rate, task=task, **kwargs)

    # ---------------------------------------------------------------------------------------------------- output
    def batch_decode(self, sequences, prompt_length: int | None = None, **kwargs):
        """
        The tokenizer's `batch_decode` (same defaults: pass `skip_special_tokens=True` to drop the tags), after
        dropping the first `prompt_length` positions of every sequence (e.g. the prompt) when given.
        """
        if prompt_length is not None:
            sequences = [list(seq)[prompt_length:] for seq in sequences]
        for sequence in sequences:
            self._check_token_ids(sequence)
        return self.tokenizer.batch_decode(sequences, **kwargs)

    def decode(self, token_ids, **kwargs):
        """The tokenizer's `decode`, with its defaults."""
        self._check_token_ids(token_ids)
        return self.tokenizer.decode(token_ids, **kwargs)

    def _check_token_ids(self, token_ids) -> None:
        """A `ValueError` naming the id for non-integer ids or ids outside the tokenizer's vocabulary."""
        values = token_ids.detach().cpu().numpy() if isinstance(token_ids, torch.Tensor) else token_ids
        try:
            values = np.asarray(values)
        except ValueError as error:
            raise ValueError(f"Token ids must be a sequence of integers, got {token_ids!r:.80} ({error}).") from error
        if values.size == 0:
            return
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"Token ids must be integers, got dtype {values.dtype}: {token_ids!r:.80}.")
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= len(self.tokenizer):
            bad = low if low < 0 else high
            raise ValueError(f"Token id {bad} is outside the tokenizer's vocabulary [0, {len(self.tokenizer) - 1}].")

    def decode_audio(self, reconstruction_codes, generator: torch.Generator | None = None, **decode_kwargs) -> list[np.ndarray]:
        """Generated reconstruction codes (one `(8, T_s)` tensor per item, offset removed) → 24 kHz waveforms."""
        return self.feature_extractor.decode(reconstruction_codes, generator=generator, **decode_kwargs)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        result = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        # `ProcessorMixin.save_pretrained` only writes JSON: the codec weights go to their subfolder here.
        self.feature_extractor.save_codec(save_directory)
        return result

    @property
    def model_input_names(self):
        return ["input_ids", "audio_codes", "audio_codes_mask", "attention_mask"]


UniAudio2Processor.register_for_auto_class()

__all__ = [
    "UniAudio2Processor",
    "UniAudio2ProcessorKwargs",
    "UniAudio2TextKwargs",
    "audio_special_ids_from_config",
    "default_audio_special_ids",
]
