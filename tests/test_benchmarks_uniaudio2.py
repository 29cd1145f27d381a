"""The GPU smoke check and the full-size figures benchmark run: `gpu_smoke.py --dry-run` lists its checks,
`--device cpu` passes every check that means something on CPU, `benchmark_full_size.py --smoke` prints its figures."""

import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT


BENCHMARKS = REPO_ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import gpu_smoke  # noqa: E402


CHECKS = {name: cuda_only for name, _, _, cuda_only in gpu_smoke.CHECKS}
LINE = re.compile(r"^(?P<name>[a-z0-9_]+): (?P<status>PASS|FAIL|SKIP) (?P<detail>.*)$")
# Known defect, outside this test's files: a compiled audio decoding step of ONE item (what the text-to-audio pipeline
# generates) recompiles at every frame. `_generate_audio.run_rows` (generation_uniaudio2.py) slices the step rows with
# `.contiguous()`, which keeps the (prompt + n, 1) strides of a (1, 1) slice, and dynamo guards on strides; two items
# (tests/test_devices_uniaudio2.py) get real copies. `.clone(memory_format=torch.contiguous_format)` of the four step
# inputs fixes it (measured: the check then passes). Strict: this marker must go with the fix.
KNOWN_FAILURES = {}


def _run(*args, timeout=900):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=timeout)


def test_dry_run_lists_every_check():
    run = _run(BENCHMARKS / "gpu_smoke.py", "--dry-run")
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == list(CHECKS)
    assert lines[-1] == f"gpu_smoke: dry run, {len(CHECKS)} checks"
    assert all(line.endswith("[CUDA only]") == CHECKS[line.split(":")[0]] for line in lines[:-1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_a_one_line_error_and_exit_2():
    run = _run(BENCHMARKS / "gpu_smoke.py", timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and "CUDA is not available" in run.stderr


@pytest.fixture(scope="module")
def cpu_run():
    run = _run(BENCHMARKS / "gpu_smoke.py", "--device", "cpu")
    lines = [match.groupdict() for match in map(LINE.match, run.stdout.splitlines()) if match]
    return run, {line["name"]: line for line in lines}


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[name]))
     if name in KNOWN_FAILURES else name for name in CHECKS],
)
def test_cpu_mode_passes_what_cpu_can_check(cpu_run, name):
    run, results = cpu_run
    assert name in results, run.stdout[-3000:] + run.stderr[-3000:]
    expected = "SKIP" if CHECKS[name] else "PASS"
    assert results[name]["status"] == expected, results[name]["detail"]


def test_cpu_mode_summary_line_and_exit_code(cpu_run):
    run, results = cpu_run
    counts = {status: sum(r["status"] == status for r in results.values()) for status in ("PASS", "FAIL", "SKIP")}
    assert run.stdout.strip().splitlines()[-1] == (
        f"gpu_smoke: passed={counts['PASS']} failed={counts['FAIL']} skipped={counts['SKIP']}"
    )
    assert sum(counts.values()) == len(CHECKS)
    assert run.returncode == (1 if counts["FAIL"] else 0)
    # The full-size step is skipped on CPU, but its code ran on the small configuration.
    assert "the same step on the smoke configuration ran" in results["full_size_lora_step"]["detail"]


def test_full_size_benchmark_smoke_prints_its_figures(tmp_path):
    run = _run(BENCHMARKS / "benchmark_full_size.py", "--smoke", "--work_dir", tmp_path / "work",
               "--output", tmp_path / "figures.json")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    out = run.stdout
    assert re.search(r"^weights: [\d,]+ parameters in \d+ tensors", out, re.M), out
    for name in ("conversion", "loading"):
        assert re.search(rf"^{name}_peak_rss: [\d.]+ GB = [\d.]+x the weights", out, re.M), out
    assert re.search(r"^gpu_memory_method: FakeTensorMode .*MemTracker", out, re.M), out
    for name in ("lora_train_step", "eval_step"):
        assert re.search(rf"^{name}_peak_gpu: [\d.]+ GB \(2 x \d+ audio-dense rows.*\) ok$", out, re.M), out
    assert (tmp_path / "figures.json").is_file()
