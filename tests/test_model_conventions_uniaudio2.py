"""
The transformers conventions the model follows (issue 28, items 1-5): recorded hidden states / attentions, tuple
outputs, the library's loss arguments (`shift_labels`, `num_items_in_batch`) with gradient accumulation, fullgraph
compilation and `torch.export` of forward, and the typed depth-decoder output.
"""

import pytest
import torch
from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

from conftest import random_grid, tiny_uniaudio2_config
from uniaudio2.modeling_uniaudio2 import (
    UniAudio2DepthDecoderOutput,
    UniAudio2ForConditionalGeneration,
)


def _eager_model(**overrides):
    torch.manual_seed(0)
    model = UniAudio2ForConditionalGeneration(tiny_uniaudio2_config(**overrides)).eval()
    model.set_attn_implementation("eager")  # attention probabilities are only materialised by eager attention
    return model


def _labels(grid):
    labels = torch.where(~grid["audio_codes_mask"], grid["input_ids"], -100)
    audio_labels = torch.where(grid["audio_codes_mask"].unsqueeze(-1), grid["audio_codes"], -100)
    return labels, audio_labels


def _layer_io(model):
    """Inputs and outputs of every decoder layer of the three stacks, in the order they run, from forward hooks."""
    records = []
    stacks = (model.model.understanding_layers, model.model.layers, model.model.generation_layers)
    handles = [
        layer.register_forward_hook(lambda module, args, output: records.append((args[0], output)))
        for stack in stacks
        for layer in stack
    ]
    return records, handles


@pytest.mark.parametrize("num_understanding_layers", [2, 0])
def test_hidden_states_and_attentions_of_the_three_stacks_in_order(num_understanding_layers):
    model = _eager_model(num_understanding_layers=num_understanding_layers)
    config = model.config
    grid = random_grid()
    # Nothing is recorded unless asked for.
    plain = model(**grid)
    assert plain.hidden_states is None and plain.attentions is None
    records, handles = _layer_io(model)
    out = model(**grid, output_hidden_states=True, output_attentions=True)
    for handle in handles:
        handle.remove()
    assert config.num_hidden_layers == num_understanding_layers + 2 + 1
    assert len(out.hidden_states) == config.num_hidden_layers + 1 == len(records) + 1
    # Entry 0 is the input of the first layer, entry i the output of layer i (understanding, backbone, generation).
    torch.testing.assert_close(out.hidden_states[0], records[0][0], rtol=0, atol=0)
    for index, (_, layer_output) in enumerate(records[:-1], start=1):
        torch.testing.assert_close(out.hidden_states[index], layer_output, rtol=0, atol=0)
    # The last entry is the mixed, normalised state the heads read.
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state, rtol=0, atol=0)
    # The backbone starts from the understanding output on audio rows: its input is not entry 0.
    if num_understanding_layers:
        assert not torch.equal(records[num_understanding_layers][0], out.hidden_states[0])
    assert len(out.attentions) == config.num_hidden_layers
    assert all(attention.shape == (2, config.num_attention_heads, 12, 12) for attention in out.attentions)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, config.num_attention_heads, 12))
    # The recorded outputs do not change what is computed.
    torch.testing.assert_close(out.logits, plain.logits, rtol=0, atol=0)
    # The base model returns the same record.
    base = model.model(**grid, output_hidden_states=True)
    assert len(base.hidden_states) == config.num_hidden_layers + 1
    torch.testing.assert_close(base.hidden_states[1], out.hidden_states[1], rtol=0, atol=0)


def test_depth_decoder_records_and_returns_a_typed_output():
    model = _eager_model()
    decoder_config = model.config.depth_decoder_config
    inputs = torch.randn(3, model.config.num_codebooks, model.config.hidden_size)
    out = model.depth_decoder(inputs, output_hidden_states=True, output_attentions=True)
    assert isinstance(out, UniAudio2DepthDecoderOutput) and list(out.keys())[0] == "logits"
    assert out.logits.shape == (3, 8, model.config.audio_vocab_size)
    assert torch.equal(out[0], out.logits)
    assert len(out.hidden_states) == decoder_config.num_hidden_layers + 1
    torch.testing.assert_close(out.hidden_states[0], model.depth_decoder.input_projection(inputs))
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state, rtol=0, atol=0)
    assert len(out.attentions) == decoder_config.num_hidden_layers and out.attentions[0].shape == (3, 2, 8, 8)
    # Through the language model: the teacher-forced frames' records, one frame per `audio_logits` row.
    grid = random_grid()
    full = model(**grid, output_audio_logits=True, output_hidden_states=True, output_attentions=True)
    assert len(full.depth_decoder_hidden_states) == decoder_config.num_hidden_layers + 1
    assert full.depth_decoder_hidden_states[-1].shape[0] == full.audio_logits.shape[0] == 10
    assert full.depth_decoder_attentions[0].shape[0] == 10


