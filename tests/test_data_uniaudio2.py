"""Multi-task data with 🤗 Datasets: grid features, condition dropout, packing, auditory sentences, caching, streaming."""

import datasets
import numpy as np
import pytest
import torch

from conftest import StandInAudioEncoder, tiny_uniaudio2_config
from uniaudio2.data_uniaudio2 import (
    CFG_DROPOUT_RATE,
    NO_CFG_GROUP,
    UniAudio2DataCollator,
    apply_condition_dropout,
    build_auditory_sentences,
    encode_grids,
    examples_to_dataset,
    grid_features,
    pack_grids,
    special_ids_from_tokenizer,
    synthetic_examples,
    synthetic_special_ids,
    tokenize_audio_dataset,
    tokenize_text_dataset,
)
from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration
from uniaudio2.tasks_uniaudio2 import TASKS, build_grid, collate_grids


datasets.disable_progress_bars()


def _ids():
    return synthetic_special_ids(tiny_uniaudio2_config(), audio_prompt_bos_token_id=14, audio_prompt_eos_token_id=11)


def _segments_for_build_grid(task, row):
    return {key: (torch.tensor(row[key]).T if kind != "text" else torch.tensor(row[key])) for key, kind in task.segments}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_sequence_and_loss_mask(name):
    task, ids = TASKS[name], _ids()
    row = synthetic_examples(tiny_uniaudio2_config(), ids, 1, tasks=(name,), seed=3)[0]
    features = grid_features(name, row, ids, row["prompt_ids"] or None)
    batch = UniAudio2DataCollator(ids, cfg_dropout_rate=0.0)([features])
    # Same tensors as the reference-checked grid builder + collate of `tasks_uniaudio2`.
    grid = build_grid(task, _segments_for_build_grid(task, row), ids,
                      prompt_ids=torch.tensor(row["prompt_ids"]) if task.use_prompt else None)
    expected = collate_grids([grid], ids)
    assert set(batch) == set(expected)
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key
    # The loss covers exactly the rows of the loss keys: text column for text targets, all codebooks for audio ones.
    text_rows, audio_rows = set(), set()
    for key, start, end in grid.segments:
        if key in task.loss_keys:
            (audio_rows if grid.audio_rows[start].item() else text_rows).update(range(start, end))
            if grid.audio_rows[start].item():
                assert torch.equal(batch["audio_labels"][0, start:end], batch["audio_codes"][0, start:end])
            else:
                assert torch.equal(batch["labels"][0, start:end], batch["input_ids"][0, start:end])
    assert set((batch["labels"][0] != -100).nonzero().flatten().tolist()) == text_rows
    assert set((batch["audio_labels"][0] != -100).all(-1).nonzero().flatten().tolist()) == audio_rows
    assert ((batch["audio_labels"][0] != -100).any(-1) == (batch["audio_labels"][0] != -100).all(-1)).all()
    assert (text_rows or audio_rows) and not text_rows & audio_rows
    assert features["length"] == len(grid) and features["position_ids"] == list(range(len(grid)))
    # Only generation tasks have droppable condition rows, and never on the loss rows.
    droppable = {i for i, group in enumerate(features["cfg_group"]) if group != NO_CFG_GROUP}
    assert bool(droppable) == task.generation_task
    assert not droppable & (text_rows | audio_rows)


@pytest.mark.parametrize("name", ["TTS", "InstructTTS", "TTA", "TTM", "LTS"])
def test_condition_dropout_equals_the_grid_builder(name):
    task, ids = TASKS[name], _ids()
    row = synthetic_examples(tiny_uniaudio2_config(), ids, 1, tasks=(name,), seed=5)[0]
    features = grid_features(name, row, ids, row["prompt_ids"])
    dropped = apply_condition_dropout(features, [0])
    grid = build_grid(task, _segments_for_build_grid(task, row), ids, prompt_ids=torch.tensor(row["prompt_ids"]),
                      drop_condition=True)
    assert dropped["input_ids"] == grid.input_ids.tolist()
    assert dropped["audio_codes"] == grid.audio_codes.tolist()
    assert dropped["input_ids"] != features["input_ids"]
    assert apply_condition_dropout(features, []) is features


