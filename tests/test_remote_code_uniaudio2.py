"""The saved directory loads with the Auto classes and `trust_remote_code=True` from a fresh, offline process."""

import os
import subprocess
import sys
import textwrap

import torch

from conftest import REPO_ROOT, tiny_uniaudio2_config
from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration


CHILD = textwrap.dedent(
    """
    import sys, torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    path, resave = sys.argv[1], sys.argv[2]
    assert "uniaudio2" not in sys.modules
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    assert type(config).__name__ == "UniAudio2Config", type(config)
    for auto in (AutoModel, AutoModelForCausalLM):
        model = auto.from_pretrained(path, trust_remote_code=True).eval()
        assert type(model).__name__ == "UniAudio2ForConditionalGeneration", type(model)
    assert "uniaudio2" not in sys.modules, "the package must not be imported: remote code only"
    expected = torch.load(path + "/expected.pt", weights_only=True)
    with torch.no_grad():
        logits = model(input_ids=expected["input_ids"], audio_codes=expected["audio_codes"],
                       audio_codes_mask=expected["audio_codes_mask"]).logits
    torch.testing.assert_close(logits, expected["logits"])
    text = model.generate(input_ids=expected["input_ids"], audio_codes=expected["audio_codes"],
                          audio_codes_mask=expected["audio_codes_mask"], do_sample=False, max_new_tokens=3,
                          eos_token_id=None)
    audio = model.generate(input_ids=expected["input_ids"], generation_mode="audio", top_k=1, max_new_frames=2)
    assert text.shape[1] == expected["input_ids"].shape[1] + 3 and audio.frames.shape == (1, 2, 8)
    model.save_pretrained(resave)
    again = AutoModelForCausalLM.from_pretrained(resave, trust_remote_code=True)
    bf16 = AutoModelForCausalLM.from_pretrained(resave, trust_remote_code=True, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.depth_decoder.codebooks_head.dtype == torch.bfloat16
    bf16.generate(input_ids=expected["input_ids"], generation_mode="audio", top_k=1, max_new_frames=1)
    mapped = AutoModelForCausalLM.from_pretrained(resave, trust_remote_code=True, device_map="auto")
    with torch.no_grad():
        torch.testing.assert_close(mapped(input_ids=expected["input_ids"]).logits,
                                   again(input_ids=expected["input_ids"]).logits)
    print("REMOTE_OK")
    """
)


def test_remote_code_loads_offline_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = UniAudio2ForConditionalGeneration(tiny_uniaudio2_config()).eval()
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    assert {"modeling_uniaudio2.py", "configuration_uniaudio2.py", "generation_uniaudio2.py"} <= {
        p.name for p in model_dir.iterdir()
    }
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(0, 80, (1, 9), generator=generator),
        "audio_codes": torch.randint(0, 40, (1, 9, 8), generator=generator),
        "audio_codes_mask": torch.tensor([[False, False, True, True, True, True, False, False, False]]),
    }
    with torch.no_grad():
        inputs["logits"] = model(**inputs).logits
    torch.save(inputs, model_dir / "expected.pt")

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    script = workdir / "child.py"
    script.write_text(CHILD)
    # `-I` isolates the child from the repository checkout (no cwd / user site on sys.path).
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(model_dir), str(tmp_path / "resaved")],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REMOTE_OK" in result.stdout


def test_standard_speech_task_names_reach_our_pipelines(tmp_path):
    """`automatic-speech-recognition` / `text-to-speech` are saved with the model and load our pipelines."""
    import json

    import numpy as np
    from transformers import pipeline

    model = UniAudio2ForConditionalGeneration(tiny_uniaudio2_config()).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["custom_pipelines"]
    assert saved["automatic-speech-recognition"] == saved["audio-to-text"]
    assert saved["text-to-speech"] == saved["text-to-audio"]
    bundle = str(REPO_ROOT / "pretrained" / "tiny-uniaudio2")
    asr = pipeline("automatic-speech-recognition", model=bundle, trust_remote_code=True)
    tts = pipeline("text-to-speech", model=bundle, trust_remote_code=True)
    assert type(asr).__name__ == "UniAudio2AudioToTextPipeline"
    assert type(tts).__name__ == "UniAudio2TextToAudioPipeline"
    text = asr({"raw": np.zeros(24000, dtype=np.float32), "sampling_rate": 24000}, max_new_tokens=2)["text"]
    assert isinstance(text, str)
    assert tts("hi", seed=0, max_new_frames=4)["sampling_rate"] == 24000
