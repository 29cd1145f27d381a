"""Feature extractor, processor, pipelines and CLI on the tiny default bundle (offline)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from uniaudio2.tiny_default import build_tiny_default

    return build_tiny_default(tmp_path_factory.mktemp("tiny") / "tiny-uniaudio2", seed=0)


@pytest.fixture(scope="module")
def processor(bundle):
    from uniaudio2.processing_uniaudio2 import UniAudio2Processor

    return UniAudio2Processor.from_pretrained(bundle, trust_remote_code=True)


def _tone(seconds=1.0, rate=24000, freq=220.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ feature extractor
def test_feature_extractor_conversions(processor):
    fe = processor.feature_extractor
    tone = _tone()
    pcm = (tone * 32767).astype(np.int16)
    np.testing.assert_allclose(fe.to_mono_float(pcm, 24000), tone, atol=1e-4)
    stereo = np.stack([tone, 0.5 * tone])
    np.testing.assert_allclose(fe.to_mono_float(stereo, 24000), 0.75 * tone, atol=1e-6)
    np.testing.assert_allclose(fe.to_mono_float(stereo.T, 24000), 0.75 * tone, atol=1e-6)
    resampled = fe.to_mono_float(_tone(rate=16000), 16000)
    assert abs(resampled.shape[0] - 24000) <= 1
    batch = fe([tone, tone[:12000]], sampling_rate=24000)
    assert batch["input_values"].shape == (2, 1, 24000) and batch["padding_mask"][1].sum() == 12000


@pytest.mark.parametrize(
    "audio, rate, message",
    [
        (np.zeros(0, dtype=np.float32), 24000, "empty"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), 24000, "NaN"),
        (np.zeros(100, dtype=np.float32), None, "sampling_rate"),
        (np.zeros(100, dtype=np.float32), -5, "positive integer"),
        (np.zeros(100, dtype=np.complex64), 24000, "dtype"),
        (np.zeros((2, 2, 100), dtype=np.float32), 24000, "1-D"),
        (np.full(100, 3000.0, dtype=np.float32), 24000, r"\[-1, 1\]"),  # int16 values passed as float
        (np.zeros(24000 * 700, dtype=np.float32), 24000, "max_duration"),
        ("not audio", 24000, "numpy array"),
    ],
)
def test_feature_extractor_bad_input(processor, audio, rate, message):
    with pytest.raises(ValueError, match=message):
        processor.feature_extractor.to_mono_float(audio, rate)


def test_feature_extractor_encode_is_batch_consistent(processor):
    fe = processor.feature_extractor
    short, long = _tone(0.6), _tone(1.3, freq=330.0)
    alone = fe.encode(short, sampling_rate=24000)[0]
    both = fe.encode([long, short], sampling_rate=24000)
    assert torch.equal(both[1][0], alone[0]) and torch.equal(both[1][1], alone[1])
    assert alone[0].shape[0] == 8 and alone[1].shape[0] == 8


# ------------------------------------------------------------------------------------------------------ processor
def test_processor_builds_asr_and_tts_grids(processor):
    ids = processor.special_ids()
    audio = [_tone(0.8), _tone(0.4)]
    batch = processor(audio=audio, sampling_rate=24000, task="ASR")
    assert set(batch) == {"input_ids", "audio_codes", "audio_codes_mask", "attention_mask"}
    # left padding for generation prompts; the prompt ends with the reconstruction EOS frame
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][0].all()
    assert (batch["audio_codes"][:, -1] == ids.reconstruction_eos_token_id).all()
    prompt = processor.tokenize_prompt("speech recognition")
    assert torch.equal(batch["input_ids"][0, : len(prompt)], prompt)
    tts = processor(text=["hello world", "the dog"], task="tts")
    assert not tts["audio_codes_mask"].any()
    assert (tts["input_ids"][:, -1] == ids.tag("</transcription>")).all()


def test_processor_labels_cover_only_the_target(processor):
    codes = [(torch.randint(0, 32, (8, 3)), torch.randint(0, 64, (8, 5)))]
    asr = processor(text="hello", audio_codes=codes, task="ASR", output_labels=True)
    labelled = asr["labels"][0] != -100
    # the transcription segment: <transcription> BOS hello EOS </transcription>
    body = processor.tokenizer("hello", add_special_tokens=False)["input_ids"]
    assert labelled.sum() == len(body) + 4 and (asr["audio_labels"] == -100).all()
    tts = processor(text="hello", audio_codes=codes, task="TTS", output_labels=True)
    assert (tts["labels"] == -100).all()
    audio_rows = tts["audio_labels"][0, :, 0] != -100
    assert audio_rows.sum() == 3 + 2 + 5 + 2  # both segments with their BOS/EOS frames
    qa = processor(text="what is it?", answer="a dog", audio_codes=codes, task="audio_understanding", output_labels=True)
    assert (qa["labels"] != -100).sum() == len(processor.tokenizer("a dog", add_special_tokens=False)["input_ids"]) + 2


def test_processor_errors(processor):
    with pytest.raises(ValueError, match="Unknown task"):
        processor(text="hi", task="karaoke")
    with pytest.raises(ValueError, match="needs `text`"):
        processor(task="TTS")
    with pytest.raises(ValueError, match="max_length"):
        processor(text="word " * 3000, task="TTS")
    with pytest.raises(ValueError, match="non-empty"):
        processor(text="  ", task="TTS")
    with pytest.raises(ValueError, match="instruction"):
        processor(text="hi", task="InstructTTS")


def test_processor_round_trip_keeps_the_codec(bundle, tmp_path):
    from uniaudio2.processing_uniaudio2 import UniAudio2Processor

    loaded = UniAudio2Processor.from_pretrained(bundle, trust_remote_code=True)
    assert loaded.feature_extractor._codec is None  # lazy
    loaded.save_pretrained(tmp_path / "resaved")
    assert (tmp_path / "resaved" / "codec" / "model.safetensors").is_file()
    again = UniAudio2Processor.from_pretrained(tmp_path / "resaved", trust_remote_code=True)
    assert again.audio_special_ids == loaded.audio_special_ids
    tone = _tone(0.5)
    first, second = loaded.feature_extractor.encode(tone, 24000)[0], again.feature_extractor.encode(tone, 24000)[0]
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


# --------------------------------------------------------------------------------------- offline Auto + pipelines
CHILD = r"""
import sys, numpy as np, soundfile
from transformers import AutoFeatureExtractor, AutoModel, AutoProcessor, pipeline
path, wav = sys.argv[1], sys.argv[2]
assert type(AutoProcessor.from_pretrained(path, trust_remote_code=True)).__name__ == "UniAudio2Processor"
assert type(AutoFeatureExtractor.from_pretrained(path, trust_remote_code=True)).__name__ == "UniAudio2FeatureExtractor"
assert type(AutoModel.from_pretrained(path, trust_remote_code=True)).__name__ == "UniAudio2ForConditionalGeneration"
asr = pipeline("audio-to-text", model=path, trust_remote_code=True)
audio, rate = soundfile.read(wav, dtype="float32")
for result in (asr(audio, sampling_rate=rate, max_new_tokens=4), asr({"array": audio, "sampling_rate": rate}, max_new_tokens=4),
               asr(wav, max_new_tokens=4), asr(wav, task="audio_caption", chunk_length_s=1.0, max_new_tokens=3),
               asr(wav, task="audio_understanding", question="what?", max_new_tokens=3)):
    assert isinstance(result["text"], str), result
