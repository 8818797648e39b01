"""The GPU check runs end to end at a tiny size on CPU, so it cannot rot before a GPU runs it."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks import load_script


@pytest.mark.parametrize(
    "name, want",
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.1),
        ("Some Future GPU", None),
    ],
)
def test_peak_by_device_name(name, want):
    assert load_script("gpu_check").peak_tflops(name, None) == want


def test_peak_option_wins():
    assert load_script("gpu_check").peak_tflops("NVIDIA H100 80GB HBM3", 500.0) == 500.0


def test_tiny_cpu_run_prints_one_json_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACE_REALIGN_CACHE", str(tmp_path / "cache"))
    load_script("gpu_check").main(["--tiny", "--device", "cpu", "--skip-vllm"])
    lines = [x for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["device"] == "cpu" and out["settings"]["bf16"] is False
    for model in ("tiny", "tiny-wide"):
        runs = out["train"][model]
        for which in ("trl-dpo", "naive-oracle-dpo", "trace"):
            assert "error" not in runs[which], runs[which]
            assert runs[which]["pairs_per_s"] > 0 and runs[which]["tokens_per_s"] > 0
            assert runs[which]["timed_steps"] == 2
            assert runs[which]["mfu"] is None  # no peak known for a CPU
        assert runs["trace"]["speed_vs_trl"] > 0
    impact = out["impact"]
    assert set(impact["time_s"]) == {"naive", "exact", "fd"}
    # the fast modes agree with the per-pair oracle (exact to float32 round-off, fd to its step)
    assert impact["rel_error_vs_naive"]["exact"] < 1e-5
    assert impact["rel_error_vs_naive"]["fd"] < 1e-2
    assert set(impact["targets_met"]) == {"fd_3x_faster_than_naive", "exact_1.5x_faster_than_naive"}
    gen = out["generation"]
    # every prompt generates up to max_new_tokens; the tiny random model rarely stops early
    assert 0 < gen["hf"]["tokens"] <= gen["prompts"] * gen["max_new_tokens"]
    assert gen["vllm"] is None