def test_condition_dropout_rate_is_the_reference_rate_and_only_hits_generation_tasks():
    ids = _ids()
    rows = synthetic_examples(tiny_uniaudio2_config(), ids, 2, tasks=("TTS", "ASR"), seed=0)
    tts, asr = (grid_features(r["task"], r, ids, r["prompt_ids"]) for r in rows)
    condition = [i for i, group in enumerate(tts["cfg_group"]) if group == 0]
    collator = UniAudio2DataCollator(ids, seed=1234)
    reference = UniAudio2DataCollator(ids, cfg_dropout_rate=0.0)([tts])
    assert collator.cfg_dropout_rate == CFG_DROPOUT_RATE == 0.1
    draws, dropped = 4000, 0
    for _ in range(draws // 50):
        batch = collator([tts] * 25 + [asr] * 25)
        prompt_is_pad = batch["input_ids"][:25, condition] == ids.text_pad_token_id
        # The whole condition is dropped or none of it.
        assert (prompt_is_pad.all(1) | ~prompt_is_pad.any(1)).all()
        dropped += int(prompt_is_pad.all(1).sum())
        # Targets are never touched and understanding examples never dropped.
        assert (batch["audio_labels"][:25, : tts["length"]] == reference["audio_labels"]).all()
        assert (batch["input_ids"][25:, : len(asr["input_ids"])] == torch.tensor(asr["input_ids"])).all()
    rate = dropped / (draws / 2)
    # 2000 Bernoulli(0.1) draws: standard deviation 0.0067; allow 4 of them.
    assert abs(rate - 0.1) < 0.027, rate
    # Reproducible from the seed, different for another seed.
    first = UniAudio2DataCollator(ids, seed=7)([tts] * 64)["input_ids"]
    assert torch.equal(first, UniAudio2DataCollator(ids, seed=7)([tts] * 64)["input_ids"])
    assert not torch.equal(first, UniAudio2DataCollator(ids, seed=8)([tts] * 64)["input_ids"])
    off = UniAudio2DataCollator(ids, cfg_dropout_rate=0.0)([tts] * 64)["input_ids"]
    assert (off[:, condition] != ids.text_pad_token_id).any(1).all()


def _grids(num_examples=40, num_groups=5, tasks=("ASR", "TTS", "audio_only", "text_only", "audio_understanding")):
    ids = _ids()
    rows = synthetic_examples(tiny_uniaudio2_config(), ids, num_examples, tasks=tasks, seed=1, num_groups=num_groups)
    return encode_grids(examples_to_dataset(rows), ids), ids


@pytest.mark.parametrize("max_length", [45, 120, 400])
def test_auditory_sentences_respect_the_context_length_and_chain_related_segments(max_length):
    grids, _ = _grids()
    originals = [grids[i] for i in range(len(grids))]
    sentences = build_auditory_sentences(grids, max_length, keep_remainder=True, seed=0)
    assert all(length <= max_length for length in sentences["length"])
    assert all(1 <= n <= 8 for n in sentences["num_segments"])
    # Every sentence is a run of consecutive examples of one group, in order (examples longer than the context are
    # dropped), with positions running through the sentence and no condition dropout.
    fitting = [g for g in originals if g["length"] <= max_length]
    position = 0
    for sentence in sentences:
        parts = fitting[position : position + sentence["num_segments"]]
        position += sentence["num_segments"]
        assert len({p["group"] for p in parts}) == 1
        for name in ("input_ids", "audio_codes", "audio_codes_mask", "text_loss_mask", "audio_loss_mask"):
            assert sentence[name] == [value for p in parts for value in p[name]], name
        assert sentence["position_ids"] == list(range(sentence["length"]))
        assert set(sentence["cfg_group"]) == {NO_CFG_GROUP}
    assert position == len(fitting)
    if max_length == 400:
        assert max(sentences["num_segments"]) >= 4 and max(sentences["length"]) > 100
    # Without the remainder every sentence has 2 to 8 segments.
    strict = build_auditory_sentences(grids, max_length, seed=0)
    assert all(2 <= n <= 8 for n in strict["num_segments"]) and all(n <= max_length for n in strict["length"])
    assert len(strict) > 0


def test_auditory_sentence_segment_counts_vary_between_two_and_eight():
    grids, _ = _grids(num_examples=64, num_groups=1, tasks=("text_only",))
    sentences = build_auditory_sentences(grids, 10_000, seed=0)
    counts = set(sentences["num_segments"])
    assert counts <= set(range(2, 9)) and len(counts) >= 3


def test_packing_keeps_examples_independent():
    grids, ids = _grids(num_examples=10)
    packed = pack_grids(grids, 128)
    assert all(length <= 128 for length in packed["length"]) and sum(packed["length"]) == sum(grids["length"])
    assert sum(packed["num_segments"]) == len(grids) and max(packed["num_segments"]) > 1
    collator = UniAudio2DataCollator(ids, cfg_dropout_rate=0.0)
    torch.manual_seed(0)
    model = UniAudio2ForConditionalGeneration(tiny_uniaudio2_config()).eval()
    row = max(range(len(packed)), key=lambda i: packed[i]["num_segments"])
    batch = collator([packed[row]])
    assert "attention_mask" not in batch and batch["use_cache"] is False
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if "labels" not in k}).logits[0]
    starts = [i for i, p in enumerate(packed[row]["position_ids"]) if p == 0]
    bounds = starts[1:] + [packed[row]["length"]]
    assert len(starts) == packed[row]["num_segments"] > 1
    assert packed[row]["input_ids"][: bounds[0]] in grids["input_ids"]
    for start, end in zip(starts, bounds):
        single = collator([{**grids[0], **{k: packed[row][k][start:end] for k in ("input_ids", "audio_codes", "audio_codes_mask", "text_loss_mask", "audio_loss_mask", "cfg_group", "cfg_pad", "position_ids")}}])
        with torch.no_grad():
            expected = model(**{k: v for k, v in single.items() if "labels" not in k}).logits[0]
        torch.testing.assert_close(logits[start:end], expected, rtol=1e-5, atol=1e-5)
        # No loss on the first row of a packed example (it would be predicted from the previous example).
        assert batch["labels"][0, start] == -100 and (batch["audio_labels"][0, start] == -100).all()


