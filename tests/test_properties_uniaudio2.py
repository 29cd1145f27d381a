"""
Property-based tests (hypothesis) of the feature extractor and the processor on the shipped tiny bundle: arbitrary
dtypes, shapes, sampling rates, lengths, values, codes and texts give the documented output or a `ValueError` whose
message names a problem the input really has; never another exception, never a silently shortened output.

Each property derives the problems of an input from the documented rules (class docstrings) independently of the
code under test; the `@example`s are the inputs that broke these rules before they were fixed.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import REPO_ROOT


BUNDLE = REPO_ROOT / "pretrained" / "tiny-uniaudio2"
FAST = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.too_slow])

SUPPORTED_DTYPES = {np.dtype(name) for name in ("float16", "float32", "float64", "int8", "int16", "int32", "uint8")}
DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.bool_,
          np.complex64, np.complex128, object]
RATES = st.one_of(
    st.none(), st.just(0), st.booleans(), st.integers(-48000, -1), st.floats(allow_nan=True),
    st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]), st.integers(1, 10**7), st.just(np.int64(16000)),
)


@pytest.fixture(scope="module")
def feature_extractor():
    from uniaudio2.feature_extraction_uniaudio2 import UniAudio2FeatureExtractor

    return UniAudio2FeatureExtractor.from_pretrained(BUNDLE)


@pytest.fixture(scope="module")
def processor(feature_extractor):
    from uniaudio2.processing_uniaudio2 import UniAudio2Processor

    return UniAudio2Processor.from_pretrained(BUNDLE, trust_remote_code=True, feature_extractor=feature_extractor)


# ---------------------------------------------------------------------------------------------------- strategies
def _elements(dtype):
    dtype = np.dtype(dtype)
    if dtype == object:
        return st.one_of(st.none(), st.floats(-1, 1), st.text(max_size=2))
    if dtype.kind == "f":
        # mostly valid samples, sometimes NaN / inf / out of range / huge (the width keeps values representable)
        return st.one_of(st.floats(-1, 1, width=dtype.itemsize * 8),
                         st.floats(allow_nan=True, allow_infinity=True, width=dtype.itemsize * 8))
    return None  # hypothesis' default for the dtype: its whole range


@st.composite
def shapes(draw):
    samples = draw(st.one_of(st.integers(0, 3), st.integers(4, 4000)))
    channels = draw(st.integers(0, 10))
    return draw(st.sampled_from([(), (samples,), (channels, samples), (samples, channels), (channels, 2, samples)]))


@st.composite
def clips(draw):
    """`(user_input, as_array)`: a clip as the user passes it (array, tensor, list) and the array it stands for."""
    dtype = draw(st.sampled_from(DTYPES))
    array = draw(hnp.arrays(dtype, draw(shapes()), elements=_elements(dtype)))
    container = draw(st.sampled_from(["numpy", "torch", "list", "bfloat16"]))
    if container == "torch" and array.dtype not in (np.dtype(object), np.dtype(np.uint16)):
        return torch.from_numpy(array.copy()), array
    if container == "bfloat16" and array.dtype.kind == "f":
        tensor = torch.from_numpy(array.astype(np.float32)).bfloat16()
        return tensor, tensor.float().numpy()
    if container == "list" and array.ndim <= 1:  # a list of lists is a batch of clips, not channels
        value = array.tolist()
        return value, (np.asarray(value) if isinstance(value, list) else value)
    return array, array


def audio_problems(array, rate, max_duration=600.0, target_rate=24000):
    """Keywords of the documented problems of one clip (empty: the clip is valid)."""
    found = []
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        found.append("sampling_rate")
    if not isinstance(array, np.ndarray):
        return found + ["numpy array"]
    if array.dtype not in SUPPORTED_DTYPES:
        return found + ["dtype"]
    if array.ndim not in (1, 2):
        return found + ["1-D"]
    if array.size == 0:
        return found + ["empty"]
    if array.ndim == 2 and min(array.shape) > 8:
        found.append("channel axis")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            found.append("NaN or infinite")
        elif np.abs(array.astype(np.float64)).max() > 1.001:
            found.append("[-1, 1]")
    if not found or found == ["channel axis"]:
        samples = max(array.shape)
        if samples / rate > max_duration:
            found.append("max_duration")
        if round(samples * target_rate / rate) == 0:
            found.append("shorter than one sample")
    return found


def assert_names_a_problem(error, problems):
    assert problems, f"valid input rejected: {error}"
    assert any(problem.lower() in str(error).lower() for problem in problems), (str(error), problems)


# ------------------------------------------------------------------------------------------ feature extractor audio
@FAST
@given(clip=clips(), rate=RATES)
@example(clip=(torch.zeros(100, dtype=torch.bfloat16), np.zeros(100, np.float32)), rate=24000)  # was a TypeError
@example(clip=(np.zeros(2400, np.float32),) * 2, rate=10**12)  # was an empty (1, 1, 0) output
@example(clip=(np.zeros((0, 5), np.float32),) * 2, rate=24000)  # was reported as "NaN or infinite"
@example(clip=(np.full(10, 1e300),) * 2, rate=24000)  # was reported as "infinite" (float32 overflow)
def test_feature_extractor_gives_documented_output_or_names_the_problem(feature_extractor, clip, rate):
    audio, array = clip
    problems = audio_problems(array, rate)
    try:
        features = feature_extractor(audio, sampling_rate=rate)
    except ValueError as error:
        assert_names_a_problem(error, problems)
        return
    assert not problems, f"accepted despite {problems}"
    values, mask = features["input_values"], features["padding_mask"]
    samples = max(array.shape)
    expected = samples * 24000 / rate
    assert values.dtype == torch.float32 and mask.dtype == torch.int64
    assert values.shape[:2] == (1, 1) and mask.shape == (1, values.shape[-1])
    assert abs(values.shape[-1] - expected) <= 1, (values.shape, expected)  # resampled, nothing cut
    assert bool(mask.all()) and bool(torch.isfinite(values).all())
    if rate == 24000 and array.ndim == 1 and array.dtype.kind == "f":
        np.testing.assert_array_equal(values[0, 0].numpy(), array.astype(np.float32))


@pytest.mark.parametrize(
    "audio, message",
    [
        ([np.zeros(10, np.float32), 0.5], "ragged or mixed list"),  # numpy's "inhomogeneous shape" message before
        ([[[0.1, 0.2], [0.1]]], "ragged or mixed list"),
        ({"array": np.zeros(10), "sampling_rate": 24000}, "numpy array"),
        ([], "empty"),
    ],
)
def test_feature_extractor_container_errors(feature_extractor, audio, message):
    with pytest.raises(ValueError, match=message):
        feature_extractor(audio, sampling_rate=24000)


@FEW
@given(
    lengths=st.lists(st.integers(1, 4800), min_size=1, max_size=3),
    rate=st.sampled_from([8000, 16000, 24000, 48000]),
    seed=st.integers(0, 2**16),
)
def test_encode_gives_codes_covering_the_whole_clip(feature_extractor, lengths, rate, seed):
    generator = np.random.default_rng(seed)
    clips = [(0.5 * generator.uniform(-1, 1, n)).astype(np.float32) for n in lengths]
    if any(round(n * 24000 / rate) == 0 for n in lengths):
        with pytest.raises(ValueError, match="shorter than one sample"):
            feature_extractor.encode(clips, sampling_rate=rate)
        return
    pairs = feature_extractor.encode(clips, sampling_rate=rate)
    assert len(pairs) == len(clips)
    for n, (reasoning, reconstruction) in zip(lengths, pairs):
        seconds = n / rate
        assert reasoning.dtype == reconstruction.dtype == torch.long
        assert reasoning.shape[0] == reconstruction.shape[0] == 8
        # 5 Hz reasoning and 12.5 Hz reconstruction frames cover the clip: nothing is dropped at the end
        assert reasoning.shape[1] >= max(1, seconds * 5) and reconstruction.shape[1] >= max(1, seconds * 12.5)
        assert 0 <= int(reasoning.min()) and int(reasoning.max()) < 256
        assert 0 <= int(reconstruction.min()) and int(reconstruction.max()) < 256


# ------------------------------------------------------------------------------------------------------ codes
def code_arrays(max_frames=3):
    dtype = st.sampled_from([np.int64, np.int16, np.uint8, np.float32, np.bool_])
    shape = st.sampled_from([(8,), (7, 2), (9, 2), (8, 0)]) | st.tuples(st.just(8), st.integers(1, max_frames))
    return hnp.arrays(dtype, shape) | hnp.arrays(
        np.int64, st.tuples(st.just(8), st.integers(1, max_frames)), elements=st.integers(-3, 300)
    ) | hnp.arrays(np.int64, st.tuples(st.just(8), st.integers(1, max_frames)), elements=st.integers(0, 255))


def code_problems(array, size=256, num_codebooks=8):
    if array.dtype.kind not in "iu":
        return ["integers"]
    if array.ndim != 2 or array.shape[0] != num_codebooks or array.shape[1] == 0:
        return ["shape"]
    if array.min() < 0 or array.max() >= size:
        return ["[0, 255]"]
    return []


@FEW
@given(codes=code_arrays(), as_list=st.booleans())
@example(codes=np.full((8, 3), 0.5, np.float32), as_list=False)  # was truncated to code 0 silently
@example(codes=np.zeros((8, 2), np.int64), as_list=True)
def test_decode_gives_waveforms_or_names_the_problem(feature_extractor, codes, as_list):
    problems = code_problems(codes)
    try:
        waveforms = feature_extractor.decode([codes.tolist() if as_list else torch.from_numpy(codes)])
    except ValueError as error:
        assert_names_a_problem(error, problems)
        return
    assert not problems, f"accepted despite {problems}"
    assert len(waveforms) == 1 and waveforms[0].dtype == np.float32 and waveforms[0].ndim == 1
    assert waveforms[0].shape[0] == codes.shape[1] * 1920  # 12.5 Hz frames at 24 kHz


@pytest.mark.parametrize(
    "codes, message",
    [
        (["ab"], "integer"),  # was a TypeError
        (torch.zeros((8, 3), dtype=torch.long), "list of"),  # one clip not in a list: iterated row by row before
        (5, "list of"),
    ],
)
def test_decode_container_errors(feature_extractor, codes, message):
    with pytest.raises(ValueError, match=message):
        feature_extractor.decode(codes)


@FAST
@given(reasoning=code_arrays(), reconstruction=code_arrays(), wrap=st.sampled_from(["list", "bare", "np"]))
@example(reasoning=np.full((8, 2), -1), reconstruction=np.full((8, 3), -1), wrap="list")  # was accepted
@example(reasoning=np.full((8, 2), 999), reconstruction=np.zeros((8, 3), np.int64), wrap="list")  # was accepted
@example(reasoning=np.zeros((8, 2), np.int64), reconstruction=np.full((8, 3), 0.5, np.float32), wrap="list")
@example(reasoning=np.zeros((8, 2), np.int64), reconstruction=np.zeros((8, 3), np.int64), wrap="bare")
def test_processor_audio_codes_build_a_grid_or_name_the_problem(processor, reasoning, reconstruction, wrap):
    pair = (torch.from_numpy(reasoning.copy()), torch.from_numpy(reconstruction.copy()))
    audio_codes = {"list": [pair], "bare": pair, "np": [(reasoning, reconstruction)]}[wrap]
    problems = code_problems(reasoning) + code_problems(reconstruction) + (["pair per example"] if wrap == "bare" else [])
    try:
        batch = processor(audio_codes=audio_codes, task="ASR")
    except ValueError as error:
        assert_names_a_problem(error, problems)
        return
    assert not problems, f"accepted despite {problems}"
    mask = batch["audio_codes_mask"][0]
    assert int(mask.sum()) == reasoning.shape[1] + reconstruction.shape[1] + 4  # both segments whole, with BOS/EOS
    rows = batch["audio_codes"][0][mask]
    torch.testing.assert_close(rows[1 : 1 + reasoning.shape[1]], torch.from_numpy(reasoning.T.astype(np.int64)))


@FAST
@given(
    sequence=st.lists(st.integers(-5, 600), max_size=6)
    | st.lists(st.floats(0, 10), min_size=1, max_size=3)
)
@example(sequence=[-1, 5])  # was an OverflowError from the tokenizer
@example(sequence=[10**9])  # was decoded silently to an empty string
def test_processor_batch_decode_gives_text_or_names_the_id(processor, sequence):
    vocab = len(processor.tokenizer)
    bad = [value for value in sequence if not isinstance(value, int) or not 0 <= value < vocab]
    try:
        texts = processor.batch_decode([sequence])
    except ValueError as error:
        assert bad and ("integers" in str(error) or any(str(value) in str(error) for value in bad)), str(error)
        return
    assert not bad and isinstance(texts, list) and isinstance(texts[0], str)
    assert processor.decode(sequence) == texts[0]


# ------------------------------------------------------------------------------------------------------- texts
SPECIAL_STRINGS = st.sampled_from(["<|begin_of_text|>", "<|end_of_text|>", "<text_pad_token>", "<transcription>",
                                   "</caption>", "<|end_of_text|>hello<|begin_of_text|>"])
TEXTS = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from(" \t\n\u3000\u200b"), max_size=5),
    SPECIAL_STRINGS,
    st.builds(lambda word, n: (word + " ") * n, st.sampled_from(["hello", "ünïcødé", "日本語"]), st.integers(1, 1500)),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),  # lone surrogates
    st.none(), st.integers(), st.binary(max_size=4), st.lists(st.integers(), min_size=1, max_size=2),
)


def text_problems(text, tokenizer, max_length):
    """`(problems, maybe_too_long)`: the text's problems, and whether its prompt and tags may push it over."""
    if not isinstance(text, str):
        return ["must be a string"], False
    if not text.strip():
        return ["non-empty string"], False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ["not valid unicode"], False
    tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return (["max_length"] if tokens > max_length else []), tokens > max_length - 100