def test_incremental_depth_decoding_with_explicit_positions_matches_the_full_frame():
    model = _eager_model()
    inputs = torch.randn(2, model.config.num_codebooks, model.config.hidden_size)
    full = model.depth_decoder(inputs).logits
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache(config=model.config.depth_decoder_config)
    steps = [
        model.depth_decoder(inputs[:, k : k + 1], cache=cache, use_cache=True, position_ids=torch.tensor([[k]])).logits
        for k in range(model.config.num_codebooks)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="8 positions"):
        model.depth_decoder(inputs, cache=cache, use_cache=True)


def test_return_dict_false_returns_the_tuple_of_the_output():
    model = _eager_model()
    grid = random_grid()
    labels, audio_labels = _labels(grid)
    kwargs = dict(grid, labels=labels, audio_labels=audio_labels, output_hidden_states=True)
    as_dict = model(**kwargs)
    as_tuple = model(**kwargs, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    torch.testing.assert_close(as_tuple[1], as_dict.logits)
    base = model.model(**grid, return_dict=False, output_hidden_states=True)
    assert isinstance(base, tuple) and len(base) == 3  # last_hidden_state, cache, hidden_states
    decoder = model.depth_decoder(torch.randn(2, 8, 32), return_dict=False)
    assert isinstance(decoder, tuple) and decoder[0].shape == (2, 8, 40)
    # The config default applies too, as in the library.
    model.config.return_dict = False
    assert isinstance(model(**grid), tuple)


def test_shift_labels_give_the_loss_of_the_labels_they_shift():
    model = _eager_model()
    grid = random_grid()
    labels, _ = _labels(grid)
    shift_labels = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    for mode in ("eval", "train"):  # eval: from full logits; train: the head on labelled rows only
        getattr(model, mode)()
        from_labels = model(**grid, labels=labels)
        from_shifted = model(**grid, shift_labels=shift_labels)
        torch.testing.assert_close(from_shifted.loss, from_labels.loss)
    # Pre-shifted targets need not come from `labels`: a target on the last row is used (no row after it).
    model.eval()
    shifted = torch.full_like(labels, -100)
    shifted[:, -1] = 5
    logits = model(**grid).logits
    expected = torch.nn.functional.cross_entropy(logits[:, -1], shifted[:, -1])
    torch.testing.assert_close(model(**grid, shift_labels=shifted).text_loss, expected)


def test_loss_kwargs_are_declared_for_trainer():
    model = _eager_model()
    assert model.accepts_loss_kwargs is True
    # `Trainer` counts `labels[..., 1:]` for losses of the causal-LM family, which is what the text loss predicts.
    assert LOSS_MAPPING[model.loss_type] is ForCausalLMLoss


def _micro_batches():
    batches = [random_grid(seed=seed) for seed in (1, 2)]
    # Different numbers of text and audio targets in the two micro-batches, so per-micro-batch means differ from the
    # mean over both.
    batches[1]["audio_codes_mask"][:, 3:5] = False
    batches[1]["audio_codes_mask"][1, 8:10] = True
    for batch in batches:
        batch["labels"], batch["audio_labels"] = _labels(batch)
    batches[0]["labels"][0, :6] = -100
    batches[1]["audio_labels"][1, 6:8, 4:] = -100
    return batches


def _gradients(model, batches, num_items_in_batch=None):
    model.zero_grad()
    total = 0.0
    for batch in batches:
        loss = model(**batch, num_items_in_batch=num_items_in_batch).loss
        loss.backward()
        total += loss.detach()
    return total, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("normalization", ["all_frames", "labeled_frames"])
def test_gradient_accumulation_with_counted_items_equals_one_large_batch(normalization):
    model = _eager_model(audio_loss_normalization=normalization).train()
    batches = _micro_batches()
    large = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}
    reference_loss, reference = _gradients(model, [large])
    # Per-micro-batch normalisation (`num_items_in_batch=None`, what `Trainer` divides by the accumulation steps) does
    # not give the large batch's gradients.
    _, naive = _gradients(model, batches)
    assert not all(torch.allclose(naive[name] / 2, reference[name], rtol=1e-3, atol=1e-6) for name in reference)
    counts = sum(model.count_loss_items(**batch) for batch in batches)
    assert counts.shape == (1 + model.config.num_codebooks,)
    assert counts[0] == sum((batch["labels"][:, 1:] != -100).sum() for batch in batches)
    accumulated_loss, accumulated = _gradients(model, batches, num_items_in_batch=counts)
    torch.testing.assert_close(accumulated_loss, reference_loss, atol=1e-5, rtol=1e-5)
    assert accumulated.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(accumulated[name], reference[name], atol=1e-6, rtol=1e-4, msg=name)
    # The counts of one batch normalise it as without them (the paper's loss).
    single = model(**large, num_items_in_batch=model.count_loss_items(**large)).loss
    torch.testing.assert_close(single, reference_loss)