def test_audio_codes_are_encoded_once_and_cached(tmp_path):
    rows = {
        "task": ["ASR", "ASR", "TTS"],
        "audio": [{"array": [0.1 * i] * (8000 + 4000 * i), "sampling_rate": 16000} for i in range(3)],
        "transcription_seq": [[80, 1, 2, 81], [80, 3, 81], [80, 4, 5, 6, 81]],
    }
    dataset = datasets.Dataset.from_dict(rows)
    cache = str(tmp_path / "codes.arrow")
    encoder = StandInAudioEncoder()
    encoded = tokenize_audio_dataset(dataset, encoder, cache_file_name=cache)
    assert encoder.calls == 3 and "audio" not in encoded.column_names
    for i, seconds in enumerate([0.5, 0.75, 1.0]):
        assert torch.tensor(encoded[i]["reason_seq"]).shape == (8, int(seconds * 5) + 1)
        assert torch.tensor(encoded[i]["semantic_seq"]).shape == (8, int(seconds * 12.5) + 1)
    again = StandInAudioEncoder()
    reloaded = tokenize_audio_dataset(dataset, again, cache_file_name=cache)
    assert again.calls == 0, "the cached codes must be reused"
    assert reloaded["reason_seq"] == encoded["reason_seq"] and reloaded["semantic_seq"] == encoded["semantic_seq"]
    grids = encode_grids(encoded, _ids(), prompt_ids={"ASR": [80, 1, 81], "TTS": [[80, 2, 81], [80, 3, 3, 81]]})
    assert grids[0]["task"] == "ASR" and any(grids[2]["audio_loss_mask"])


