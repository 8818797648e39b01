"""Two CPU processes with DDP (gloo) through torchrun: the trainer's wiring under distribution."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .rows import weighted_rows, write_rows


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_smoke(tmp_path, tiny_model_dir):
    weighted = write_rows(tmp_path / "w.jsonl", weighted_rows())
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRACE_REALIGN_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "-m", "trace_realign.cli", "train", "--model", str(tiny_model_dir), "--weighted", weighted,
        "--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size", "3", "--use_cpu",
        "--ddp_backend", "gloo", "--lora_r", "4", "--logging_steps", "1", "--disable_tqdm", "true",
        "--save_strategy", "no",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["global_step"] == 3
    # two processes of 3 examples each: one update step covers 6 of the 12 examples, half an epoch
    steps = [h for h in summary["log_history"] if "loss" in h]
    assert steps[0]["epoch"] == pytest.approx(0.5)
    assert all(h["invert/weight"] > 0 and "kl" in h for h in steps)
    assert (out / "adapter_model.safetensors").exists()
    # the reference log-probs were computed once (by the main process) and read from the cache by the other
    assert summary["reference"]["precomputed"] == 16