def test_scalar_num_items_as_trainer_counts_them():
    model = _eager_model().train()
    batches = _micro_batches()
    large = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}
    text_only = [{key: value for key, value in batch.items() if key != "audio_labels"} for batch in batches]
    large_text = {key: value for key, value in large.items() if key != "audio_labels"}
    # `Trainer`'s count: shifted text labels of the accumulated batch. Exact for the text loss.
    trainer_count = sum((batch["labels"][..., 1:] != -100).sum() for batch in batches)
    reference_loss, reference = _gradients(model, [large_text])
    accumulated_loss, accumulated = _gradients(model, text_only, num_items_in_batch=trainer_count)
    torch.testing.assert_close(accumulated_loss, reference_loss, atol=1e-5, rtol=1e-5)
    for name in reference:
        torch.testing.assert_close(accumulated[name], reference[name], atol=1e-6, rtol=1e-4, msg=name)
    # With one micro-batch per step the scalar gives the paper's text + audio loss exactly.
    scalar = model(**large, num_items_in_batch=int((large["labels"][..., 1:] != -100).sum())).loss
    torch.testing.assert_close(scalar, model(**large).loss)
    with pytest.raises(ValueError, match="num_items_in_batch"):
        model(**large, num_items_in_batch=torch.ones(3))


def test_paper_weighting_stays_the_default():
    model = _eager_model()
    assert model.config.text_loss_weight == 1.6
    assert model.config.codebook_loss_weights == [2, 2, 2, 1, 1, 1, 1, 1]
    grid = random_grid()
    labels, audio_labels = _labels(grid)
    out = model(**grid, labels=labels, audio_labels=audio_labels)
    weights = torch.tensor([2.0, 2, 2, 1, 1, 1, 1, 1])
    torch.testing.assert_close(out.loss, 1.6 * out.text_loss + (weights * out.codebook_losses).sum() / 8)


def test_forward_compiles_with_fullgraph():
    model = _eager_model()
    assert model._can_compile_fullgraph
    grid = random_grid()
    labels, _ = _labels(grid)
    attention_mask = torch.ones(2, 12, dtype=torch.long)
    attention_mask[1, :3] = 0
    kwargs = dict(grid, attention_mask=attention_mask, labels=labels, use_cache=False, output_hidden_states=True)
    # The output-capturing hooks are installed by the first eager call that records (as for every library model).
    eager = model(**kwargs)
    compiled = torch.compile(model, fullgraph=True, backend="eager")(**kwargs)
    torch.testing.assert_close(compiled.logits, eager.logits)
    torch.testing.assert_close(compiled.loss, eager.loss)
    assert len(compiled.hidden_states) == model.config.num_hidden_layers + 1


def _export_inputs(seq_len, audio_rows, seed):
    grid = random_grid(seq_len=seq_len, audio_rows=audio_rows, seed=seed)
    attention_mask = torch.ones(2, seq_len, dtype=torch.long)
    attention_mask[1, :3] = 0
    return dict(grid, attention_mask=attention_mask, use_cache=False)


