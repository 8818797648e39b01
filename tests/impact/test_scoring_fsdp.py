"""Scoring under the environment `accelerate launch --config_file configs/accelerate/fsdp-lora.yaml`
sets (two CPU processes, gloo): still shards the pairs and gathers them, and gives one process'
weights. Scoring never shards the model: each process holds a whole copy (see README, Scaling)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..update.test_sharding import launch_env
from .test_scoring_distributed import SCRIPT


@pytest.mark.slow
def test_two_processes_under_the_fsdp_config_match_one(tmp_path):
    here = os.path.dirname(__file__)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    _, fsdp = launch_env("fsdp-lora")
    fsdp = {k: v for k, v in fsdp.items() if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP"))}
    assert fsdp["ACCELERATE_USE_FSDP"] == "true"
    results = {}
    for world in (1, 2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1"}
        if world == 2:
            env.update(fsdp)
        out = tmp_path / f"w{world}.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world),
               "--master_port", str(29600 + world + os.getpid() % 1000), str(script), str(out), here]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[world] = json.loads(out.read_text())
    one, two = results[1], results[2]
    assert two["world"] == 2
    assert two["norm"] == pytest.approx(one["norm"], rel=1e-5)
    scale = max(map(abs, one["raw"].values()))
    for k, v in one["raw"].items():
        assert two["raw"][k] == pytest.approx(v, rel=1e-4, abs=1e-7 * scale)
