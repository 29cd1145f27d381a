"""
Conversion for other shapes than the fixture's: a direct re-statement of the original `Model_stage3` math in plain
torch (fused qkv with grouped heads, rotate-half RoPE, lit-gpt blocks, the expert/backbone mixing, the depth decoder)
run on an original-layout state dict, against our converted model. Covers head/KV-group layouts the fixture does not
(1 KV head, as many KV heads as heads, experts with their own heads and head size, several layer counts).
"""

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from conftest import REPO_ROOT, tiny_uniaudio2_config
from test_conversion_uniaudio2 import _original_state_dict


sys.path.insert(0, str(REPO_ROOT / "conversion_scripts"))
import convert_uniaudio2_to_hf as convert  # noqa: E402


def _rms(x, weight, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope(config_like, positions):
    inv_freq, scale = ROPE_INIT_FUNCTIONS["llama3"](config_like)
    angles = positions[:, None].float() * inv_freq[None]
    angles = torch.cat([angles, angles], -1)
    return angles.cos() * scale, angles.sin() * scale


def _stack(sd, prefix, x, heads, kv_heads, head_dim, rope, num_layers, mask):
    cos, sin = rope
    batch, length, _ = x.shape
    for i in range(num_layers):
        p = f"{prefix}.transformer.h.{i}."
        h = _rms(x, sd[p + "norm_1.weight"])
        q, k, v = (h @ sd[p + "attn.qkv.weight"].T).split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], -1)
        q = q.view(batch, length, heads, head_dim).transpose(1, 2)
        k = k.view(batch, length, kv_heads, head_dim).transpose(1, 2)
        v = v.view(batch, length, kv_heads, head_dim).transpose(1, 2)

        def rotate(t):
            half = t.shape[-1] // 2
            return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

        q, k = rotate(q), rotate(k)
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)
        scores = scores.masked_fill(~mask, float("-inf"))
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, heads * head_dim)
        x = x + attn @ sd[p + "attn.proj.weight"].T
        h = _rms(x, sd[p + "norm_2.weight"])
        x = x + (F.silu(h @ sd[p + "mlp.fc_1.weight"].T) * (h @ sd[p + "mlp.fc_2.weight"].T)) @ sd[p + "mlp.proj.weight"].T
    return _rms(x, sd[f"{prefix}.transformer.ln_f.weight"])


def reference_forward(sd, config, tokens, audio_rows):
    """Text logits and teacher-forced codebook logits of the original model (grid without padding)."""
    batch, length = tokens.shape[:2]
    vocab = config.audio_vocab_size
    positions = torch.arange(length)
    mask = torch.ones(length, length, dtype=torch.bool).tril()
    a, x = audio_rows.float()[..., None], (~audio_rows).float()[..., None]
    rows = tokens[..., :8] + torch.arange(8) * vocab
    u = (sd["audio_embeddings.weight"][rows] * a[..., None]).sum(2)

    def shapes(stack):
        return config.stack_shapes(stack)

    def run(prefix, stack, inputs, layers):
        s = shapes(stack)
        rope = _rope(_RopeConfig(config, s["head_dim"]), positions)
        return _stack(sd, prefix, inputs, s["num_attention_heads"], s["num_key_value_heads"], s["head_dim"], rope, layers, mask)

    h_u = run("audio_understanding_expert", "understanding", u, config.num_understanding_layers)
    z = h_u * a + sd["backbone.transformer.wte.weight"][tokens[..., 8]] * x
    h = run("backbone", "backbone", z, config.num_backbone_layers)
    h_g = run("audio_generation_expert", "generation", h * a, config.num_generation_layers)
    h_f = h_g * a + h * x
    text_logits = h_f @ sd["backbone.lm_head.weight"].T

    selected = audio_rows[:, 1:]
    frame_hidden = h_f[:, :-1][selected]
    frame_codes = tokens[:, 1:, :8][selected]
    code_embeds = sd["audio_embeddings.weight"][frame_codes[:, :7] + torch.arange(7) * vocab]
    dec_in = torch.cat([frame_hidden[:, None], code_embeds], 1) @ sd["projection.weight"].T
    dec = config.depth_decoder_config
    dec_rope = _rope(_RopeConfig(config, dec.head_dim, dec.rope_parameters), torch.arange(8))
    d = _stack(sd, "decoder", dec_in, dec.num_attention_heads, dec.num_key_value_heads, dec.head_dim, dec_rope,
               dec.num_hidden_layers, torch.ones(8, 8, dtype=torch.bool).tril())
    audio_logits = torch.einsum("nkd,kdv->nkv", d, sd["audio_head"])
    return text_logits, audio_logits


