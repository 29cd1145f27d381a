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
"""The scoring helpers of `benchmarks/quality_tiny.py` (the judges themselves are dev-only and not run here)."""

import importlib.util
from pathlib import Path

import pytest


def _quality_module():
    pytest.importorskip("jiwer")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_tiny.py"
    spec = importlib.util.spec_from_file_location("quality_tiny", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_words_heard_ignores_hallucinated_insertions_that_inflate_wer():
    quality = _quality_module()
    lowercase = str.lower
    references = ["four young girls walk to the kitchen", "ten green birds"]
    # First hypothesis: 5 of 7 words right, then a hallucinated loop of 12 words; second: 1 of 3 right.
    hypotheses = ["four cold girls walk to the village" + " you're like" * 6, "two young birds"]
    result = quality.word_error_rate(references, hypotheses, lowercase)
    assert result["reference_words"] == 10
    assert (result["substitutions"], result["deletions"], result["insertions"]) == (4, 0, 12)
    assert result["wer"] == pytest.approx(160.0)
    assert result["words_heard"] == pytest.approx(60.0)
    # A perfect transcript hears every word; an empty one none (all deletions).
    assert quality.word_error_rate(references, references, lowercase)["words_heard"] == pytest.approx(100.0)
    assert quality.word_error_rate(references, ["", ""], lowercase)["words_heard"] == pytest.approx(0.0)
