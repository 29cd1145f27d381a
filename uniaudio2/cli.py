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
    uniaudio2 transcribe AUDIO... [--model DIR]      audio → text (also: caption, ask --question)
    uniaudio2 speak TEXT [--model DIR] -o out.wav    text → speech (generate --task TTA|TTM for sound/music)
    uniaudio2 encode AUDIO [--model DIR] -o codes.safetensors
    uniaudio2 decode codes.safetensors [--model DIR] -o out.wav
    uniaudio2 convert --checkpoint_path ... --config_path ... --output_dir ...

Without `--model` a command uses the shipped tiny bundle (`pretrained/tiny-uniaudio2`). The model directory and
the `-o` path are checked before anything is loaded; outputs (`.wav`, `.flac`, `.ogg`, `.mp3` by suffix) are written
through a temporary file, so a failure or a kill never leaves a partial file at the user's path.
"""

import argparse
import os
import stat
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


# Output formats of the audio commands, chosen by the suffix of `-o` (libsndfile's names: format, subtype).
AUDIO_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
                 ".mp3": ("MP3", "MPEG_LAYER_III")}


def _audio_formats() -> dict:
    """The formats of [`AUDIO_FORMATS`] that this libsndfile can write."""
    import soundfile

    available = soundfile.available_formats()
    return {suffix: spec for suffix, spec in AUDIO_FORMATS.items() if spec[0] in available}


def check_output_path(path, suffixes) -> Path:
    """
    Check, before any expensive work, that `path` can be written as an output file with one of `suffixes`: it is not
    a directory, its suffix is known, and its folder (or the nearest existing folder above it, under which the missing
    ones will be created) accepts a new file (probed by creating and removing one, which also works for root and
    read-only file systems). Raises [`CLIError`] naming `path`.
    """
    path = Path(path)
    if path.is_dir():
        raise CLIError(f"-o {path} is a directory: give a file name, e.g. {path / ('out' + suffixes[0])}")
    if path.suffix.lower() not in suffixes:
        raise CLIError(f"-o {path}: unsupported file type {path.suffix or '(none)'!r}; use one of {', '.join(suffixes)}")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise CLIError(f"cannot write {path}: {folder} is not a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as error:
        raise CLIError(f"cannot write {path}: {folder} is not writable ({error.strerror})") from error
    os.close(handle)
    os.remove(probe)
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    """
    Write the finished `data` (outputs are encoded in memory first) to a temporary file in `path`'s folder and move
    it over `path` when complete: a failure or a kill leaves `path` as it was (at worst, a kill during the few
    milliseconds of the write leaves a hidden `.NAME.*.tmp` beside it). The file gets the mode a plain
    `open(path, "w")` gives: an existing file's, else `0o666` less the umask. Errors name `path`, not the temporary file.
    """
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            mode = stat.S_IMODE(path.stat().st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(handle, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view):]
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(tmp_name, path)
    except OSError as error:
        raise CLIError(f"could not write {path}: {error.strerror or error}") from error
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.remove(tmp_name)


def _write_audio(path: Path, audio, sampling_rate: int) -> None:
    """Write `audio` in the format of `path`'s suffix (see [`AUDIO_FORMATS`]), encoded in memory first."""
    import io

    import soundfile

    audio_format, subtype = _audio_formats()[Path(path).suffix.lower()]
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sampling_rate, subtype=subtype, format=audio_format)
    _atomic_write(path, buffer.getvalue())


def _check_audio_output(path) -> Path:
    return check_output_path(path, tuple(_audio_formats()))


def _check_safetensors(path: Path, what: str) -> None:
    """Raise a [`CLIError`] naming `path` when it is missing or not a complete safetensors file (e.g. truncated)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CLIError(f"{what} weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as error:
        raise CLIError(f"{path} is not a complete safetensors file ({error}): re-download or re-convert it") from error


def _load_model_dir(model_dir) -> str:
    """
    Check a saved bundle before loading anything: its config, its LM weights and, when the processor names a codec
    subfolder, the codec's config and weights. Raises [`CLIError`] naming the missing or broken file.
    """
    import json

    directory = Path(model_dir)
    if not directory.is_dir():
        raise CLIError(f"model directory not found: {model_dir}")
    if not (directory / "config.json").is_file():
        raise CLIError(f"{model_dir} has no config.json: is it a saved UniAudio 2.0 model?")
    if not (directory / "model.safetensors.index.json").is_file():
        _check_safetensors(directory / "model.safetensors", "model")
    processor_config = directory / "processor_config.json"
    if processor_config.is_file():
        try:
            extractor = json.loads(processor_config.read_text()).get("feature_extractor", {})
        except json.JSONDecodeError as error:
            raise CLIError(f"{processor_config} is not valid JSON ({error})") from error
        codec_dir = directory / extractor.get("codec_subfolder", "codec")
        if not (codec_dir / "config.json").is_file():
            raise CLIError(f"codec config not found: {codec_dir / 'config.json'}")
        _check_safetensors(codec_dir / "model.safetensors", "codec")
    return str(directory)


def _read_audio(path):
    """`read_audio_file`, after checking that a wav is as long as its header says (libsndfile reads a cut one silently)."""
    from .feature_extraction_uniaudio2 import read_audio_file
    from .utils_uniaudio2 import check_wav_complete

    if Path(path).is_file():
        check_wav_complete(path)
    return read_audio_file(path)


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
        _write_audio(wav_path, result["audio"], result["sampling_rate"])
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

    model_dir = _load_model_dir(args.model)
    task = getattr(args, "task", None) or COMMAND_TASKS[args.command]
    question = getattr(args, "question", None)
    clips = [(path, *_read_audio(path)) for path in args.audio]
    pipe = pipeline("audio-to-text", model=model_dir, trust_remote_code=True)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    iterator = tqdm(clips, desc=args.command, disable=len(clips) < 2) if tqdm else clips
    for path, waveform, rate in iterator:
        result = pipe({"array": waveform, "sampling_rate": rate}, task=task, question=question, prompt=args.prompt,
                      chunk_length_s=args.chunk_length_s, max_new_tokens=args.max_new_tokens)
        print(f"{path}\t{result['text']}" if len(clips) > 1 else result["text"])
    return 0


def run_text_to_audio(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import pipeline

    if not args.text.strip():
        raise CLIError("the text is empty")
    if args.command == "speak":
        task = "InstructTTS" if args.instruction else "TTS"
    else:
        task = args.task
        if task == "InstructTTS" and not args.instruction:
            raise CLIError("--task InstructTTS needs --instruction (the style caption)")
        if args.instruction and task != "InstructTTS":
            raise CLIError(f"--instruction only applies to --task InstructTTS, not {task}")
    output = _check_audio_output(args.output)
    model_dir = _load_model_dir(args.model)
    pipe = pipeline("text-to-audio", model=model_dir, trust_remote_code=True)
    kwargs = {"task": task, "seed": args.seed, "max_new_frames": args.max_new_frames}
    if args.instruction:
        kwargs["instruction"] = args.instruction
    result = pipe(args.text, **kwargs)
    _write_audio(output, result["audio"], result["sampling_rate"])
    print(f"wrote {len(result['audio']) / result['sampling_rate']:.2f}s of audio to {output}")
    return 0


def _load_feature_extractor(model_dir: str):
    """The bundle's feature extractor, with its codec (AutoFeatureExtractor does not pass it the directory)."""
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=True)
    if not extractor.has_codec:
        extractor.set_codec_source(model_dir)
    return extractor