@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_export_of_forward(dynamic):
    model = _eager_model()
    model.set_attn_implementation("sdpa")
    inputs = _export_inputs(12, slice(3, 8), seed=0)
    dynamic_shapes = None
    if dynamic:
        seq = torch.export.Dim("seq", min=2, max=64)
        dynamic_shapes = {name: {1: seq} for name in ("input_ids", "audio_codes", "audio_codes_mask", "attention_mask")}
        dynamic_shapes["use_cache"] = None
    exported = torch.export.export(model, args=(), kwargs=inputs, dynamic_shapes=dynamic_shapes, strict=False)
    torch.testing.assert_close(exported.module()(**inputs).logits, model(**inputs).logits, atol=1e-6, rtol=1e-5)
    if dynamic:
        longer = _export_inputs(20, slice(4, 15), seed=3)
        torch.testing.assert_close(exported.module()(**longer).logits, model(**longer).logits, atol=1e-6, rtol=1e-5)


def test_generate_returns_hidden_states_and_attentions_in_text_mode():
    model = _eager_model()
    model.generation_config.pad_token_id = 82
    model.generation_config.eos_token_id = 81
    grid = random_grid()
    out = model.generate(
        **grid, max_new_tokens=3, min_new_tokens=3, do_sample=False, return_dict_in_generate=True,
        output_hidden_states=True, output_attentions=True, output_scores=True,
    )
    assert out.sequences.shape == (2, 15) and len(out.scores) == 3
    assert len(out.hidden_states) == 3 and len(out.attentions) == 3
    layers = model.config.num_hidden_layers
    assert [len(step) for step in out.hidden_states] == [layers + 1] * 3
    assert out.hidden_states[0][0].shape == (2, 12, 32) and out.hidden_states[1][-1].shape == (2, 1, 32)
    assert [len(step) for step in out.attentions] == [layers] * 3
    assert out.attentions[2][0].shape == (2, 4, 1, 14)
    # The prefill's last hidden state gives the first generated token.
    prefill_logits = model.lm_head(out.hidden_states[0][-1][:, -1])
    assert torch.equal(prefill_logits.argmax(-1), out.sequences[:, 12])


class _CountingTrainer:
    """Made a `Trainer` subclass below: counts the text + codebook items with `count_loss_items`."""

    def _get_num_items_in_batch(self, batch_samples, device):
        return sum(self.model.count_loss_items(**batch) for batch in batch_samples).to(device)


def _train_one_step(tmp_path, examples, batch_size, accumulation, counting):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = UniAudio2ForConditionalGeneration(tiny_uniaudio2_config())
    trainer_class = type("CountingTrainer", (_CountingTrainer, Trainer), {}) if counting else Trainer
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
        max_steps=1, optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", use_cpu=True, report_to=[],
        save_strategy="no", logging_strategy="no", dataloader_num_workers=0, seed=0,
    )

    def collate(features):
        return {key: torch.stack([feature[key] for feature in features]) for key in features[0]}

    trainer_class(model=model, args=args, train_dataset=examples, data_collator=collate).train()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("with_audio", [False, True])
def test_trainer_gradient_accumulation_equals_one_large_batch(tmp_path, with_audio):
    """
    2 micro-batches of 2 accumulated == 1 batch of 4, one SGD step. Text labels only: a plain `Trainer` (its scalar
    count of shifted text labels). Text + audio labels: a `Trainer` whose `_get_num_items_in_batch` sums
    `count_loss_items` (the codebook denominators `Trainer` does not count).
    """
    examples = []
    for batch in _micro_batches():
        for row in range(2):
            example = {key: value[row] for key, value in batch.items() if with_audio or key != "audio_labels"}
            examples.append(example)
    large = _train_one_step(tmp_path / "large", examples, batch_size=4, accumulation=1, counting=with_audio)
    accumulated = _train_one_step(tmp_path / "acc", examples, batch_size=2, accumulation=2, counting=with_audio)
    for name in large:
        torch.testing.assert_close(accumulated[name], large[name], atol=1e-6, rtol=1e-4, msg=name)
