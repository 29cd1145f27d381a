import os
from pathlib import Path

import pytest
import torch


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("UNIAUDIO2_SHARED_DIR", REPO_ROOT.parent / "shared"))
FIXTURES_DIR = SHARED_DIR / "fixtures"


def fixture_dir_or_skip(name: str) -> Path:
    """Return `../shared/fixtures/<name>` or skip the test with a clear message when it is absent."""
    path = FIXTURES_DIR / name
    if not path.is_dir():
        pytest.skip(f"reference fixtures not found at {path} (set UNIAUDIO2_SHARED_DIR to the shared/ folder)")
    return path


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
