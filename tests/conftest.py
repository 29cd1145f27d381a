import os
from pathlib import Path

import pytest
import torch


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("UNIAUDIO2_SHARED_DIR", REPO_ROOT.parent / "shared"))
FIXTURES_DIR = SHARED_DIR / "fixtures"


def fixture_dir_or_skip(name: str) -> Path:
    """Return `../shared/fixtures/<name>` or skip the test with a clear message when it is absent."""
    path = FIXTURES_DIR / name
    if not path.is_dir():
        pytest.skip(f"reference fixtures not found at {path} (set UNIAUDIO2_SHARED_DIR to the shared/ folder)")
    return path


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


def tiny_uniaudio2_config(**overrides):
    """A tiny UniAudio2Config (random weights are fine for shape/consistency tests)."""
    from uniaudio2.configuration_uniaudio2 import UniAudio2Config

    kwargs = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_understanding_layers=2,
        num_backbone_layers=2,
        num_generation_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        reasoning_vocab_size=16,
        reconstruction_vocab_size=24,
        reasoning_bos_token_id=12,
        reasoning_eos_token_id=13,
        reasoning_pad_token_id=15,
        reconstruction_bos_token_id=37,
        reconstruction_eos_token_id=36,
        reconstruction_pad_token_id=38,
        bos_token_id=80,
        eos_token_id=81,
        pad_token_id=82,
        text_pad_token_id=82,
        depth_decoder_config=dict(
            hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8
        ),
    )
    kwargs.update(overrides)
    return UniAudio2Config(**kwargs)


def random_grid(batch_size=2, seq_len=12, audio_rows=slice(3, 8), vocab_size=80, audio_vocab_size=40, seed=0):
    """A random grid: text rows everywhere except `audio_rows`."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    audio_codes = torch.randint(0, audio_vocab_size, (batch_size, seq_len, 8), generator=generator)
    audio_codes_mask = torch.zeros(batch_size, seq_len, dtype=torch.bool)
    audio_codes_mask[:, audio_rows] = True
    return {"input_ids": input_ids, "audio_codes": audio_codes, "audio_codes_mask": audio_codes_mask}


@pytest.fixture
def tiny_model():
    from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration

    torch.manual_seed(0)
    return UniAudio2ForConditionalGeneration(tiny_uniaudio2_config()).eval()


@pytest.fixture
def model(tiny_model):
    """`tiny_model` with the text pad and EOS ids generation needs."""
    tiny_model.generation_config.pad_token_id = 82
    tiny_model.generation_config.eos_token_id = 81
    return tiny_model


class StandInAudioEncoder:
    """
    Deterministic stand-in for `ReasoningCodecModel.encode` (tests only): waveform → reasoning codes `(8, T5)` and
    reconstruction codes `(8, T12.5)` at the codec's frame rates, derived from the samples. Counts its calls.
    """

    def __init__(self, reasoning_codes: int = 12, reconstruction_codes: int = 20):
        self.reasoning_codes = reasoning_codes
        self.reconstruction_codes = reconstruction_codes
        self.calls = 0

    def __call__(self, waveform, sampling_rate):
        self.calls += 1
        samples = torch.as_tensor(waveform, dtype=torch.float64).reshape(-1)
        seconds = samples.numel() / sampling_rate
        level = int(samples.abs().sum().item() * 1000)

        def codes(rate, vocab):
            frames = int(seconds * rate) + 1
            grid = torch.arange(8).unsqueeze(1) * 7 + torch.arange(frames).unsqueeze(0) * 3 + level
            return grid % vocab

        return codes(5, self.reasoning_codes), codes(12.5, self.reconstruction_codes)