def run_encode(args) -> int:
    from safetensors.torch import save

    output = check_output_path(args.output, (".safetensors",))
    model_dir = _load_model_dir(args.model)
    waveform, rate = _read_audio(args.audio)
    extractor = _load_feature_extractor(model_dir)
    reasoning, reconstruction = extractor.encode(waveform, sampling_rate=rate)[0]
    tensors = {"reasoning_codes": reasoning.contiguous(), "reconstruction_codes": reconstruction.contiguous()}
    _atomic_write(output, save(tensors, metadata={"sampling_rate": str(rate)}))
    print(f"reasoning codes {tuple(reasoning.shape)}, reconstruction codes {tuple(reconstruction.shape)} → {output}")
    return 0


def run_decode(args) -> int:
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    output = _check_audio_output(args.output)
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
    _write_audio(output, audio, extractor.sampling_rate)
    print(f"wrote {len(audio) / extractor.sampling_rate:.2f}s of audio to {output}")
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
COMMAND_TASKS = {"transcribe": "ASR", "caption": "audio_caption", "ask": "audio_understanding"}
"""The task each audio → text command runs by default."""
COMMAND_TASK_CHOICES = {"transcribe": ("ASR", "lyric_recognition"), "caption": ("audio_caption", "music_caption")}
"""The `--task` values each audio → text command accepts (`ask` always answers `--question`)."""
GENERATE_TASKS = ("TTS", "InstructTTS", "TTA", "TTM", "LTS")
"""The `--task` values of `generate`."""


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

    model_help = f"saved UniAudio 2.0 directory (default: the shipped tiny bundle, {DEFAULT_MODEL_DIR})"
    for name, help_text in (("transcribe", "speech → text (ASR)"), ("caption", "audio → caption"),
                            ("ask", "answer a question about the audio")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("audio", nargs="+", help="audio file(s)")
        command.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help=model_help)
        if name in COMMAND_TASK_CHOICES:
            command.add_argument("--task", default=COMMAND_TASKS[name], choices=COMMAND_TASK_CHOICES[name])
        else:
            command.add_argument("--question", required=True, help="the question about the audio")
        command.add_argument("--prompt", default=None, help="task prompt replacing the default one")
        command.add_argument("--chunk_length_s", type=float, default=None, help="split long audio into chunks")
        command.add_argument("--max_new_tokens", type=int, default=256)
        command.set_defaults(func=run_audio_to_text)

    for name, help_text in (("speak", "text → speech (TTS; InstructTTS with --instruction)"),
                            ("generate", "text → speech, sound or music (--task)")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("text")
        command.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help=model_help)
        command.add_argument("-o", "--output", required=True,
                             help=f"output audio file ({', '.join(AUDIO_FORMATS)}, by its suffix)")
        if name == "generate":
            command.add_argument("--task", required=True, choices=GENERATE_TASKS)
        command.add_argument("--instruction", default=None, help="style caption (InstructTTS)")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--max_new_frames", type=int, default=None)
        command.set_defaults(func=run_text_to_audio)

    encode = commands.add_parser("encode", help="audio → codec tokens (safetensors)")
    encode.add_argument("audio")
    encode.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help=model_help)
    encode.add_argument("-o", "--output", required=True, help="output .safetensors file")
    encode.set_defaults(func=run_encode)

    decode = commands.add_parser("decode", help="codec tokens (safetensors) → audio file")
    decode.add_argument("codes")
    decode.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help=model_help)
    decode.add_argument("-o", "--output", required=True,
                        help=f"output audio file ({', '.join(AUDIO_FORMATS)}, by its suffix)")
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
