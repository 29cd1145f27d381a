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
Pipelines of UniAudio 2.0, registered in the saved `config.json` (`custom_pipelines`) so that they load offline:

* `pipeline("audio-to-text", model=DIR, trust_remote_code=True)`: ASR, captioning, audio QA;
* `pipeline("text-to-audio", model=DIR, trust_remote_code=True)`: TTS, text-to-sound, text-to-music.
"""

import numpy as np
import torch
from transformers import GenerationConfig
from transformers.pipelines.base import Pipeline
from transformers.utils import logging


logger = logging.get_logger(__name__)

AUDIO_TO_TEXT_TASKS = {"ASR", "audio_caption", "music_caption", "lyric_recognition", "audio_understanding", "speech_s2t"}
TEXT_TO_AUDIO_TASKS = {"TTS", "InstructTTS", "TTA", "TTM", "LTS"}


def load_audio_input(inputs, sampling_rate=None):
    """
    `(waveform, sampling_rate)` from a file path, a `{"array"|"raw": ..., "sampling_rate": ...}` dict (as in
    `datasets` audio columns and the ASR pipeline) or an array with `sampling_rate` given separately.
    """
    if isinstance(inputs, str):
        from .feature_extraction_uniaudio2 import read_audio_file

        return read_audio_file(inputs)
    if isinstance(inputs, dict):
        if "sampling_rate" not in inputs:
            raise ValueError("An audio dict needs a 'sampling_rate' key.")
        key = "array" if "array" in inputs else "raw" if "raw" in inputs else None
        if key is None:
            raise ValueError("An audio dict needs an 'array' (or 'raw') key with the samples.")
        return inputs[key], inputs["sampling_rate"]
    if isinstance(inputs, (np.ndarray, torch.Tensor, list)):
        if sampling_rate is None:
            raise ValueError("Pass `sampling_rate=` with raw audio arrays.")
        return inputs, sampling_rate
    raise ValueError(f"Unsupported audio input of type {type(inputs).__name__}: use a path, an array or a dict.")


class _CodecOnModelDevice:
    """The processor's codec encodes and decodes on the model's device (`pipeline(..., device=...)`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.processor.feature_extractor.place_codec(self.model.device)


class UniAudio2AudioToTextPipeline(_CodecOnModelDevice, Pipeline):
    """
    Audio → text with UniAudio 2.0: transcription (`task="ASR"`, the default), captioning (`"audio_caption"`,
    `"music_caption"`), lyrics (`"lyric_recognition"`) and audio question answering (`"audio_understanding"` with
    `question=`). Long audio is split into `chunk_length_s` chunks whose outputs are joined.

    ```python
    >>> asr = pipeline("audio-to-text", model="path/to/uniaudio2", trust_remote_code=True)
    >>> asr("speech.wav")
    {'text': '...'}
    >>> asr({"array": waveform, "sampling_rate": 16000}, task="audio_caption")
    ```
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _pipeline_calls_generate = True
    _default_generation_config = GenerationConfig(max_new_tokens=256)

    def _sanitize_parameters(
        self, task=None, prompt=None, question=None, sampling_rate=None, chunk_length_s=None, max_new_tokens=None,
        generate_kwargs=None, **kwargs,
    ):
        preprocess = {}
        for name, value in (("task", task), ("prompt", prompt), ("question", question), ("sampling_rate", sampling_rate),
                            ("chunk_length_s", chunk_length_s)):
            if value is not None:
                preprocess[name] = value
        if task is not None and task not in AUDIO_TO_TEXT_TASKS:
            from .tasks_uniaudio2 import resolve_task

            if resolve_task(task).name not in AUDIO_TO_TEXT_TASKS:
                raise ValueError(f"Task {task!r} is not an audio-to-text task ({sorted(AUDIO_TO_TEXT_TASKS)}).")
        forward = {"generate_kwargs": dict(generate_kwargs or {}), **kwargs}
        if max_new_tokens is not None:
            forward["generate_kwargs"]["max_new_tokens"] = max_new_tokens
        return preprocess, forward, {}

    def preprocess(self, inputs, task="ASR", prompt=None, question=None, sampling_rate=None, chunk_length_s=None):
        from .tasks_uniaudio2 import resolve_task

        task = resolve_task(task).name
        waveform, rate = load_audio_input(inputs, sampling_rate)
        waveform = self.processor.feature_extractor.to_mono_float(waveform, rate)
        target_rate = self.processor.feature_extractor.sampling_rate
        if chunk_length_s:
            step = int(chunk_length_s * target_rate)
            if step <= 0:
                raise ValueError(f"`chunk_length_s` must be positive, got {chunk_length_s}.")
            chunks = [waveform[start : start + step] for start in range(0, waveform.shape[0], step)]
        else:
            chunks = [waveform]
        if task == "audio_understanding" and not question:
            raise ValueError("Audio question answering needs `question=`.")
        batches = [
            self.processor(audio=chunk, sampling_rate=target_rate, task=task, prompt=prompt, text=question)
            for chunk in chunks
        ]
        return {"chunks": batches}

    def _forward(self, model_inputs, generate_kwargs=None, **kwargs):
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs or {}, **kwargs)
        sequences = []
        for batch in model_inputs["chunks"]:
            batch = {key: value.to(self.model.device) for key, value in batch.items()}
            generated = self.model.generate(**batch, **generate_kwargs)
            if not isinstance(generated, torch.Tensor):
                generated = generated.sequences
            sequences.append(generated[0, batch["input_ids"].shape[1] :].cpu())
        return {"sequences": sequences}

    def postprocess(self, model_outputs):
        texts = self.processor.batch_decode(model_outputs["sequences"], skip_special_tokens=True)
        return {"text": " ".join(text.strip() for text in texts).strip()}


class UniAudio2TextToAudioPipeline(_CodecOnModelDevice, Pipeline):
    """
    Text → audio with UniAudio 2.0: speech (`task="TTS"`, the default; `"InstructTTS"` with `instruction=`), sound
    (`"TTA"`) and music (`"TTM"`, `"LTS"` for lyrics). Returns `{"audio": np.ndarray (num_samples,),
    "sampling_rate": 24000}` like transformers' text-to-audio pipeline.

    Generation keeps each frame decodable (`constrain_audio_codes=True`) and bounds the reasoning phase
    (`max_reasoning_frames`: 2/7 of `max_new_frames`, at most 30 s of reasoning tokens) so that a waveform always
    comes out. The flow decoder's waveform is not bounded: the pipeline returns it clipped to [-1, 1], the range of
    float audio that wav files, players and this model's own feature extractor accept (`processor.decode_audio`
    returns it unclipped). `return_codes=True` adds the generated `"reasoning_codes"` and `"reconstruction_codes"`
    (`torch.LongTensor` of shape `(num_codebooks, frames)`) to the output.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _pipeline_calls_generate = True

    def _sanitize_parameters(
        self, task=None, prompt=None, instruction=None, max_new_frames=None, decode_kwargs=None, generate_kwargs=None,
        seed=None, return_codes=None, **kwargs,
    ):
        preprocess = {key: value for key, value in (("task", task), ("prompt", prompt), ("instruction", instruction))
                      if value is not None}
        forward = {"generate_kwargs": dict(generate_kwargs or {}), **kwargs}
        if max_new_frames is not None:
            forward["generate_kwargs"]["max_new_frames"] = max_new_frames
        if seed is not None:
            forward["seed"] = seed
        postprocess = {"decode_kwargs": decode_kwargs or {}}
        if seed is not None:
            postprocess["seed"] = seed
        if return_codes is not None:
            postprocess["return_codes"] = return_codes
        return preprocess, forward, postprocess

    def preprocess(self, text, task="TTS", prompt=None, instruction=None):
        from .tasks_uniaudio2 import resolve_task

        task = resolve_task(task).name
        if task not in TEXT_TO_AUDIO_TASKS:
            raise ValueError(f"Task {task!r} is not a text-to-audio task ({sorted(TEXT_TO_AUDIO_TASKS)}).")
        return self.processor(text=text, task=task, prompt=prompt, instruction=instruction)

    def _forward(self, model_inputs, generate_kwargs=None, seed=None, **kwargs):
        generate_kwargs = {"constrain_audio_codes": True, **(generate_kwargs or {}), **kwargs}
        # The frame bound is the call's or the generation config's (`generate` raises without one).
        max_frames = generate_kwargs.get("max_new_frames") or getattr(self.model.generation_config, "max_new_frames", None)
        if "max_reasoning_frames" not in generate_kwargs and max_frames:
            # Reasoning tokens run at 5 Hz and reconstruction tokens at 12.5 Hz: leave 5/7 of the frames to the latter.
            generate_kwargs["max_reasoning_frames"] = max(1, min(150, 2 * max_frames // 7))
        if seed is not None:
            # Frames are sampled where the depth decoder's codebook heads are (their device under a device map).
            device = self.model.depth_decoder.codebooks_head.device
            generate_kwargs.setdefault("generator", torch.Generator(device=device).manual_seed(seed))
        model_inputs = {key: value.to(self.model.device) for key, value in model_inputs.items()}
        output = self.model.generate(**model_inputs, generation_mode="audio", **generate_kwargs)
        return {"reconstruction_codes": output.reconstruction_codes, "reasoning_codes": output.reasoning_codes}

    def postprocess(self, model_outputs, decode_kwargs=None, seed=None, return_codes=False):
        codes = model_outputs["reconstruction_codes"][0]
        if codes.shape[1] == 0:
            raise ValueError(
                "The model produced no reconstruction tokens (it ended the audio, or never finished its reasoning "
                "phase); set `min_reconstruction_frames`, lower `max_reasoning_frames` or raise `max_new_frames`."
            )
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.processor.feature_extractor.codec.device).manual_seed(seed)
        waveform = self.processor.decode_audio([codes], generator=generator, **(decode_kwargs or {}))[0]
        output = {"audio": np.clip(waveform, -1.0, 1.0), "sampling_rate": self.processor.feature_extractor.sampling_rate}
        if return_codes:
            output["reasoning_codes"] = model_outputs["reasoning_codes"][0]
            output["reconstruction_codes"] = codes
        return output


__all__ = ["UniAudio2AudioToTextPipeline", "UniAudio2TextToAudioPipeline", "load_audio_input"]
