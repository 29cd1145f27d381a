"""The Python examples of the README run as written (against the converted reference fixture)."""

import re
import subprocess
import sys

from conftest import REPO_ROOT, fixture_dir_or_skip


def test_readme_python_examples_run(tmp_path):
    fixture = fixture_dir_or_skip("reference_llm")
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has no python example"
    converted = tmp_path / "uniaudio2-tiny"
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "conversion_scripts" / "convert_uniaudio2_to_hf.py"),
         "--checkpoint_path", str(fixture / "checkpoint.pt"), "--config_path", str(fixture / "config.json"),
         "--output_dir", str(converted)],
        check=True, capture_output=True,
    )
    code = "\n".join(blocks).replace("/tmp/uniaudio2-tiny", str(converted))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
