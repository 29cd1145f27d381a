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
Give a trained tiny-default bundle a new codec decoder (SQ-codec + DiT), without its training work directory.

    python recipes/train_reasoning_codec.py --corpus outputs/tiny_corpus --output_dir outputs/codec_decoder \
        --tokenizer_dir outputs/codec_tokenizer --init_from pretrained/tiny-uniaudio2/codec --decoder_only true
    python recipes/rebundle_codec_decoder.py --bundle pretrained/tiny-uniaudio2 \
        --codec_decoder_from outputs/codec_decoder --output_dir outputs/tiny-uniaudio2-new

The new bundle keeps the bundle's LM, tokenizer, generation defaults, training log and card (or `--card`); its codec
is the one at `--codec_decoder_from`, accepted only if it tokenizes exactly as the bundle's codec (same encoders and
codebooks, so the LM's tokens stay valid). Its decoder's training summary is bundled as
`codec/decoder_training_summary.json`. `train_tiny_default.py --codec_decoder_from` does the same at the end of a run.
"""

import argparse
import sys
from pathlib import Path

import torch


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))


def rebundle(bundle_dir, codec_decoder_from, output_dir, card=None, storage_dtype=torch.float16) -> Path:
    """Write `bundle_dir` with the codec of `codec_decoder_from` to `output_dir` (atomically); returns `output_dir`."""
    from train_tiny_default import require_bundle, with_decoder_of
    from transformers import AutoTokenizer

    from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel
    from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration
    from uniaudio2.tiny_default import build_processor, save_bundle

    bundle_dir, output_dir = Path(bundle_dir), Path(output_dir)
    require_bundle(bundle_dir)
    if output_dir.resolve() == bundle_dir.resolve():
        raise ValueError("--output_dir must differ from --bundle (the bundle is read while the new one is written).")
    codec = ReasoningCodecModel.from_pretrained(str(bundle_dir / "codec")).eval()
    new_codec = with_decoder_of(codec, codec_decoder_from)
    model = UniAudio2ForConditionalGeneration.from_pretrained(str(bundle_dir)).eval()
    # The tokenizer files hold no remote code; trust_remote_code only lets AutoTokenizer read the bundle's config.
    tokenizer = AutoTokenizer.from_pretrained(str(bundle_dir), trust_remote_code=True)
    processor = build_processor(tokenizer, new_codec, model.config)

    extra_files = {}
    for name in ("training_log.jsonl", "codec/training_summary.json"):
        if (bundle_dir / name).is_file():
            extra_files[name] = bundle_dir / name
    summary = Path(codec_decoder_from) / "training_summary.json"
    if summary.is_file():
        extra_files["codec/decoder_training_summary.json"] = summary
    card = Path(card) if card else bundle_dir / "README.md"
    return save_bundle(model, processor, output_dir, card, extra_files, storage_dtype=storage_dtype)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="trained tiny-default bundle (e.g. pretrained/tiny-uniaudio2)")
    parser.add_argument("--codec_decoder_from", required=True,
                        help="codec whose decoder was retrained on the bundle codec's tokens (--decoder_only true)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--card", default=None, help="model card for the new bundle (default: the bundle's README.md)")
    parser.add_argument("--storage_dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    args = parser.parse_args(argv)
    storage_dtype = None if args.storage_dtype == "float32" else getattr(torch, args.storage_dtype)
    try:
        output = rebundle(args.bundle, args.codec_decoder_from, args.output_dir, args.card, storage_dtype)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    megabytes = sum(f.stat().st_size for f in output.rglob("*") if f.is_file()) / 2**20
    print(f"wrote {output} ({megabytes:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
