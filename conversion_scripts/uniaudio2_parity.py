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
Parity check of a converted UniAudio 2.0 language model against the reference fixtures
(`shared/fixtures/reference_llm/inputs_and_outputs.safetensors`, produced by running the original code).

Checked: the training forward (text logits, depth-decoder logits, every loss), the prefill text logits, the
per-step text and codebook logits of the recorded greedy traces (teacher-forced on the recorded rows), and the
greedy TTS (audio mode) and ASR (text mode) generation traces run freely from the prompts.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file


@dataclass
class ParityReport:
    max_abs_diff_text: float = 0.0
    max_abs_diff_audio: float = 0.0
    loss_diff: float = 0.0
    traces_equal: bool = True
    details: list[str] = field(default_factory=list)

    def update(self, kind: str, name: str, ours: torch.Tensor, reference: torch.Tensor):
        if ours.shape != reference.shape:
            self.details.append(f"{name}: shape {tuple(ours.shape)} vs reference {tuple(reference.shape)}")
            diff = float("inf")
        else:
            diff = (ours.double() - reference.double()).abs().max().item() if ours.numel() else 0.0
            self.details.append(f"{name}: max_abs_diff={diff:.3e}")
        attribute = {"text": "max_abs_diff_text", "audio": "max_abs_diff_audio", "loss": "loss_diff"}[kind]
        setattr(self, attribute, max(getattr(self, attribute), diff))

    def check_equal(self, name: str, ours: torch.Tensor, reference: torch.Tensor):
        equal = ours.shape == reference.shape and bool(torch.equal(ours.long(), reference.long()))
        self.details.append(f"{name}: {'equal' if equal else 'DIFFERENT'}")
        if not equal:
            self.details.append(f"  ours      {ours.tolist()}\n  reference {reference.tolist()}")
        self.traces_equal = self.traces_equal and equal

    def ok(self, tolerance: float) -> bool:
        return (
            self.traces_equal
            and self.max_abs_diff_text <= tolerance
            and self.max_abs_diff_audio <= tolerance
            and self.loss_diff <= tolerance
        )

    def summary_line(self) -> str:
        return (
            f"parity: max_abs_diff_text={self.max_abs_diff_text:.3e} max_abs_diff_audio={self.max_abs_diff_audio:.3e} "
            f"loss_diff={self.loss_diff:.3e} traces_equal={self.traces_equal}"
        )


def grid_to_inputs(grid: torch.Tensor, mask: torch.Tensor, loss_mask: torch.Tensor | None = None) -> dict:
    """
    Translate the original `(B, S, 9)` grid (`[cb0..cb7 | text]`) and its `tokens_mask` into our inputs: text column,
    codebook columns, audio-row mask and attention mask (rows that are neither text nor audio are padding). With the
    collate's `loss_mask`, also builds the unshifted `labels` / `audio_labels` (-100 where the loss mask is 0).
    """
    mask = mask.bool()
    inputs = {
        "input_ids": grid[..., -1].long(),
        "audio_codes": grid[..., :-1].long(),
        "audio_codes_mask": mask[..., 0],
        "attention_mask": mask.any(-1).long(),
    }
    if loss_mask is not None:
        loss_mask = loss_mask.bool()
        inputs["labels"] = torch.where(loss_mask[..., -1], grid[..., -1], -100).long()
        inputs["audio_labels"] = torch.where(loss_mask[..., :-1], grid[..., :-1], -100).long()
    return inputs


def _teacher_forced_steps(model, prompt, prompt_mask, step_tokens, step_mask, step_samples):
    """Text and codebook logits of every recorded step, recomputed without a cache on the recorded rows."""
    grid = torch.cat([prompt[:-1], step_tokens])[None]
    mask = torch.cat([prompt_mask[:-1], step_mask])[None]
    inputs = grid_to_inputs(grid, mask)
    with torch.no_grad():
        out = model(**inputs, use_cache=False)
        hidden = out.last_hidden_state[0, prompt.shape[0] - 1 :]
        text_logits = model.lm_head(hidden)
        decoder_inputs = model.depth_decoder_inputs(hidden, step_samples[:, 1:].long())
        audio_logits = model.depth_decoder(decoder_inputs).logits
    return text_logits, audio_logits


