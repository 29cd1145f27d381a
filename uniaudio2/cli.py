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
Command line interface (`uniaudio2 <command>`, also `python -m uniaudio2.cli <command>`).

    uniaudio2 demo                                   the trained tiny default on held-out examples
    uniaudio2 transcribe AUDIO... --model DIR        audio → text (also: caption, ask --question)
    uniaudio2 speak TEXT --model DIR -o out.wav      text → speech (generate --task TTA|TTM for sound/music)
    uniaudio2 encode AUDIO --model DIR -o codes.safetensors
    uniaudio2 decode codes.safetensors --model DIR -o out.wav
    uniaudio2 convert --checkpoint_path ... --config_path ... --output_dir ...
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_WAV = REPO_ROOT / "examples" / "hello.wav"
DEFAULT_MODEL_DIR = REPO_ROOT / "pretrained" / "tiny-uniaudio2"
HELDOUT_DIR = REPO_ROOT / "examples" / "heldout"


class CLIError(Exception):
    """An error reported to the user as one line, with exit status 2."""


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, so that a failure leaves no partial output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        write(tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise


def _write_wav(path: Path, audio, sampling_rate: int) -> None:
    import soundfile

    _atomic_write(path, lambda name: soundfile.write(name, audio, sampling_rate, subtype="PCM_16", format="WAV"))


def _load_model_dir(model_dir: str):
    if not Path(model_dir).is_dir():
        raise CLIError(f"model directory not found: {model_dir}")
    if not (Path(model_dir) / "config.json").is_file():
        raise CLIError(f"{model_dir} has no config.json: is it a saved UniAudio 2.0 model?")
    return model_dir


# ------------------------------------------------------------------------------------------------------ commands
def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER (jiwer): word edits summed over the pairs over the reference words, after `_normalize_text`."""
    import jiwer

    return jiwer.wer([_normalize_text(r) for r in references], [_normalize_text(h) for h in hypotheses])


def _normalize_text(text: str) -> str:
    return " ".join("".join(c if c.isalnum() or c == "'" else " " for c in text.lower()).split())


def _read_heldout(heldout_dir: Path) -> list[dict]:
    import json

    manifest = heldout_dir / "heldout.jsonl"
    if not manifest.is_file():
        raise CLIError(f"no held-out manifest at {manifest}")
    with open(manifest) as file:
        return [json.loads(line) for line in file if line.strip()]


def run_demo(args) -> int:
    """
    The trained tiny default: load it with the Auto classes offline, transcribe held-out wavs with
    `pipeline("audio-to-text")` (WER), speak held-out sentences to wav files with `pipeline("text-to-audio")`.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoProcessor, pipeline

    from .feature_extraction_uniaudio2 import read_audio_file

    output_dir = Path(args.output_dir)
    total = time.perf_counter()
    if args.untrained:
        from .tiny_default import build_tiny_default

        model_dir = build_tiny_default(output_dir / "tiny-uniaudio2-random", seed=args.seed)
        print(f"UniAudio 2.0 demo on an UNTRAINED tiny bundle built from seed {args.seed} in {model_dir}: its outputs "
              "are meaningless, this only shows the chain works.")
    else:
        model_dir = Path(args.model)
        if not (model_dir / "config.json").is_file():
            raise CLIError(
                f"no trained model at {model_dir}. Rebuild it with `python recipes/train_tiny_default.py "
                f"--output_dir {model_dir}` (a few hours on 2 CPU cores), or run `uniaudio2 demo --untrained`."
            )
        print(f"UniAudio 2.0 demo on the trained tiny default {model_dir} (model card: {model_dir / 'README.md'})")
    examples = _read_heldout(Path(args.heldout_dir))
    speech = [row for row in examples if row.get("kind", "speech") == "speech"][: args.num_examples]

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    parameters = sum(p.numel() for p in model.parameters()) + sum(
        p.numel() for p in processor.feature_extractor.codec.parameters()
    )
    print(f"[1/3] loaded {type(model).__name__} + {type(processor).__name__} (with the ReasoningCodec) through the Auto "
          f"classes, offline: {parameters / 1e6:.1f}M parameters ({time.perf_counter() - start:.1f}s)")

    start = time.perf_counter()
    asr = pipeline("audio-to-text", model=str(model_dir), trust_remote_code=True)
    references, hypotheses, audio_seconds = [], [], 0.0
    for row in speech:
        waveform, rate = read_audio_file(Path(args.heldout_dir) / row["audio"])
        audio_seconds += len(waveform) / rate
        hypothesis = asr({"array": waveform, "sampling_rate": rate}, task="ASR", max_new_tokens=args.max_new_tokens)["text"]
        references.append(row["text"])
        hypotheses.append(hypothesis.strip())
        print(f"      {row['audio']}: {hypothesis.strip()!r}  (reference: {row['text']!r})")
    elapsed = time.perf_counter() - start
    wer = word_error_rate(references, hypotheses)
    print(f"[2/3] pipeline('audio-to-text') on {len(speech)} held-out clips ({audio_seconds:.1f}s of audio): "
          f"WER {100 * wer:.1f}% ({elapsed:.1f}s, real-time factor {elapsed / max(audio_seconds, 1e-9):.2f})")

    start = time.perf_counter()
    tts = pipeline("text-to-audio", model=str(model_dir), trust_remote_code=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    generated_seconds = 0.0
    for index, row in enumerate(speech[: args.num_speak]):
        result = tts(row["text"], seed=args.seed + index)
        wav_path = output_dir / f"speech_{index}.wav"
        _write_wav(wav_path, result["audio"], result["sampling_rate"])
        seconds = len(result["audio"]) / result["sampling_rate"]
        generated_seconds += seconds
        print(f"      {row['text']!r} -> {wav_path} ({seconds:.2f}s)")
    elapsed = time.perf_counter() - start
    print(f"[3/3] pipeline('text-to-audio') spoke {min(len(speech), args.num_speak)} held-out sentences: "
          f"{generated_seconds:.1f}s of 24 kHz audio in {elapsed:.1f}s (real-time factor "
          f"{elapsed / max(generated_seconds, 1e-9):.2f}). Judge them with benchmarks/quality_tiny.py.")
    print(f"done in {time.perf_counter() - total:.1f}s")
    return 0


def run_audio_to_text(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import pipeline

    from .feature_extraction_uniaudio2 import read_audio_file

    model_dir = _load_model_dir(args.model)
    task = {"transcribe": args.task or "ASR", "caption": args.task or "audio_caption", "ask": "audio_understanding"}[
        args.command
    ]
    if args.command == "ask" and not args.question:
        raise CLIError("`ask` needs --question")
    clips = [(path, *read_audio_file(path)) for path in args.audio]
    pipe = pipeline("audio-to-text", model=model_dir, trust_remote_code=True)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    iterator = tqdm(clips, desc=args.command, disable=len(clips) < 2) if tqdm else clips
    for path, waveform, rate in iterator:
        result = pipe({"array": waveform, "sampling_rate": rate}, task=task, question=args.question, prompt=args.prompt,
                      chunk_length_s=args.chunk_length_s, max_new_tokens=args.max_new_tokens)
        print(f"{path}\t{result['text']}" if len(clips) > 1 else result["text"])
    return 0


def run_text_to_audio(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import pipeline

    if not args.text.strip():
        raise CLIError("the text is empty")
    model_dir = _load_model_dir(args.model)
    task = "TTS" if args.command == "speak" else args.task
    pipe = pipeline("text-to-audio", model=model_dir, trust_remote_code=True)
    kwargs = {"task": task, "seed": args.seed, "max_new_frames": args.max_new_frames}
    if args.instruction:
        kwargs["instruction"] = args.instruction
    result = pipe(args.text, **kwargs)
    _write_wav(Path(args.output), result["audio"], result["sampling_rate"])
    print(f"wrote {len(result['audio']) / result['sampling_rate']:.2f}s of audio to {args.output}")
    return 0


def _load_feature_extractor(model_dir: str):
    """The bundle's feature extractor, with its codec (AutoFeatureExtractor does not pass it the directory)."""
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=True)
    if not extractor.has_codec:
        extractor.set_codec_source(model_dir)
    return extractor


def run_encode(args) -> int:
    from safetensors.torch import save_file

    from .feature_extraction_uniaudio2 import read_audio_file

    model_dir = _load_model_dir(args.model)
    waveform, rate = read_audio_file(args.audio)
    extractor = _load_feature_extractor(model_dir)
    reasoning, reconstruction = extractor.encode(waveform, sampling_rate=rate)[0]
    tensors = {"reasoning_codes": reasoning.contiguous(), "reconstruction_codes": reconstruction.contiguous()}
    _atomic_write(Path(args.output), lambda name: save_file(tensors, name, metadata={"sampling_rate": str(rate)}))
    print(f"reasoning codes {tuple(reasoning.shape)}, reconstruction codes {tuple(reconstruction.shape)} → {args.output}")
    return 0


def run_decode(args) -> int:
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model_dir = _load_model_dir(args.model)
    if not Path(args.codes).is_file():
        raise CLIError(f"codes file not found: {args.codes}")
    try:
        tensors = load_file(args.codes)
    except (SafetensorError, OSError) as error:
        raise CLIError(f"could not read {args.codes}: {error}") from error
    if "reconstruction_codes" not in tensors:
        raise CLIError(f"{args.codes} has no 'reconstruction_codes' tensor")
    extractor = _load_feature_extractor(model_dir)
    generator = torch.Generator(device=extractor.codec.device).manual_seed(args.seed)
    audio = extractor.decode([tensors["reconstruction_codes"]], generator=generator, num_steps=args.num_steps)[0]
    _write_wav(Path(args.output), audio, extractor.sampling_rate)
    print(f"wrote {len(audio) / extractor.sampling_rate:.2f}s of audio to {args.output}")
    return 0


def run_convert(argv: list[str]) -> int:
    """Run the LM conversion script (or the codec's with `--codec`) with the remaining arguments."""
    import runpy

    codec = "--codec" in argv
    rest = [arg for arg in argv if arg != "--codec"]
    script = REPO_ROOT / "conversion_scripts" / ("convert_reasoning_codec_to_hf.py" if codec else "convert_uniaudio2_to_hf.py")
    if not script.is_file():
        raise CLIError(f"conversion script not found at {script} (install uniaudio2 from a source checkout)")
    sys.argv = [str(script), *rest]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_status:
        return int(exit_status.code or 0)
    return 0


# ---------------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniaudio2", description="UniAudio 2.0 for Hugging Face Transformers.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the trained tiny default: transcribe and speak held-out examples")
    demo.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="trained bundle (default: the shipped tiny one)")
    demo.add_argument("--heldout_dir", default=str(HELDOUT_DIR), help="directory with heldout.jsonl and its wavs")
    demo.add_argument("--output_dir", default="outputs/demo")
    demo.add_argument("--num_examples", type=int, default=8, help="held-out clips to transcribe")
    demo.add_argument("--num_speak", type=int, default=3, help="held-out sentences to speak")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--max_new_tokens", type=int, default=40)
    demo.add_argument("--untrained", action="store_true", help="use a random-weight tiny bundle built from --seed")
    demo.set_defaults(func=run_demo)

    for name, help_text in (("transcribe", "speech → text (ASR)"), ("caption", "audio → caption"),
                            ("ask", "answer a question about the audio")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("audio", nargs="+", help="audio file(s)")
        command.add_argument("--model", required=True, help="saved UniAudio 2.0 directory")
        command.add_argument("--task", default=None, help="override the task (e.g. music_caption, lyric_recognition)")
        command.add_argument("--question", default=None)
        command.add_argument("--prompt", default=None, help="task prompt replacing the default one")
        command.add_argument("--chunk_length_s", type=float, default=None, help="split long audio into chunks")
        command.add_argument("--max_new_tokens", type=int, default=256)
        command.set_defaults(func=run_audio_to_text)

    for name, help_text in (("speak", "text → speech (TTS)"), ("generate", "text → speech, sound or music")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("text")
        command.add_argument("--model", required=True)
        command.add_argument("-o", "--output", required=True, help="output wav")
        command.add_argument("--task", default="TTS", choices=["TTS", "InstructTTS", "TTA", "TTM", "LTS"])
        command.add_argument("--instruction", default=None, help="style caption for InstructTTS")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--max_new_frames", type=int, default=None)
        command.set_defaults(func=run_text_to_audio)

    encode = commands.add_parser("encode", help="audio → codec tokens (safetensors)")
    encode.add_argument("audio")
    encode.add_argument("--model", required=True)
    encode.add_argument("-o", "--output", required=True)
    encode.set_defaults(func=run_encode)

    decode = commands.add_parser("decode", help="codec tokens (safetensors) → wav")
    decode.add_argument("codes")
    decode.add_argument("--model", required=True)
    decode.add_argument("-o", "--output", required=True)
    decode.add_argument("--seed", type=int, default=0)
    decode.add_argument("--num_steps", type=int, default=None)
    decode.set_defaults(func=run_decode)

    commands.add_parser(
        "convert", add_help=False,
        help="convert original checkpoints: `convert [--codec] ARGS` passes ARGS to conversion_scripts/convert_*.py",
    )

    for name, help_text in (("finetune", "LoRA fine-tuning with Trainer + PEFT (see recipes/README.md)"),
                            ("train", "four-stage training recipe (see recipes/README.md)")):
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


TRAINING_COMMANDS = {"finetune": "finetune_main", "train": "train_main"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "convert":
        try:
            return run_convert(argv[1:])
        except CLIError as error:
            print(f"uniaudio2 convert: error: {error}", file=sys.stderr)
            return 2
    if argv and argv[0] in TRAINING_COMMANDS:
        # The training entry points parse their own (HfArgumentParser) arguments.
        from . import training_uniaudio2

        return int(getattr(training_uniaudio2, TRAINING_COMMANDS[argv[0]])(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as error:
        print(f"uniaudio2 {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:
        print(f"uniaudio2 {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