@pytest.mark.xfail(strict=False, reason="issue 29, open: expectations for training-only tasks (text_only/audio_only) not yet aligned with the processor")
@FAST
@given(texts=st.lists(TEXTS, min_size=1, max_size=3), task=st.sampled_from(["TTS", "TTA", "TTM", "text_only"]),
       batched=st.booleans(), split=st.booleans())
@example(texts=[5], task="TTS", batched=False, split=False)  # was a TypeError
@example(texts=["\ud800"], task="TTS", batched=False, split=False)  # was a TypeError from the tokenizer
@example(texts=["hi"], task="text_only", batched=False, split=False)  # was "torch.cat(): expected a non-empty list"
def test_processor_texts_build_whole_grids_or_name_the_problem(processor, texts, task, batched, split):
    text = texts if batched else texts[0]
    found = [text_problems(item, processor.tokenizer, processor.max_length) for item in texts]
    problems = sorted({problem for item_problems, _ in found for problem in item_problems})
    # the prompt, tags and BOS/EOS take up to 100 rows: near the limit, an error naming max_length is right too
    allowed = problems + (["max_length"] if any(maybe_too_long for _, maybe_too_long in found) else [])
    try:
        batch = processor(text=text, task=task, split_special_tokens=split)
    except ValueError as error:
        assert_names_a_problem(error, allowed)
        return
    assert not problems, f"accepted despite {problems}"
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    assert input_ids.dtype == torch.long and input_ids.shape[0] == (len(texts) if batched else 1)
    assert batch["audio_codes"].shape == (*input_ids.shape, 8) and mask.shape == input_ids.shape
    assert input_ids.shape[1] <= processor.max_length
    for row, item in enumerate(texts if batched else [text]):
        tokens = processor.tokenizer(item, add_special_tokens=False, split_special_tokens=split)["input_ids"]
        ids = input_ids[row][mask[row].bool()].tolist()
        assert any(ids[i : i + len(tokens)] == tokens for i in range(len(ids))), "the text was cut or altered"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text": "hi", "task": None}, "task"),  # was an AttributeError
        ({"text": "hi", "task": "TTS", "prompt": 3}, "prompt"),  # was a TypeError
        ({"text": ["hi", "ho"], "task": "TTS", "drop_condition": [True]}, "drop_condition"),  # was an IndexError
        ({"audio": np.zeros(2400, np.float32), "task": "ASR", "sampling_rate": 24000.5}, "sampling_rate"),
        ({"text": "hi", "task": "InstructTTS", "instruction": [1]}, "instruction"),
    ],
)
def test_processor_argument_errors(processor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        processor(**kwargs)


@pytest.mark.xfail(strict=False, reason="issue 29, open: expectations for training-only tasks (text_only/audio_only) not yet aligned with the processor")
@FEW
@given(clip=clips(), rate=RATES)
@example(clip=(np.zeros(1, np.float32),) * 2, rate=48000)
def test_processor_audio_builds_a_grid_or_names_the_problem(processor, clip, rate):
    audio, array = clip
    problems = audio_problems(array, rate)
    if isinstance(rate, bool) or (rate is not None and not isinstance(rate, (int, np.integer))):
        problems.append("sampling_rate")  # the typed `AudioKwargs` check
    try:
        batch = processor(audio=audio, sampling_rate=rate, task="ASR")
    except ValueError as error:
        assert_names_a_problem(error, problems)
        return
    assert not problems, f"accepted despite {problems}"
    assert batch["input_ids"].shape[0] == 1 and int(batch["audio_codes_mask"].sum()) >= 6