def _tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    words = ["hello", "world", "text", "to", "speech", "recognition", "a", "dog", "barks"]
    vocab = {word: i for i, word in enumerate(words)}
    vocab.update({"[UNK]": 79, "<|begin_of_text|>": 80, "<|end_of_text|>": 81})
    tags = ["<transcription>", "</transcription>", "<caption>", "</caption>", "<lyric>", "</lyric>"]
    vocab.update({tag: 90 + i for i, tag in enumerate(tags)})
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", bos_token="<|begin_of_text|>",
                                        eos_token="<|end_of_text|>")
    tokenizer.add_special_tokens({"additional_special_tokens": tags})
    return tokenizer


def test_raw_rows_to_a_training_batch_with_a_tokenizer_and_the_codec_stand_in():
    config = tiny_uniaudio2_config()
    tokenizer = _tokenizer()
    ids = special_ids_from_tokenizer(config, tokenizer)
    assert ids.tag_ids["<transcription>"] == 90 and ids.tag_ids["</caption>"] == 93
    raw = datasets.Dataset.from_dict({
        "task": ["ASR", "TTS", "TTA"],
        "audio": [{"array": [0.2] * 12000, "sampling_rate": 24000}] * 3,
        "transcription_seq": ["hello world", "text to speech", None],
        "caption_seq": [None, None, "a dog barks"],
    })
    rows = tokenize_text_dataset(tokenize_audio_dataset(raw, StandInAudioEncoder()), tokenizer, ids)
    assert rows[0]["transcription_seq"] == [80, 0, 1, 81]
    assert rows[0]["prompt_ids"] == [80, 4, 5, 81]  # "speech recognition\n\n"
    assert rows[1]["prompt_ids"] == [80, 2, 3, 4, 81]  # "text to speech\n\n"
    grids = encode_grids(rows, ids)
    batch = UniAudio2DataCollator(ids, cfg_dropout_rate=0.0)([grids[i] for i in range(3)])
    asr_text = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert asr_text == [90, 80, 0, 1, 81, 91]
    caption_rows = batch["input_ids"][2].tolist()
    start = caption_rows.index(92)
    assert caption_rows[start : start + 7] == [92, 80, 6, 7, 8, 81, 93]
    assert batch["audio_codes_mask"][2, start + 7] and not batch["audio_codes_mask"][2, :start + 7].any()
    model = UniAudio2ForConditionalGeneration(config)
    loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_text_columns_of_mixed_task_rows_are_tokenised_in_every_writer_batch():
    # A writer batch holding only ASR rows (caption_seq None) must not fix the caption column's type to string.
    config = tiny_uniaudio2_config()
    tokenizer = _tokenizer()
    ids = special_ids_from_tokenizer(config, tokenizer)
    raw = datasets.Dataset.from_dict({
        "task": ["ASR", "ASR", "TTA"],
        "transcription_seq": ["hello world", "text to speech", None],
        "caption_seq": [None, None, "a dog barks"],
    })
    rows = tokenize_text_dataset(raw, tokenizer, ids, writer_batch_size=2)
    assert rows[2]["caption_seq"] == [80, 6, 7, 8, 81] and rows[0]["caption_seq"] is None
    assert rows[0]["transcription_seq"] == [80, 0, 1, 81] and rows[2]["transcription_seq"] is None


def test_streaming_pipeline_matches_the_map_style_pipeline():
    ids = _ids()
    rows = synthetic_examples(tiny_uniaudio2_config(), ids, 12, tasks=("ASR", "TTS", "speech_s2s"), seed=2, num_groups=3)
    dataset = examples_to_dataset(rows)
    for transform in (lambda d: d, lambda d: pack_grids(d, 100), lambda d: build_auditory_sentences(d, 150, seed=1)):
        in_memory = transform(encode_grids(dataset, ids))
        streamed = transform(encode_grids(dataset.to_iterable_dataset(num_shards=1), ids))
        assert isinstance(streamed, datasets.IterableDataset)
        assert [dict(row) for row in streamed] == [in_memory[i] for i in range(len(in_memory))]