batched = asr([wav, wav], batch_size=1, max_new_tokens=3)
assert len(batched) == 2
tts = pipeline("text-to-audio", model=path, trust_remote_code=True)
speech = tts("hello world", max_new_frames=20, seed=0)
assert speech["sampling_rate"] == 24000 and speech["audio"].ndim == 1 and speech["audio"].size > 0
again = tts("hello world", max_new_frames=20, seed=0)
assert np.array_equal(again["audio"], speech["audio"])
assert "uniaudio2" not in sys.modules
print("PIPELINES_OK")
"""


def _offline_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    return env


def test_auto_classes_and_pipelines_offline(bundle, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    result = subprocess.run([sys.executable, "-I", str(script), str(bundle), str(REPO_ROOT / "examples" / "hello.wav")],
                            cwd=tmp_path, env=_offline_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PIPELINES_OK" in result.stdout


def test_text_to_audio_pipeline_clips_the_waveform_and_returns_codes(bundle, monkeypatch):
    from transformers import pipeline

    tts = pipeline("text-to-audio", model=str(bundle), trust_remote_code=True)
    raw = tts.processor.decode_audio
    decoded = {}

    def loud_decode(codes, **kwargs):  # the flow decoder's waveform is unbounded: make it overshoot
        decoded["codes"] = codes[0]
        return [2.0 * wave / max(float(np.abs(wave).max()), 1e-6) for wave in raw(codes, **kwargs)]

    monkeypatch.setattr(tts.processor, "decode_audio", loud_decode)
    speech = tts("hello world", max_new_frames=20, seed=0, return_codes=True)
    assert float(np.abs(speech["audio"]).max()) == 1.0
    reasoning, reconstruction = speech["reasoning_codes"], speech["reconstruction_codes"]
    assert reconstruction is decoded["codes"] and reconstruction.shape[0] == 8 and reasoning.shape[0] == 8
    assert reconstruction.dtype == torch.long and reconstruction.shape[1] > 0
    # The clipped speech is valid input for the model's own speech recognition.
    asr = pipeline("audio-to-text", model=str(bundle), trust_remote_code=True)
    assert isinstance(asr(speech["audio"], sampling_rate=speech["sampling_rate"], max_new_tokens=3)["text"], str)
    assert set(tts("hello world", max_new_frames=20, seed=0)) == {"audio", "sampling_rate"}


# ---------------------------------------------------------------------------------------------------------- CLI
def _cli(args, tmp_path):
    return subprocess.run([sys.executable, "-m", "uniaudio2.cli", *args], cwd=tmp_path, env=_offline_env(tmp_path),
                          capture_output=True, text=True, timeout=900)


def test_cli_end_to_end(bundle, tmp_path):
    wav = str(REPO_ROOT / "examples" / "hello.wav")
    result = _cli(["transcribe", wav, "--model", str(bundle), "--max_new_tokens", "3"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    result = _cli(["speak", "hello", "--model", str(bundle), "-o", "out/speech.wav", "--max_new_frames", "14"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    audio, rate = soundfile.read(tmp_path / "out" / "speech.wav")
    assert rate == 24000 and audio.size > 0
    result = _cli(["encode", wav, "--model", str(bundle), "-o", "codes.safetensors"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    result = _cli(["decode", "codes.safetensors", "--model", str(bundle), "-o", "decoded.wav"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert soundfile.info(str(tmp_path / "decoded.wav")).samplerate == 24000


def test_cli_errors_leave_nothing_behind(bundle, tmp_path):
    result = _cli(["speak", "   ", "--model", str(bundle), "-o", "empty.wav"], tmp_path)
    assert result.returncode == 2 and "empty" in result.stderr
    result = _cli(["transcribe", "missing.wav", "--model", str(bundle)], tmp_path)
    assert result.returncode == 2 and "not found" in result.stderr
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000garbage")
    result = _cli(["encode", "broken.wav", "--model", str(bundle), "-o", "codes.safetensors"], tmp_path)
    assert result.returncode == 2 and "could not read" in result.stderr
    result = _cli(["transcribe", "broken.wav", "--model", str(tmp_path / "nomodel")], tmp_path)
    assert result.returncode == 2 and "model directory not found" in result.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.suffix in (".wav", ".safetensors") and p.name != "broken.wav"]
    assert leftovers == [] and not any(p.name.startswith(".") and p.is_file() for p in tmp_path.iterdir())


def test_chat_messages_map_to_tasks(processor):
    tone = _tone(0.5)
    qa = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio", "audio": tone, "sampling_rate": 24000},
                                      {"type": "text", "text": "what is it?"}]}]
    )
    direct = processor(audio=tone, sampling_rate=24000, text="what is it?", task="audio_understanding")
    assert torch.equal(qa["input_ids"], direct["input_ids"]) and torch.equal(qa["audio_codes"], direct["audio_codes"])
    tts = processor.apply_chat_template([{"role": "user", "content": "hello there"}])
    assert torch.equal(tts["input_ids"], processor(text="hello there", task="TTS")["input_ids"])
    with pytest.raises(ValueError, match="user turn"):
        processor.apply_chat_template([{"role": "assistant", "content": "hi"}])


# ------------------------------------------------------------------------------------- processor kwargs (#28 item 8)
def _codes(frames=3):
    generator = torch.Generator().manual_seed(frames)
    return (torch.randint(0, 32, (8, frames), generator=generator), torch.randint(0, 64, (8, 2 * frames), generator=generator))


def _equal_batches(first, second):
    assert set(first) == set(second)
    for key in first:
        assert torch.equal(torch.as_tensor(np.asarray(first[key])), torch.as_tensor(np.asarray(second[key]))), key


def test_processor_kwargs_follow_processing_kwargs(processor):
    from typing import get_args

    from uniaudio2.processing_uniaudio2 import UniAudio2ProcessorKwargs

    assert processor.valid_processor_kwargs is UniAudio2ProcessorKwargs
    text_kwargs = UniAudio2ProcessorKwargs.__annotations__["text_kwargs"].__annotations__
    for name in ("padding", "max_length", "return_tensors", "padding_side"):
        annotation = text_kwargs[name]
        flat = [arg for part in get_args(annotation) for arg in (get_args(part) or (part,))]  # unwrap Annotated
        assert type(None) in flat, name
    texts = ["hello world", "the dog"]
    flat = processor(text=texts, task="TTS", padding="max_length", max_length=40, return_tensors="pt")
    nested = processor(text=texts, task="TTS", text_kwargs={"padding": "max_length", "max_length": 40},
                       common_kwargs={"return_tensors": "pt"})
    assert flat["input_ids"].shape == (2, 40) and flat["audio_codes"].shape == (2, 40, 8)
    _equal_batches(flat, nested)
    # None means "the processor's default", as for every typed kwarg of the library.
    _equal_batches(processor(text=texts, task="TTS", padding=None, max_length=None, padding_side=None),
                   processor(text=texts, task="TTS"))
    with pytest.raises(ValueError, match="passed two times"):
        processor(text=texts, task="TTS", text_kwargs={"padding": "max_length"}, padding="max_length")


def test_processor_text_kwargs_reach_the_tokenizer(processor):
    ids = processor.special_ids()
    text = "say <|end_of_text|> now"
    plain = processor(text=text, task="TTS")["input_ids"][0]
    split = processor(text=text, task="TTS", text_kwargs={"split_special_tokens": True})["input_ids"][0]
    # Without splitting, the literal special token of the user's text becomes one more EOS in the grid.
    assert (plain == ids.eos_token_id).sum() == (split == ids.eos_token_id).sum() + 1
    assert torch.equal(processor(text=text, task="TTS", split_special_tokens=True)["input_ids"][0], split)
    body = processor.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert split[-len(body) - 2 : -2].tolist() == body  # ... BOS body EOS </transcription>


def test_processor_audio_and_common_kwargs_reach_the_feature_extractor(processor, monkeypatch):
    seen = []
    encode = processor.feature_extractor.encode

    def recording_encode(raw_audio, sampling_rate=None):
        seen.append(sampling_rate)
        return encode(raw_audio, sampling_rate=sampling_rate)

    # (setitem, not setattr: undoing it removes the instance attribute instead of storing a bound method there)
    monkeypatch.setitem(processor.feature_extractor.__dict__, "encode", recording_encode)
    tone = _tone(0.4, rate=16000)
    flat = processor(audio=tone, sampling_rate=16000)
    nested = processor(audio=tone, audio_kwargs={"sampling_rate": 16000})
    common = processor(audio=tone, common_kwargs={"sampling_rate": 16000, "return_tensors": "np"})
    assert seen == [16000, 16000, 16000]
    _equal_batches(flat, nested)
    _equal_batches(flat, common)
    assert isinstance(common["input_ids"], np.ndarray)  # the common return_tensors reached the grid (text) side too
    # The feature extractor declares no kwargs of its own: the library's `AudioKwargs` are checked here.
    with pytest.raises(TypeError, match="sampling_rat"):
        processor(audio=tone, audio_kwargs={"sampling_rat": 16000})


def test_processor_unknown_kwarg_is_ignored_with_the_library_warning(processor):
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging as hf_logging

    with CaptureLogger(hf_logging.get_logger("transformers.processing_utils")) as captured:
        batch = processor(text="hello", task="TTS", no_such_option_for_uniaudio2=3)
    assert "no_such_option_for_uniaudio2" in captured.out and "will be ignored" in captured.out
    _equal_batches(batch, processor(text="hello", task="TTS"))


def test_processor_return_tensors_variants(processor):
    texts = ["hello world", "the dog"]
    pt = processor(text=texts, task="TTS")
    np_batch = processor(text=texts, task="TTS", return_tensors="np")
    lists = processor(text=texts, task="TTS", return_tensors=None)
    assert all(isinstance(value, torch.Tensor) for value in pt.values())
    assert all(isinstance(value, np.ndarray) for value in np_batch.values())
    assert all(isinstance(value, list) for value in lists.values())
    _equal_batches(pt, np_batch)
    _equal_batches(pt, lists)
    with pytest.raises(ValueError, match="not a valid TensorType"):
        processor(text=texts, task="TTS", return_tensors="tf")


def test_processor_padding_side(processor):
    texts = ["hello world", "the dog"]
    left, right = processor(text=texts, task="TTS"), processor(text=texts, task="TTS", padding_side="right")
    assert left["attention_mask"][1, 0] == 0 and left["attention_mask"][1, -1] == 1
    assert right["attention_mask"][1, 0] == 1 and right["attention_mask"][1, -1] == 0
    short = right["attention_mask"][1].bool()
    assert torch.equal(left["input_ids"][1, left["attention_mask"][1].bool()], right["input_ids"][1, short])
    codes = [_codes(3), _codes(5)]
    train = processor(text=["hello", "a dog"], audio_codes=codes, task="TTS", output_labels=True)
    train_left = processor(text=["hello", "a dog"], audio_codes=codes, task="TTS", output_labels=True,
                           text_kwargs={"padding_side": "left"})
    assert train["attention_mask"][0, -1] == 0 and train_left["attention_mask"][0, 0] == 0
    mask, mask_left = train["attention_mask"][0].bool(), train_left["attention_mask"][0].bool()
    assert torch.equal(train["audio_labels"][0, mask], train_left["audio_labels"][0, mask_left])
    with pytest.raises(ValueError, match="padding_side"):
        processor(text=texts, task="TTS", padding_side="middle")


def test_processor_max_length_and_padding(processor):
    texts = ["hello world", "the dog"]
    lengths = processor(text=texts, task="TTS")["attention_mask"].sum(-1).tolist()
    with pytest.raises(ValueError, match=rf"needs {max(lengths)} rows, more than max_length={max(lengths) - 1}"):
        processor(text=texts, task="TTS", max_length=max(lengths) - 1)
    padded = processor(text=texts, task="TTS", padding="max_length", max_length=48)
    assert padded["input_ids"].shape == (2, 48) and padded["attention_mask"].sum(-1).tolist() == lengths
    assert (padded["input_ids"][padded["attention_mask"] == 0] == processor.special_ids().text_pad_token_id).all()
    multiple = processor(text=texts, task="TTS", pad_to_multiple_of=16)
    assert multiple["input_ids"].shape[1] == -(-max(lengths) // 16) * 16
    ragged = processor(text=texts, task="TTS", padding=False, return_tensors=None)
    assert [len(ids) for ids in ragged["input_ids"]] == lengths and all(all(m) for m in ragged["attention_mask"])
    with pytest.raises(ValueError, match="padding=False"):
        processor(text=texts, task="TTS", padding=False)
    assert "attention_mask" not in processor(text=texts, task="TTS", return_attention_mask=False)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="max_length"):
            processor(text=texts, task="TTS", max_length=bad)


def test_processor_documented_departures(processor):
    doc = type(processor).__call__.__doc__
    for phrase in ("without `sampling_rate` raises", "`truncation` other than `False` raises", "per-token outputs"):
        assert phrase in " ".join(doc.split()), phrase
    # No guessed sampling rate (library feature extractors warn and assume their own).
    with pytest.raises(ValueError, match="sampling_rate"):
        processor(audio=_tone(0.2))
    # No truncation: it would cut the task prompt or the target.
    with pytest.raises(ValueError, match="truncation"):
        processor(text="hello", task="TTS", truncation=True, max_length=4)
    assert processor(text="hello", task="TTS", truncation=False)["input_ids"].shape[0] == 1
    # A grid has no per-token outputs.
    with pytest.raises(ValueError, match="per-token outputs"):
        processor(text="hello", task="TTS", return_offsets_mapping=True)
    # The grid is padded by the processor's rule, not by the tokenizer's padding settings.
    tokenizer_side = processor.tokenizer.padding_side
    try:
        processor.tokenizer.padding_side = "left"
        processor.tokenizer.init_kwargs["padding_side"] = "left"
        train = processor(text=["hello", "a dog"], audio_codes=[_codes(3), _codes(5)], task="TTS", output_labels=True)
        assert train["attention_mask"][0, -1] == 0
    finally:
        processor.tokenizer.padding_side = tokenizer_side
        processor.tokenizer.init_kwargs.pop("padding_side")


def test_processor_decode_defaults_are_the_tokenizer_s(processor):
    ids = processor(text="hello world", task="TTS")["input_ids"]
    assert processor.batch_decode(ids) == processor.tokenizer.batch_decode(ids)  # special tokens kept, as there
    skipped = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert processor.batch_decode(ids, skip_special_tokens=True) == skipped
    assert processor.batch_decode(ids, prompt_length=3) == processor.tokenizer.batch_decode(ids[:, 3:])
    assert processor.decode(ids[0]) == processor.tokenizer.decode(ids[0])


def test_processor_save_load_keeps_its_kwargs(processor, tmp_path):
    from uniaudio2.processing_uniaudio2 import UniAudio2Processor

    custom = UniAudio2Processor(processor.feature_extractor, processor.tokenizer,
                                audio_special_ids=processor.audio_special_ids, max_length=64)
    custom.save_pretrained(tmp_path)
    loaded = UniAudio2Processor.from_pretrained(tmp_path, trust_remote_code=True)
    # (`save_pretrained` of a remote-code processor records `auto_map` on the saved instance; loading drops it.)
    saved = {key: value for key, value in custom.to_dict().items() if key != "auto_map"}
    assert loaded.to_dict() == saved and loaded.max_length == 64
    assert loaded(text="hello", task="TTS", padding="max_length")["input_ids"].shape == (1, 64)
    batch = loaded(text="hello", audio_codes=[_codes()], task="TTS")
    assert list(batch) == loaded.model_input_names
    labelled = loaded(text="hello", audio_codes=[_codes()], task="TTS", output_labels=True)
    assert set(loaded.model_input_names) < set(labelled)