def verify_llm_fixture(model_or_path, fixture_dir) -> ParityReport:
    """Run every check against `fixture_dir`; `model_or_path` is a loaded model or a converted directory."""
    fixture_dir = Path(fixture_dir)
    data = load_file(fixture_dir / "inputs_and_outputs.safetensors")
    if isinstance(model_or_path, (str, Path)):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_or_path, trust_remote_code=True, dtype=torch.float32)
    else:
        model = model_or_path
    model = model.eval()
    report = ParityReport()

    # 1. Training forward and losses.
    inputs = grid_to_inputs(data["batch.seq"], data["batch.tokens_mask"], data["batch.loss_mask"])
    with torch.no_grad():
        out = model(**inputs, use_cache=False)
    report.update("text", "forward.text_logits", out.logits[:, :-1], data["forward.text_logits"])
    report.update("audio", "forward.ci_logits", out.audio_logits, data["forward.ci_logits"])
    report.update("loss", "loss.text", out.text_loss, data["loss.text"])
    report.update("loss", "loss.audio_weighted", out.audio_loss, data["loss.audio_weighted"])
    report.update("loss", "loss.total", out.loss, data["loss.total"])
    reference_cb = torch.stack([data[f"loss.cb{k + 1}"] for k in range(model.config.num_codebooks)])
    report.update("loss", "loss.cb1..8", out.codebook_losses, reference_cb)

    # 2. Prefill logits and per-step logits of the recorded traces.
    for name in ("tts", "asr"):
        prompt, prompt_mask = data[f"{name}.prompt_tokens"], data[f"{name}.prompt_mask"]
        with torch.no_grad():
            prefill = model(**grid_to_inputs(prompt[None], prompt_mask[None]), use_cache=False).logits[0, :-1]
        report.update("text", f"{name}.prefill_text_logits", prefill, data[f"{name}.prefill_text_logits"])
        text_logits, audio_logits = _teacher_forced_steps(
            model,
            prompt,
            prompt_mask,
            data[f"{name}.step_input_tokens"],
            data[f"{name}.step_input_mask"],
            data[f"{name}.step_samples"],
        )
        report.update("text", f"{name}.step_text_logits", text_logits, data[f"{name}.step_text_logits"])
        report.update("audio", f"{name}.step_audio_logits", audio_logits, data[f"{name}.step_audio_logits"])

    # 3. Free-running greedy TTS trace (audio mode, with the KV cache).
    prompt = grid_to_inputs(data["tts.prompt_tokens"][None], data["tts.prompt_mask"][None])
    generated = model.generate(**prompt, generation_mode="audio", do_sample=False, max_new_frames=500)
    steps = data["tts.step_samples"].shape[0]
    report.check_equal("tts.frames", generated.frames[0], data["tts.step_samples"][:, 1:])
    report.check_equal("tts.frame_kinds", generated.frame_kinds[0], data["tts.step_kind"][:steps])
    report.check_equal("tts.reason_tokens", generated.reasoning_codes[0], data["tts.reason_tokens"])
    report.check_equal("tts.semantic_tokens", generated.reconstruction_codes[0], data["tts.semantic_tokens"])

    # 4. Free-running greedy ASR trace (text mode through GenerationMixin, stops on the text EOS).
    prompt = grid_to_inputs(data["asr.prompt_tokens"][None], data["asr.prompt_mask"][None])
    sequences = model.generate(**prompt, do_sample=False, max_new_tokens=500)
    new_tokens = sequences[0, prompt["input_ids"].shape[1] :]
    report.check_equal("asr.step_text_samples", new_tokens, data["asr.step_samples"][:, 0])
    text_tokens = new_tokens[new_tokens != model.generation_config.eos_token_id]
    report.check_equal("asr.text_tokens", text_tokens, data["asr.text_tokens"])
    return report