def test_collator_padding_options():
    grids, ids = _grids(num_examples=3, tasks=("ASR",))
    features = [grids[i] for i in range(3)]
    right = UniAudio2DataCollator(ids, cfg_dropout_rate=0.0, pad_to_multiple_of=16)(features)
    left = UniAudio2DataCollator(ids, cfg_dropout_rate=0.0, padding_side="left")(features)
    assert right["input_ids"].shape[1] % 16 == 0
    shortest = min(range(3), key=lambda i: features[i]["length"])
    n = features[shortest]["length"]
    assert torch.equal(left["input_ids"][shortest, -n:], right["input_ids"][shortest, :n])
    assert left["attention_mask"][shortest, :-n].sum() == 0 and right["attention_mask"][shortest, n:].sum() == 0
    text_only = UniAudio2DataCollator(ids, audio_loss=False)(features)
    assert "audio_labels" not in text_only and "labels" in text_only
    with pytest.raises(ValueError, match="padding_side"):
        UniAudio2DataCollator(ids, padding_side="middle")
    with pytest.raises(ValueError, match="empty"):
        UniAudio2DataCollator(ids)([])


# ----------------------------------------------------------------------------------------------------------------------
# Packed batches: no attention across examples with eager, sdpa and (emulated) flash-attention, at any batch size
# ----------------------------------------------------------------------------------------------------------------------


def _reference_flash(query, key, value, dropout_p=0.0, softmax_scale=None, causal=False, **kwargs):
    """`flash_attn_func` in plain PyTorch: `(batch, seq, heads, head_dim)` in and out, no mask."""
    query, key, value = (x.transpose(1, 2) for x in (query, key, value))
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=causal, scale=softmax_scale)
    return out.transpose(1, 2)


_VARLEN_CALLS = []


def _reference_flash_varlen(query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                            dropout_p=0.0, softmax_scale=None, causal=False, **kwargs):
    """`flash_attn_varlen_func` in plain PyTorch: every `cu_seqlens` segment of the flat rows attends to itself only."""
    _VARLEN_CALLS.append((cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k))
    bounds = cu_seqlens_q.tolist()
    return torch.cat([
        _reference_flash(query[None, s:e], key[None, s:e], value[None, s:e], softmax_scale=softmax_scale, causal=causal)[0]
        for s, e in zip(bounds[:-1], bounds[1:])
    ])


@pytest.fixture
def reference_flash_attention(monkeypatch):
    """
    Registers `"reference_flash_attention"`: transformers' own flash-attention integration (mask function, kwargs
    handling, varlen dispatch) running on the PyTorch kernels above, since flash-attn cannot be installed on CPU.
    """
    import transformers.modeling_flash_attention_utils as flash_utils
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.flash_attention import flash_attention_forward
    from transformers.masking_utils import flash_attention_mask

    name = "reference_flash_attention"
    AttentionInterface.register(name, flash_attention_forward)
    AttentionMaskInterface.register(name, flash_attention_mask)
    for attribute, value in {
        "_loaded_implementation": name,
        "_flash_fn": _reference_flash,
        "_flash_varlen_fn": _reference_flash_varlen,
        "_flash_with_kvcache_fn": None,
        "_pad_fn": flash_utils._pad_input,
        "_unpad_fn": flash_utils._unpad_input,
        "_process_flash_kwargs_fn": flash_utils._lazy_define_process_function(_reference_flash_varlen),
        "_process_with_kvcache_kwargs_fn": dict,
    }.items():
        monkeypatch.setattr(flash_utils, attribute, value)
    _VARLEN_CALLS.clear()
    return name


def _packs(num_packs=2):
    grids, ids = _grids(num_examples=16, tasks=("ASR", "TTS", "audio_understanding", "text_only"))
    packed = pack_grids(grids, 60)
    rows = [packed[i] for i in range(len(packed)) if packed[i]["num_segments"] >= 2][:num_packs]
    assert len(rows) == num_packs
    return rows, ids


