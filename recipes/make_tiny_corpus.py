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
Synthesize the offline training corpus of the tiny default model, reproducibly from a seed.

* **Speech** (ASR / TTS): sentences drawn from a small English grammar (about 120 words), spoken by the Debian
  engines espeak-ng (several voices, speeds and pitches) and flite (when installed). Sentences are unique and
  every sentence belongs to exactly one split, so validation and test sentences are never heard in training.
* **Sound** (audio captioning / text-to-audio): tones, chirps, noises, plucked notes and beep trains rendered with
  sox, each with a templated caption that describes it exactly.

Layout of `--output_dir`:

    train.jsonl  validation.jsonl  test.jsonl  corpus_info.json  wavs/<split>/<id>.wav   (24 kHz mono 16-bit)

Each jsonl line: `{"id", "split", "kind": "speech"|"sound", "audio": "wavs/...", "text", "voice"}`.

    python recipes/make_tiny_corpus.py --output_dir outputs/tiny_corpus --seed 0

Needs `espeak-ng` and `sox` (`apt-get install espeak-ng sox`; `flite` is optional). The corpus is written to a
temporary directory next to `--output_dir` and moved into place when complete.
"""

import argparse
import json
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from uniaudio2.utils_uniaudio2 import atomic_directory


SAMPLING_RATE = 24000

# ---------------------------------------------------------------------------------------------------------------------
# Sentence grammar
# ---------------------------------------------------------------------------------------------------------------------

ADJECTIVES = ["red", "blue", "green", "small", "big", "old", "young", "happy", "quiet", "loud", "warm", "cold",
              "dark", "bright", "tired", "clever"]
NOUNS = ["cat", "dog", "bird", "horse", "girl", "boy", "man", "woman", "teacher", "doctor", "farmer", "child",
         "fish", "mouse", "king", "queen"]
PLACES = ["the garden", "the kitchen", "the river", "the market", "the school", "the forest", "the city",
          "the village", "the station", "the library"]
VERBS = ["sees", "likes", "finds", "follows", "helps", "calls", "watches", "meets", "paints", "carries"]
OBJECTS = ["a book", "a ball", "the door", "a letter", "the window", "a cup of tea", "a yellow hat", "the green box",
           "a piece of bread", "the small boat"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
TIMES = ["today", "every morning", "at night", "on sunday", "after lunch", "before dinner"]


def _sentence(rng: random.Random) -> str:
    adjective, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
    template = rng.randrange(6)
    if template == 0:
        return f"the {adjective} {noun} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    if template == 1:
        return f"the {noun} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} in {rng.choice(PLACES)}"
    if template == 2:
        return f"{rng.choice(NUMBERS)} {adjective} {noun}s walk to {rng.choice(PLACES)} {rng.choice(TIMES)}"
    if template == 3:
        return f"a {adjective} {noun} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TIMES)}"
    if template == 4:
        return f"in {rng.choice(PLACES)} the {noun} {rng.choice(VERBS)} {rng.choice(NUMBERS)} {rng.choice(NOUNS)}s"
    return f"the {noun} is {adjective} {rng.choice(TIMES)}"


def make_sentences(count: int, rng: random.Random) -> list[str]:
    """`count` distinct sentences of the grammar."""
    sentences, seen = [], set()
    for _ in range(count * 50):
        sentence = _sentence(rng)
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
            if len(sentences) == count:
                return sentences
    raise ValueError(f"The grammar gave only {len(sentences)} distinct sentences, {count} were asked for.")


# ---------------------------------------------------------------------------------------------------------------------
# Speech engines
# ---------------------------------------------------------------------------------------------------------------------

ESPEAK_VOICES = ["en-us", "en-us+f3", "en-us+m3", "en-gb-x-rp+f2"]
FLITE_VOICES = ["kal16", "slt", "rms"]


def available_voices(use_flite: bool = True) -> list[str]:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: run `apt-get install espeak-ng` (Debian/Ubuntu).")
    voices = [f"espeak-ng:{voice}" for voice in ESPEAK_VOICES]
    if use_flite and shutil.which("flite") is not None:
        voices += [f"flite:{voice}" for voice in FLITE_VOICES]
    return voices


def _read_resampled(path: Path) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLING_RATE:
        audio = soxr.resample(audio, rate, SAMPLING_RATE)
    return audio


def _normalize(audio: np.ndarray, peak: float = 0.8) -> np.ndarray:
    audio = audio.astype(np.float32)
    return audio * (peak / max(float(np.abs(audio).max()), 1e-4))


def synthesize_speech(text: str, voice: str, rate: int, pitch: int, path: Path) -> None:
    """Speak `text` with `voice` (`engine:name`) into a 24 kHz mono wav at `path`."""
    engine, name = voice.split(":", 1)
    raw = path.with_suffix(".raw.wav")
    if engine == "espeak-ng":
        command = ["espeak-ng", "-v", name, "-s", str(rate), "-p", str(pitch), "-w", str(raw), text]
    else:
        stretch = f"{150 / rate:.3f}"
        command = ["flite", "-voice", name, "--setf", f"duration_stretch={stretch}", "-t", text, "-o", str(raw)]
    subprocess.run(command, check=True, capture_output=True)
    audio = _read_resampled(raw)
    raw.unlink()
    sf.write(str(path), _normalize(audio), SAMPLING_RATE, subtype="PCM_16")


# ---------------------------------------------------------------------------------------------------------------------
# Sounds
# ---------------------------------------------------------------------------------------------------------------------

TONE_FREQUENCIES = {"low": 220, "middle": 440, "high": 880}
NOTES = {"C3": "a low", "A3": "a low", "E4": "a middle", "A4": "a middle", "C5": "a high", "E5": "a high"}


def _sound(rng: random.Random) -> tuple[list[str], str]:
    """sox `synth` arguments and the caption that describes them."""
    kind = rng.randrange(5)
    duration = rng.choice([1, 2])
    seconds = "one second" if duration == 1 else "two seconds"
    if kind == 0:
        pitch = rng.choice(list(TONE_FREQUENCIES))
        wave = rng.choice(["sine", "square"])
        return ["synth", str(duration), wave, str(TONE_FREQUENCIES[pitch])], f"a steady {pitch} {wave} tone lasting {seconds}"
    if kind == 1:
        rising = rng.random() < 0.5
        span = "200-2000" if rising else "2000-200"
        return ["synth", str(duration), "sine", span], f"a {'rising' if rising else 'falling'} whistle lasting {seconds}"
    if kind == 2:
        noise = rng.choice(["white", "pink", "brown"])
        return ["synth", str(duration), f"{noise}noise"], f"{noise} noise lasting {seconds}"
    if kind == 3:
        note = rng.choice(list(NOTES))
        return ["synth", "1.5", "pluck", note], f"{NOTES[note]} plucked string note"
    count = rng.choice([2, 3, 4])
    words = {2: "two", 3: "three", 4: "four"}
    pitch = rng.choice(list(TONE_FREQUENCIES))
    return (
        ["synth", "0.15", "sine", str(TONE_FREQUENCIES[pitch]), "pad", "0", "0.25", "repeat", str(count - 1)],
        f"{words[count]} short {pitch} beeps",
    )


def synthesize_sound(arguments: list[str], path: Path) -> None:
    if shutil.which("sox") is None:
        raise RuntimeError("sox is not installed: run `apt-get install sox`.")
    command = ["sox", "-n", "-r", str(SAMPLING_RATE), "-c", "1", "-b", "16", str(path), *arguments, "gain", "-n", "-3"]
    subprocess.run(command, check=True, capture_output=True)


# ---------------------------------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------------------------------


def plan_corpus(seed: int, num_train: int, num_validation: int, num_test: int, num_sounds: int, voices: list[str]):
    """All rows of the corpus (without audio), deterministic for a seed and a voice list."""
    rng = random.Random(seed)
    sentences = make_sentences(num_train + num_validation + num_test, rng)
    splits = {
        "test": sentences[:num_test],
        "validation": sentences[num_test : num_test + num_validation],
        "train": sentences[num_test + num_validation :],
    }
    rows = []
    for split, split_sentences in splits.items():
        for index, text in enumerate(split_sentences):
            voice = voices[rng.randrange(len(voices))]
            rows.append({
                "id": f"{split}-speech-{index:05d}", "split": split, "kind": "speech", "text": text, "voice": voice,
                "rate": rng.randrange(140, 176), "pitch": rng.randrange(35, 66),
            })
    sound_split = {"test": max(1, num_sounds // 10), "validation": max(1, num_sounds // 10)}
    sound_split["train"] = num_sounds - sound_split["test"] - sound_split["validation"]
    for split, count in sound_split.items():
        for index in range(count):
            arguments, caption = _sound(rng)
            rows.append({
                "id": f"{split}-sound-{index:05d}", "split": split, "kind": "sound", "text": caption, "voice": "sox",
                "sox": arguments,
            })
    return rows


def render(row: dict, output_dir: Path) -> dict:
    path = output_dir / "wavs" / row["split"] / f"{row['id']}.wav"
    if row["kind"] == "speech":
        synthesize_speech(row["text"], row["voice"], row["rate"], row["pitch"], path)
    else:
        synthesize_sound(row["sox"], path)
    info = sf.info(str(path))
    return {
        "id": row["id"], "split": row["split"], "kind": row["kind"], "audio": str(path.relative_to(output_dir)),
        "text": row["text"], "voice": row["voice"], "duration": round(info.frames / info.samplerate, 3),
    }


def make_corpus(
    output_dir,
    seed: int = 0,
    num_train: int = 4000,
    num_validation: int = 100,
    num_test: int = 100,
    num_sounds: int = 800,
    use_flite: bool = True,
    num_workers: int = 2,
    show_progress: bool = True,
) -> Path:
    """Render the corpus to `output_dir` (atomically: a temporary directory is moved into place at the end)."""
    from tqdm.auto import tqdm

    output_dir = Path(output_dir)
    voices = available_voices(use_flite)
    rows = plan_corpus(seed, num_train, num_validation, num_test, num_sounds, voices)
    with atomic_directory(output_dir) as tmp_dir:
        for split in ("train", "validation", "test"):
            (tmp_dir / "wavs" / split).mkdir(parents=True)
        with ThreadPoolExecutor(num_workers) as pool:
            rendered = list(tqdm(pool.map(lambda row: render(row, tmp_dir), rows), total=len(rows),
                                 desc="Synthesizing", disable=not show_progress))
        for split in ("train", "validation", "test"):
            with open(tmp_dir / f"{split}.jsonl", "w") as file:
                for row in rendered:
                    if row["split"] == split:
                        file.write(json.dumps(row) + "\n")
        info = {
            "seed": seed, "voices": voices, "sampling_rate": SAMPLING_RATE,
            "counts": {split: sum(row["split"] == split for row in rendered) for split in ("train", "validation", "test")},
            "hours": round(sum(row["duration"] for row in rendered) / 3600, 3),
        }
        (tmp_dir / "corpus_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return output_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_train", type=int, default=4000, help="training sentences")
    parser.add_argument("--num_validation", type=int, default=100)
    parser.add_argument("--num_test", type=int, default=100)
    parser.add_argument("--num_sounds", type=int, default=800, help="sound clips over all splits")
    parser.add_argument("--no_flite", action="store_true", help="espeak-ng voices only")
    parser.add_argument("--num_workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        path = make_corpus(args.output_dir, args.seed, args.num_train, args.num_validation, args.num_test,
                           args.num_sounds, not args.no_flite, args.num_workers)
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.loads((path / "corpus_info.json").read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
