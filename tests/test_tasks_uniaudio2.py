"""Grid layout of every task against the reference collate (fixture) and the worked examples of the spec."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import fixture_dir_or_skip, tiny_uniaudio2_config
from uniaudio2.tasks_uniaudio2 import TASKS, GridSpecialIds, build_grid, collate_grids, resolve_task


def _fixture_ids(fixture):
    config = json.loads((fixture / "config.json").read_text())
    text, audio = config["text"], config["audio"]
    return GridSpecialIds(
        bos_token_id=text["bos"],
        eos_token_id=text["eos"],
        text_pad_token_id=text["text_pad"],
        tag_ids=text["special_ids"],
        num_codebooks=8,
        reasoning_vocab_size=audio["audio_reason_vocab_size"],
        reasoning_bos_token_id=audio["reason_bos"],
        reasoning_eos_token_id=audio["reason_eos"],
        reasoning_pad_token_id=audio["reason_pad"],
        reconstruction_bos_token_id=audio["semantic_bos_stored"],
        reconstruction_eos_token_id=audio["semantic_eos_stored"],
        reconstruction_pad_token_id=audio["semantic_pad_stored"],
    )


def test_training_batch_equals_the_reference_collate():
    fixture = fixture_dir_or_skip("reference_llm")
    data = load_file(fixture / "inputs_and_outputs.safetensors")
    ids = _fixture_ids(fixture)
    grids = [
        build_grid("ASR", {"reason_seq": data["raw.asr_example.reason"].T, "semantic_seq": data["raw.asr_example.semantic"].T,
                           "transcription_seq": data["raw.asr_example.transcription"]}, ids, prompt_ids=data["raw.prompt_ASR"]),
        build_grid("TTS", {"reason_seq": data["raw.tts_example.reason"].T, "semantic_seq": data["raw.tts_example.semantic"].T,
                           "transcription_seq": data["raw.tts_example.transcription"]}, ids, prompt_ids=data["raw.prompt_TTS"]),
        build_grid("text_only", {"text_seq": data["raw.text_only_example.text"]}, ids),
    ]
    assert [len(g) for g in grids] == data["batch.lengths"].tolist()
    batch = collate_grids(grids, ids)
    seq, mask, loss_mask = data["batch.seq"], data["batch.tokens_mask"].bool(), data["batch.loss_mask"].bool()
    assert torch.equal(batch["input_ids"], seq[..., 8])
    assert torch.equal(batch["audio_codes"], seq[..., :8])
    assert torch.equal(batch["audio_codes_mask"], mask[..., 0])
    assert torch.equal(batch["attention_mask"].bool(), mask.any(-1))
    assert torch.equal(batch["labels"], torch.where(loss_mask[..., 8], seq[..., 8], -100))
    assert torch.equal(batch["audio_labels"], torch.where(loss_mask[..., :8], seq[..., :8], -100))


def test_inference_prompts_equal_the_reference_generators():
    fixture = fixture_dir_or_skip("reference_llm")
    data = load_file(fixture / "inputs_and_outputs.safetensors")
    ids = _fixture_ids(fixture)
    tts = build_grid("TTS", {"transcription_seq": data["tts.transcription_ids"]}, ids,
                     prompt_ids=data["tts.task_prompt_ids"], inference=True)
    assert torch.equal(tts.input_ids, data["tts.prompt_tokens"][:, 8])
    assert not tts.audio_rows.any()
    asr = build_grid("ASR", {"reason_seq": data["asr.reason_codes"], "semantic_seq": data["asr.semantic_codes"]}, ids,
                     prompt_ids=data["asr.task_prompt_ids"], inference=True)
    assert torch.equal(asr.input_ids, data["asr.prompt_tokens"][:, 8])
    assert torch.equal(asr.audio_codes, data["asr.prompt_tokens"][:, :8])
    assert torch.equal(asr.audio_rows, data["asr.prompt_mask"][:, 0])


def _ids():
    config = tiny_uniaudio2_config()
    tags = {name: 90 + i for i, name in enumerate(
        ["<transcription>", "</transcription>", "<caption>", "</caption>", "<lyric>", "</lyric>"])}
    return GridSpecialIds.from_config(config, tags, audio_prompt_bos_token_id=14, audio_prompt_eos_token_id=11)


def _segments(task):
    generator = torch.Generator().manual_seed(0)
    values = {}
    for key, kind in task.segments:
        if kind == "text":
            values[key] = torch.cat([torch.tensor([80]), torch.randint(0, 80, (4,), generator=generator), torch.tensor([81])])
        else:
            values[key] = torch.randint(0, 12, (3, 8), generator=generator)
    return values


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_layout(name):
    task, ids = TASKS[name], _ids()
    grid = build_grid(task, _segments(task), ids, prompt_ids=torch.tensor([80, 5, 6, 271, 81]))
    rows = 5 if task.use_prompt else 0
    for key, start, end in grid.segments:
        if key == "prompt":
            assert (start, end) == (0, 5) and not grid.text_loss[start:end].any()
            continue
        kind = dict(task.segments)[key]
        with_loss = key in task.loss_keys
        if kind == "text":
            assert not grid.audio_rows[start:end].any()
            assert (grid.audio_codes[start:end] == 0).all()
            wrapped = not key.startswith("text_seq")
            assert end - start == 6 + 2 * wrapped
            if wrapped:
                tag = key.removesuffix("_seq")
                assert grid.input_ids[start].item() == ids.tag_ids[f"<{tag}>"]
                assert grid.input_ids[end - 1].item() == ids.tag_ids[f"</{tag}>"]
            assert bool(grid.text_loss[start:end].all()) == with_loss and not grid.audio_loss[start:end].any()
        else:
            assert grid.audio_rows[start:end].all() and (grid.input_ids[start:end] == 0).all()
            assert end - start == 5
            bos, eos = {
                "reasoning": (12, 13), "reconstruction": (37, 36), "audio_prompt": (14, 11)
            }[kind]
            assert (grid.audio_codes[start] == bos).all() and (grid.audio_codes[end - 1] == eos).all()
            middle = grid.audio_codes[start + 1 : end - 1]
            assert bool((middle >= 16).all()) == (kind != "reasoning")
            assert bool(grid.audio_loss[start:end].all()) == with_loss and not grid.text_loss[start:end].any()
        rows = end
    assert rows == len(grid)


def test_condition_dropout_pads_the_condition_only():
    ids = _ids()
    task = TASKS["TTS"]
    plain = build_grid(task, _segments(task), ids, prompt_ids=torch.tensor([80, 5, 271, 81]))
    dropped = build_grid(task, _segments(task), ids, prompt_ids=torch.tensor([80, 5, 271, 81]), drop_condition=True)
    condition = ~(plain.audio_loss | plain.text_loss)
    assert (dropped.input_ids[condition] == ids.text_pad_token_id).all()
    assert torch.equal(dropped.audio_codes[plain.audio_loss], plain.audio_codes[plain.audio_loss])
    assert torch.equal(dropped.audio_rows, plain.audio_rows)


def test_errors():
    ids = _ids()
    with pytest.raises(ValueError, match="Unknown task 'dance'"):
        resolve_task("dance")
    with pytest.raises(ValueError, match="needs the segment 'transcription_seq'"):
        build_grid("TTS", {}, ids, prompt_ids=torch.tensor([80, 81]))
    with pytest.raises(ValueError, match="task prompt"):
        build_grid("TTS", {"transcription_seq": torch.tensor([80, 81])}, ids)
    with pytest.raises(ValueError, match="shape"):
        build_grid("audio_only", {"reason_seq": torch.zeros(3, 4), "semantic_seq": torch.zeros(3, 8)}, ids)
    with pytest.raises(ValueError, match="max_length"):
        collate_grids([build_grid("text_only", {"text_seq": torch.arange(10)}, ids)], ids, max_length=5)
    assert resolve_task("transcribe").name == "ASR" and resolve_task("text-to-music").name == "TTM"