def _examples_of(row):
    """The examples packed in a row: `(start, end, features)` with the example's own positions."""
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
    keys = ("input_ids", "audio_codes", "audio_codes_mask", "text_loss_mask", "audio_loss_mask", "cfg_group", "cfg_pad",
            "position_ids")
    return [(s, e, {**row, **{k: row[k][s:e] for k in keys}, "length": e - s})
            for s, e in zip(starts, starts[1:] + [row["length"]])]


def _inputs(batch):
    return {k: v for k, v in batch.items() if "labels" not in k}


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa", "reference_flash_attention"])
def test_packed_batches_never_attend_across_examples(attn_implementation, request):
    if attn_implementation == "reference_flash_attention":
        request.getfixturevalue("reference_flash_attention")
    rows, ids = _packs()
    collator = UniAudio2DataCollator(ids, cfg_dropout_rate=0.0)
    torch.manual_seed(0)
    model = UniAudio2ForConditionalGeneration(tiny_uniaudio2_config(audio_loss_normalization="labeled_frames")).eval()
    model.set_attn_implementation(attn_implementation)
    batch = collator(rows)
    with torch.no_grad():
        packed = model(**batch, output_audio_logits=True)
    examples = [example for row in rows for _, _, example in _examples_of(row)]
    # Where each example lies in the batch (found by content, so that any layout of the batch is checked).
    segments = []
    for index, positions in enumerate(batch["position_ids"].tolist()):
        starts = [i for i, p in enumerate(positions) if p == 0]
        segments += [(index, s, e) for s, e in zip(starts, starts[1:] + [len(positions)])]
    placed = []
    for example in examples:
        while batch["input_ids"][segments[0][0], segments[0][1]:segments[0][2]].tolist() != example["input_ids"]:
            segments.pop(0)
        placed.append((segments.pop(0), example))
    frames = packed.audio_logits_positions.tolist()
    text_sum, text_count = 0.0, 0
    codebook_sums = torch.zeros(ids.num_codebooks)
    for (index, start, end), example in placed:
        alone_batch = collator([example])
        assert "attention_mask" in alone_batch  # the usual padded path
        with torch.no_grad():
            alone = model(**alone_batch, output_audio_logits=True)
        torch.testing.assert_close(packed.logits[index, start:end], alone.logits[0], rtol=1e-5, atol=1e-5)
        # Frames of this example predicted from a row of this example (not the cross-boundary one).
        selected = [i for i, (r, p) in enumerate(frames) if r == index and start <= p and p + 1 < end]
        assert [frames[i][1] - start for i in selected] == alone.audio_logits_positions[:, 1].tolist()
        torch.testing.assert_close(packed.audio_logits[selected], alone.audio_logits, rtol=1e-5, atol=1e-5)
        count = int((alone_batch["labels"][:, 1:] != -100).sum())
        text_sum, text_count = text_sum + float(alone.text_loss) * count, text_count + count
        labelled = (alone_batch["audio_labels"][:, 1:] != -100).sum((0, 1))
        codebook_sums += alone.codebook_losses * labelled
    torch.testing.assert_close(packed.text_loss, torch.tensor(text_sum / text_count), rtol=1e-5, atol=1e-6)
    labelled = (batch["audio_labels"][:, 1:] != -100).sum((0, 1))
    torch.testing.assert_close(packed.codebook_losses, codebook_sums / labelled, rtol=1e-5, atol=1e-6)
    if attn_implementation == "reference_flash_attention":
        # Every layer ran the variable-length kernel on the collator's boundaries (ints: from the kwargs, not
        # re-derived from the positions), the depth decoder (one frame per row) the plain one.
        layers = model.config.num_understanding_layers + model.config.num_backbone_layers + model.config.num_generation_layers
        assert len(_VARLEN_CALLS) == layers
        for cu_q, cu_k, max_q, max_k in _VARLEN_CALLS:
            assert cu_q is batch["cu_seq_lens_q"] and cu_k is batch["cu_seq_lens_k"]
            assert type(max_q) is int and max_q == max_k == batch["max_length_q"]


