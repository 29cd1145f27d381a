import pytest
import torch

from conftest import random_grid, tiny_uniaudio2_config
from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration


def _labels(grid):
    text_rows = ~grid["audio_codes_mask"]
    labels = torch.where(text_rows, grid["input_ids"], -100)
    audio_labels = torch.where(grid["audio_codes_mask"].unsqueeze(-1), grid["audio_codes"], -100)
    return labels, audio_labels


def test_forward_shapes(tiny_model):
    grid = random_grid()
    out = tiny_model(**grid, output_audio_logits=True)
    assert out.logits.shape == (2, 12, 96)
    # frames whose previous row is in the input: rows 3..7 are audio, predicted from rows 2..6
    assert out.audio_logits.shape == (2 * 5, 8, 40)
    assert out.audio_logits_positions[:5, 1].tolist() == [2, 3, 4, 5, 6]
    assert out.cache is not None and out.cache.get_seq_length() == 12
    assert out.past_key_values is out.cache


def test_loss_and_backward_reach_every_parameter(tiny_model):
    tiny_model.train()
    grid = random_grid()
    labels, audio_labels = _labels(grid)
    out = tiny_model(**grid, labels=labels, audio_labels=audio_labels)
    expected = tiny_model.config.text_loss_weight * out.text_loss + out.audio_loss
    torch.testing.assert_close(out.loss, expected)
    weights = torch.tensor(tiny_model.config.codebook_loss_weights)
    torch.testing.assert_close(out.audio_loss, (weights * out.codebook_losses).sum() / 8)
    out.loss.backward()
    no_grad = [name for name, p in tiny_model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_text_loss_matches_manual_cross_entropy(tiny_model):
    grid = random_grid()
    labels, _ = _labels(grid)
    out = tiny_model(**grid, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 96)
    target = labels[:, 1:].reshape(-1)
    torch.testing.assert_close(out.text_loss, torch.nn.functional.cross_entropy(logits, target, ignore_index=-100))
    assert out.audio_loss is None


def test_audio_loss_normalization_modes():
    torch.manual_seed(0)
    model = UniAudio2ForConditionalGeneration(tiny_uniaudio2_config()).eval()
    grid = random_grid()
    _, audio_labels = _labels(grid)
    # Only half of the frames carry labels: "all_frames" divides by all 10 frames, "labeled_frames" by the 4 labelled.
    audio_labels[:, 3:6] = -100
    all_frames = model(**grid, audio_labels=audio_labels).codebook_losses
    model.config.audio_loss_normalization = "labeled_frames"
    labeled = model(**grid, audio_labels=audio_labels).codebook_losses
    torch.testing.assert_close(all_frames * 10 / 4, labeled)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_unpadded(tiny_model, side):
    long_grid = random_grid(batch_size=1, seq_len=12, seed=1)
    short_grid = random_grid(batch_size=1, seq_len=8, audio_rows=slice(2, 5), seed=2)
    pad = 4
    batch = {}
    for key in long_grid:
        filler = torch.zeros_like(short_grid[key][:, :pad])
        padded = torch.cat([filler, short_grid[key]] if side == "left" else [short_grid[key], filler], 1)
        batch[key] = torch.cat([long_grid[key], padded])
    attention_mask = torch.ones(2, 12, dtype=torch.long)
    if side == "left":
        attention_mask[1, :pad] = 0
    else:
        attention_mask[1, -pad:] = 0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = tiny_model(**batch, attention_mask=attention_mask, position_ids=position_ids, output_audio_logits=True)
    single_long = tiny_model(**long_grid, output_audio_logits=True)
    single_short = tiny_model(**short_grid, output_audio_logits=True)
    torch.testing.assert_close(out.logits[0], single_long.logits[0], atol=1e-5, rtol=1e-5)
    rows = slice(pad, None) if side == "left" else slice(None, -pad)
    torch.testing.assert_close(out.logits[1, rows], single_short.logits[0], atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(out.logits[1, slice(None, pad) if side == "left" else slice(-pad, None)]) == 0
    n_long = single_long.audio_logits.shape[0]
    torch.testing.assert_close(out.audio_logits[:n_long], single_long.audio_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.audio_logits[n_long:], single_short.audio_logits, atol=1e-5, rtol=1e-5)


def test_eager_and_sdpa_agree():
    torch.manual_seed(0)
    config = tiny_uniaudio2_config()
    model = UniAudio2ForConditionalGeneration(config).eval()
    grid = random_grid()
    attention_mask = torch.ones(2, 12, dtype=torch.long)
    attention_mask[1, :3] = 0
    model.set_attn_implementation("sdpa")
    sdpa = model(**grid, attention_mask=attention_mask, output_audio_logits=True)
    model.set_attn_implementation("eager")
    assert model.depth_decoder.config._attn_implementation == "eager"
    eager = model(**grid, attention_mask=attention_mask, output_audio_logits=True)
    torch.testing.assert_close(sdpa.logits, eager.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sdpa.audio_logits, eager.audio_logits, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = UniAudio2ForConditionalGeneration(tiny_uniaudio2_config()).train()
    grid = random_grid()
    labels, audio_labels = _labels(grid)

    def grads():
        model.zero_grad()
        model(**grid, labels=labels, audio_labels=audio_labels, use_cache=False).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    reference = grads()
    model.gradient_checkpointing_enable()
    checkpointed = grads()
    for name in reference:
        torch.testing.assert_close(checkpointed[name], reference[name], atol=1e-6, rtol=1e-5, msg=name)


def test_cached_forward_matches_full_forward(tiny_model):
    grid = random_grid()
    full = tiny_model(**grid, use_cache=False)
    prefix = {key: value[:, :7] for key, value in grid.items()}
    first = tiny_model(**prefix, use_cache=True)
    rest = {key: value[:, 7:] for key, value in grid.items()}
    second = tiny_model(**rest, cache=first.cache, use_cache=True)
    torch.testing.assert_close(second.logits, full.logits[:, 7:], atol=1e-5, rtol=1e-5)
    # the deprecated name is still accepted
    first = tiny_model(**prefix, use_cache=True)
    again = tiny_model(**rest, past_key_values=first.cache, use_cache=True)
    torch.testing.assert_close(again.logits, full.logits[:, 7:], atol=1e-5, rtol=1e-5)


def test_invalid_inputs_raise_clear_errors(tiny_model):
    grid = random_grid()
    # Value checks read the data (a host sync), so `forward` leaves them to `check_inputs`, which `generate` runs
    # once on its prompt.
    bad = dict(grid, audio_codes=grid["audio_codes"].clone())
    bad["audio_codes"][0, 4, 2] = 40
    with pytest.raises(ValueError, match="audio_codes"):
        tiny_model.model.check_inputs(**bad)
    for mode in ("text", "audio"):
        with pytest.raises(ValueError, match="audio_codes"):
            tiny_model.generate(**bad, generation_mode=mode, max_new_tokens=2, max_new_frames=2)
    bad = dict(grid, input_ids=grid["input_ids"].clone())
    bad["input_ids"][0, 0] = 96
    with pytest.raises(ValueError, match="input_ids"):
        tiny_model.model.check_inputs(**bad)
    tiny_model.model.check_inputs(**grid)
    with pytest.raises(ValueError, match="audio_codes_mask"):
        tiny_model(input_ids=grid["input_ids"], audio_codes=grid["audio_codes"])
    with pytest.raises(ValueError, match="shape"):
        tiny_model(**dict(grid, audio_codes=grid["audio_codes"][..., :4]))
    with pytest.raises(ValueError, match="audio_labels"):
        tiny_model(input_ids=grid["input_ids"], audio_labels=grid["audio_codes"])
    # values on non-audio rows (e.g. -100 fillers) are ignored
    filler = dict(grid, audio_codes=torch.where(grid["audio_codes_mask"].unsqueeze(-1), grid["audio_codes"], -100))
    torch.testing.assert_close(tiny_model(**filler).logits, tiny_model(**grid).logits)


def test_text_only_input(tiny_model):
    ids = torch.randint(0, 80, (2, 6))
    out = tiny_model(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 6, 96) and out.audio_logits is None and torch.isfinite(out.loss)
