"""Two CPU processes (gloo) give the same g_J and weights as one: shards scored, results gathered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from test_scoring import GOLD, conflicts, make_model
    from trace_realign.impact.scoring import ScoreOptions, conflict_impacts, gold_gradient
    from trace_realign.model.loading import process_state
    from trace_realign.model.tiny import tiny_tokenizer

    state = process_state()
    tok = tiny_tokenizer()
    model = make_model(tok, lora=True)
    opts = ScoreOptions(mode="exact", beta=0.3, batch_size=2)
    gold = gold_gradient(model, tok, GOLD, opts, progress=False)
    raw = conflict_impacts(model, tok, conflicts(), gold, opts, progress=False)
    if state.is_main_process:
        with open(sys.argv[1], "w") as f:
            json.dump({"world": state.num_processes, "norm": gold.norm, "raw": raw}, f)
    # exit together: a rank that leaves while the other still holds the group can make it abort
    state.wait_for_everyone()
    state.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    here = os.path.dirname(__file__)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    # what `accelerate launch --cpu` sets: without it PartialState ignores a CPU-only torchrun world
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1"}
    results = {}
    for world in (1, 2):
        out = tmp_path / f"w{world}.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world),
               "--master_port", str(29500 + world + os.getpid() % 1000), str(script), str(out), here]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[world] = json.loads(out.read_text())
    one, two = results[1], results[2]
    assert two["world"] == 2 and one["world"] == 1
    assert two["norm"] == pytest.approx(one["norm"], rel=1e-5)
    assert list(two["raw"]) == list(one["raw"])
    for k, v in one["raw"].items():
        assert two["raw"][k] == pytest.approx(v, rel=1e-4, abs=1e-7 * max(map(abs, one["raw"].values())))