def test_packed_batch_is_one_flat_row_with_flash_attention_kwargs():
    rows, ids = _packs()
    batch = UniAudio2DataCollator(ids, cfg_dropout_rate=0.0, pad_to_multiple_of=32)(rows)
    total = sum(row["length"] for row in rows)
    padded = -(-total // 32) * 32
    assert "attention_mask" not in batch and batch["use_cache"] is False
    for key in ("input_ids", "audio_codes_mask", "position_ids", "labels"):
        assert batch[key].shape == (1, padded)
    assert batch["audio_codes"].shape == batch["audio_labels"].shape == (1, padded, ids.num_codebooks)
    # Text and codebook columns stay aligned with their rows, flattened in order.
    flat = [value for row in rows for value in row["input_ids"]]
    assert batch["input_ids"][0, :total].tolist() == flat
    assert batch["audio_codes"][0, :total].tolist() == [frame for row in rows for frame in row["audio_codes"]]
    assert batch["audio_codes_mask"][0, :total].tolist() == [bool(v) for row in rows for v in row["audio_codes_mask"]]
    starts = [i for i, p in enumerate(batch["position_ids"][0].tolist()) if p == 0]
    lengths = [e - s for s, e in zip(starts, starts[1:] + [padded])]
    assert len(starts) == sum(row["num_segments"] for row in rows) + (padded > total)
    assert batch["cu_seq_lens_q"].dtype == torch.int32 and batch["cu_seq_lens_q"].tolist() == starts + [padded]
    assert torch.equal(batch["cu_seq_lens_q"], batch["cu_seq_lens_k"])
    assert type(batch["max_length_q"]) is int and batch["max_length_q"] == batch["max_length_k"] == max(lengths)
    # The first row of every example (the boundary) and the padding rows carry no loss.
    assert (batch["labels"][0, starts] == -100).all() and (batch["audio_labels"][0, starts] == -100).all()
    assert (batch["labels"][0, total:] == -100).all() and not batch["audio_codes_mask"][0, total:].any()


def test_padding_free_flattens_unpacked_batches_and_rejects_bad_positions():
    grids, ids = _grids(num_examples=3, tasks=("ASR",))
    features = [grids[i] for i in range(3)]
    batch = UniAudio2DataCollator(ids, cfg_dropout_rate=0.0, padding_free=True)(features)
    lengths = [f["length"] for f in features]
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    assert batch["cu_seq_lens_q"].tolist() == [0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
    with pytest.raises(ValueError, match="position_ids"):
        UniAudio2DataCollator(ids, padding_free=True)([{**features[0], "position_ids": [p + 1 for p in features[0]["position_ids"]]}])


# ----------------------------------------------------------------------------------------------------------------------
# Batched pre-tokenizing with the codec
# ----------------------------------------------------------------------------------------------------------------------


# 2 s encoding windows instead of 30 s: the longer clips span two windows, and the tests run in seconds.
SHORT_WINDOW = 48240


def _clips_of_two_rates():
    generator = torch.Generator().manual_seed(0)
    seconds_and_rates = [(0.7, 24000), (2.3, 24000), (0.4, 16000), (1.3, 24000), (1.1, 16000)]
    return [{"array": (0.1 * torch.randn(int(s * rate), generator=generator)).tolist(), "sampling_rate": rate}
            for s, rate in seconds_and_rates]


class _CountingCodec:
    """A ReasoningCodecModel whose `encode` calls are counted (with the batch size of each)."""

    def __init__(self, codec):
        self.codec, self.batches = codec, []

    def __getattr__(self, name):
        return getattr(self.codec, name)

    def encode(self, input_values, **kwargs):
        self.batches.append(input_values.shape[0])
        return self.codec.encode(input_values, **kwargs)


@pytest.mark.parametrize("exact_length", [False, True])
def test_batched_pretokenizing_gives_each_clip_its_own_codes(exact_length):
    """`tokenize_audio_dataset` + `codec_encode_fn` encode each map batch as padded batches (one per sampling rate)
    with their padding masks; every clip gets exactly the codes it gets when encoded alone."""
    from test_reasoning_codec import randomize_, tiny_config

    from uniaudio2.data_uniaudio2 import codec_encode_fn
    from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel

    torch.manual_seed(0)
    codec = _CountingCodec(randomize_(ReasoningCodecModel(tiny_config(encode_window_samples=SHORT_WINDOW)).eval()))
    clips = _clips_of_two_rates()
    dataset = datasets.Dataset.from_list([{"task": "ASR", "audio": clip} for clip in clips] + [{"task": "ASR", "audio": None}])
    encode_fn = codec_encode_fn(codec, exact_length=exact_length)
    encoded = tokenize_audio_dataset(dataset, encode_fn, batch_size=len(dataset))
    assert codec.batches == [3, 2], "one padded batch per sampling rate of the map batch"
    assert encoded[-1]["reason_seq"] is None and encoded[-1]["semantic_seq"] is None
    for row, clip in zip(encoded, clips):
        values = torch.tensor(clip["array"], dtype=torch.float32)[None, None]
        alone = codec.codec.encode(values, sampling_rate=clip["sampling_rate"], resample=True, exact_length=exact_length)
        assert torch.equal(torch.tensor(row["reason_seq"]), alone.reasoning_codes[0])
        assert torch.equal(torch.tensor(row["semantic_seq"]), alone.reconstruction_codes[0])
    # The single-clip call of the same encode_fn gives the same codes as its batches.
    reasoning, reconstruction = encode_fn(clips[2]["array"], clips[2]["sampling_rate"])
    assert reasoning.tolist() == encoded[2]["reason_seq"] and reconstruction.tolist() == encoded[2]["semantic_seq"]


def test_feature_extractor_encode_fn_batches_through_the_processor_path():
    from test_reasoning_codec import randomize_, tiny_config

    from uniaudio2.data_uniaudio2 import feature_extractor_encode_fn
    from uniaudio2.feature_extraction_uniaudio2 import UniAudio2FeatureExtractor
    from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel

    torch.manual_seed(0)
    extractor = UniAudio2FeatureExtractor()
    extractor.set_codec(randomize_(ReasoningCodecModel(tiny_config(encode_window_samples=SHORT_WINDOW)).eval()))
    clips = _clips_of_two_rates()[:3]
    dataset = datasets.Dataset.from_list([{"task": "ASR", "audio": clip} for clip in clips])
    encoded = tokenize_audio_dataset(dataset, feature_extractor_encode_fn(extractor), batch_size=2)
    for row, clip in zip(encoded, clips):
        reasoning, reconstruction = extractor.encode(np.asarray(clip["array"], dtype=np.float32), clip["sampling_rate"])[0]
        assert row["reason_seq"] == reasoning.tolist() and row["semantic_seq"] == reconstruction.tolist()


def test_plain_encode_fn_is_called_clip_by_clip_in_batched_maps():
    rows = {"task": ["ASR"] * 5, "audio": [{"array": [0.05 * i] * 4000, "sampling_rate": 16000} for i in range(5)]}
    encoder = StandInAudioEncoder()
    one = tokenize_audio_dataset(datasets.Dataset.from_dict(rows), encoder, batch_size=1)
    many = tokenize_audio_dataset(datasets.Dataset.from_dict(rows), StandInAudioEncoder(), batch_size=4)
    assert encoder.calls == 5 and one["semantic_seq"] == many["semantic_seq"] and one["reason_seq"] == many["reason_seq"]
    streamed = tokenize_audio_dataset(datasets.Dataset.from_dict(rows).to_iterable_dataset(), StandInAudioEncoder(), batch_size=2)
    assert [row["semantic_seq"] for row in streamed] == many["semantic_seq"]