class _RopeConfig:
    def __init__(self, config, head_dim, rope_parameters=None):
        self.rope_parameters = dict(rope_parameters or config.rope_parameters)
        self.head_dim = head_dim
        self.hidden_size = config.hidden_size
        self.num_attention_heads = config.num_attention_heads
        self.max_position_embeddings = config.max_position_embeddings

    def standardize_rope_params(self):
        pass


CASES = {
    "one_kv_head": dict(num_attention_heads=4, num_key_value_heads=1, head_dim=8, num_understanding_layers=1,
                        num_backbone_layers=3, num_generation_layers=2),
    "mha_and_expert_shapes": dict(
        num_attention_heads=4, num_key_value_heads=4, head_dim=8, num_understanding_layers=3, num_backbone_layers=1,
        num_generation_layers=1,
        understanding_layer_config={"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
                                    "intermediate_size": 48},
        generation_layer_config={"num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 4},
    ),
    "wide_decoder": dict(
        depth_decoder_config=dict(hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=6,
                                  num_key_value_heads=3, head_dim=8),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_converted_model_matches_the_original_math(case):
    config = tiny_uniaudio2_config(**CASES[case])
    original, _ = _original_state_dict(config)
    generator = torch.Generator().manual_seed(1)
    original = {k: (torch.randn(v.shape, generator=generator) / math.sqrt(v.shape[-1]) if v.ndim > 1 else 1 + 0.2 * torch.randn(v.shape, generator=generator)) for k, v in original.items()}
    model = convert.build_model(config, convert.convert_state_dict(original, config))
    batch, length = 2, 11
    tokens = torch.zeros(batch, length, 9, dtype=torch.long)
    tokens[..., 8] = torch.randint(0, 80, (batch, length), generator=generator)
    tokens[..., :8] = torch.randint(0, 40, (batch, length, 8), generator=generator)
    audio_rows = torch.zeros(batch, length, dtype=torch.bool)
    audio_rows[0, 3:8] = True
    audio_rows[1, 5:11] = True
    ref_text, ref_audio = reference_forward(original, config, tokens, audio_rows)
    with torch.no_grad():
        out = model(input_ids=tokens[..., 8], audio_codes=tokens[..., :8], audio_codes_mask=audio_rows,
                    output_audio_logits=True)
    torch.testing.assert_close(out.logits, ref_text, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.audio_logits, ref_audio, atol=1e-4, rtol=1e-4)
    # the KV cache and the attention implementations agree for these shapes too
    with torch.no_grad():
        first = model(input_ids=tokens[:, :6, 8], audio_codes=tokens[:, :6, :8], audio_codes_mask=audio_rows[:, :6], use_cache=True)
        second = model(input_ids=tokens[:, 6:, 8], audio_codes=tokens[:, 6:, :8], audio_codes_mask=audio_rows[:, 6:],
                       cache=first.cache, use_cache=True)
        torch.testing.assert_close(second.logits, ref_text[:, 6:], atol=1e-4, rtol=1e-4)
        model.set_attn_implementation("eager")
        eager = model(input_ids=tokens[..., 8], audio_codes=tokens[..., :8], audio_codes_mask=audio_rows)
    torch.testing.assert_close(eager.logits, ref_text, atol=1e-4, rtol=1e-4)


def test_expert_shapes_survive_save_and_load(tmp_path):
    from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration

    config = tiny_uniaudio2_config(**{k: v for k, v in CASES["mha_and_expert_shapes"].items()})
    torch.manual_seed(0)
    model = UniAudio2ForConditionalGeneration(config).eval()
    model.save_pretrained(tmp_path)
    loaded = UniAudio2ForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 80, (1, 9))
    codes = torch.randint(0, 40, (1, 9, 8))
    rows = torch.arange(9)[None] >= 3
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, audio_codes=codes, audio_codes_mask=rows).logits,
                                   model(input_ids=ids, audio_codes=codes, audio_codes_mask=rows).logits)
    assert loaded.config.understanding_layer_config["head_dim"] == 16
