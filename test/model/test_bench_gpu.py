"""bench/bench_gpu.py runs end to end on the CPU with the tiny preset (so it is not a stub) and prints
JSON of the agreed shape; a variant that fails is reported in the JSON, not raised. No timing is asserted."""

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def bench_gpu():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("bench_gpu")
    finally:
        sys.path.remove(str(BENCH))


def run(bench_gpu, capsys, *extra: str) -> dict:
    argv = [
        "--preset",
        "motus-tiny",
        "--memory-preset",
        "motus-tiny",
        "--device",
        "cpu",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        *extra,
    ]
    assert bench_gpu.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_cpu_run_prints_the_agreed_json(bench_gpu, capsys, tmp_path):
    out = tmp_path / "gpu.json"
    report = run(bench_gpu, capsys, "--out", str(out))
    assert json.loads(out.read_text()) == report
    memory = report["memory_on_meta"]
    assert memory["weights_gb"] > 0 and memory["conditioning_cache_gb"] > 0
    assert all(value > 0 for value in memory["peak_activations_gb"].values())
    assert memory["model_total_gb"] >= memory["weights_gb"]
    assert isinstance(memory["within_target_text_pre_encoded"], bool)
    for key in ("counts_per_step", "counts_conditioning"):
        assert report[key]["gflop"] > 0 and report[key]["weight_mb"] > 0 and report[key]["aten_ops"] > 0
    assert report["parameters"]["total"] > 0
    assert set(report["latency"]) == {"vla", "joint"}
    for mode in ("vla", "joint"):
        result = report["latency"][mode]["eager"]
        assert result["ok"] is True, result
        assert result["chunk_ms"] > 0 and len(result["chunk_ms_all"]) == 1
        assert "meets_target" not in result  # the targets are for the 8B preset on a GPU


def test_a_failing_variant_is_reported_not_raised(bench_gpu, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this")

    monkeypatch.setattr(bench_gpu, "chunk_fn", broken)
    report = run(bench_gpu, capsys, "--modes", "vla")
    result = report["latency"]["vla"]["eager"]
    assert result["ok"] is False and "no kernel for this" in result["error"]


def test_bad_arguments_exit_with_one_line(bench_gpu, capsys):
    with pytest.raises(SystemExit):
        bench_gpu.main(["--preset", "motus-huge", "--device", "cpu"])
    assert "--preset/--memory-preset must be one of" in capsys.readouterr().err
