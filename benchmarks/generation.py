"""Evaluation generation speed on SmolLM2-135M-Instruct: every CPU backend side by side on the same
held-out prompts, against the ceiling a matmul benchmark of the decode step's shapes measures.
Prints one JSON line (and each setting's row on stderr as it finishes):

    python benchmarks/generation.py [--batches 1,16,64] [--prompts-per-batch 8,32,64]
        [--demo-prompts 256] [--max-new-tokens 128] [--threads 2] [--compile]
        [--backends hf-float32,hf-bfloat16,ct2-float32,ct2-int8_float32] [--mref auto|PATH|none] [--quick]

- `ceiling`: for each batch size, in float32 and bfloat16, the tokens/s the decode step's matmuls
  alone allow (`F.linear` at each shape: q, k, v, o, gate, up, down of the 30 layers and the
  576x49152 LM head), each timed with its weight hot in cache: an upper bound.
  `streaming_tokens_per_s` runs the step over the model's own set of distinct weights instead,
  streaming them from memory as generation does; `peak_gflops` is a 2048^3 GEMM.
  `flops_per_token` is 2 x the weights a token multiplies; attention over the context (under 3% at
  these lengths) and the prompt's own forward pass are left out. Where the CPU emulates bfloat16,
  its ceiling and backends are skipped (`skipped_backends`).
- `float32_bound_tokens_per_s` (each run): the most answer tokens/s float32 allows here for that
  run's prompts and answers (`float32_bound`: every prompt and answer token's matmuls at
  `peak_gflops`, nothing else costing anything), and each backend's `of_float32_bound`. At the
  demo's settings, `twice_today_of_bound` is the issue's target (2x `vs_today`'s path) over that
  bound: above 1, no float32 engine can reach it on this machine.
- `runs`: SmolLM2 at each batch size (on its first N held-out prompts) and at the demo's settings
  (`demo`: batch 64, `--demo-prompts` prompts), and an M_ref at the demo's settings (`demo_mref`),
  every backend through the evaluation's `generate_responses` (no cache). For each backend: answer
  tokens (up to and including the stop token) per second of wall time and per CPU-second of the
  process (all its threads: the fairer measure on a loaded machine), the ratios of both to
  `hf-float32` (`HFBackend`, the reference), and the fraction of the float32 ceiling at that batch
  size. At the demo's settings `hf-float32-chunks32` is the evaluation path before this benchmark's
  change (chunks of 32 prompts in their order, so batches of 32) and `vs_today` the ratio to it.
  The backends run one after another, in reverse order every other setting.
- `agreement`: on the demo runs' prompts, how many of each backend's greedy answers equal the
  reference's exactly, on SmolLM2 and on M_ref (`--mref`; `auto`: the newest SmolLM2-based M_ref
  cached under `$TRACE_REALIGN_CACHE/mref`, which `make demo` builds).
- `metrics`: the demo's evaluation metrics of those answers (target policy agreement, overall and
  by category, under the old and the new policy, judged by the scenario's rules as `make demo`
  judges): the reference's rate and 95% interval, each other backend's rate and whether it lies
  inside that interval (`--no-metrics` skips it).
- `hf-compile-float32` (`--compile`): `model.generate` with a static KV cache and `torch.compile`
  (inductor), at the demo setting; `first_batch_s` is its first batch, compilation included.
- `setup_s`: loading each backend (a CTranslate2 one from the conversion cache), and converting
  each model to CTranslate2 (`ct2-conversion`, into a fresh folder: paid once per model).

Read the ratios, not the seconds: the machine may be shared (`load_before`, `load_after`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: the CPU is shared

# on a CPU CTranslate2's "int8" is "int8_float32" (int8 matmuls, float32 elsewhere)
BACKENDS = ["hf-float32", "hf-bfloat16", "ct2-float32", "ct2-int8_float32"]


def linear_shapes(config) -> dict[str, tuple[int, int, int]]:
    """name -> (in, out, times per token) of every matmul a decode step runs."""
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv, n = (
        config.num_attention_heads * head_dim,
        config.num_key_value_heads * head_dim,
        config.num_hidden_layers,
    )
    return {"q": (h, q, n), "k": (h, kv, n), "v": (h, kv, n), "o": (q, h, n),
            "gate": (h, i, n), "up": (h, i, n), "down": (i, h, n), "lm_head": (h, v, 1)}  # fmt: skip


def _time(fn, min_seconds: float = 0.3, repeats: int = 5) -> float:
    """Median seconds of one call, over `repeats` rounds of enough calls to last `min_seconds`."""
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds / repeats:
        fn()
        calls += 1
    rounds = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(max(calls, 1)):
            fn()
        rounds.append((time.perf_counter() - t) / max(calls, 1))
    return statistics.median(rounds)


def ceiling(config, batches: list[int], min_seconds: float) -> dict:
    """The matmul ceiling of a decode step, in float32 and bfloat16, for each batch size:

    - `tokens_per_s`: batch / the time of one step's matmuls, each shape timed alone with its
      weight reused call after call (hot in cache), times the number of such matmuls in a step:
      the ceiling (`gflops_step` as a rate, `gflops_by_shape` each shape's);
    - `streaming_tokens_per_s`: the same step over the model's own set of distinct weight matrices
      (layer by layer, then the LM head), so the weights stream from memory as in generation.

    bfloat16 is skipped, with the probe's rates, where a 256^3 product in it runs at under a
    quarter of float32's: the CPU has no bfloat16 arithmetic and torch emulates it (on an AVX2
    machine, 2 GFLOP/s against 64: its ceiling alone would take hours). `main` then drops the
    bfloat16 backends too.
    """
    import torch
    import torch.nn.functional as F

    shapes = linear_shapes(config)
    flops_per_token = sum(2 * k * n * times for k, n, times in shapes.values())
    out: dict = {"flops_per_token": flops_per_token, "gflop_per_token": round(flops_per_token / 1e9, 4)}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        if dtype != torch.float32:
            probe = {
                str(t).removeprefix("torch."): round(
                    2 * 256**3 / _time(lambda a=torch.randn(256, 256, dtype=t): a @ a, 0.1, 1) / 1e9, 2
                )
                for t in (torch.float32, dtype)
            }
            if probe[name] < probe["float32"] / 4:
                out[name] = {"skipped": "not native on this CPU", "probe_gflops_256": probe}
                continue
        a, b = (torch.randn(2048, 2048, dtype=dtype) for _ in range(2))
        peak = 2 * 2048**3 / _time(lambda a=a, b=b: a @ b, min_seconds)
        layers = config.num_hidden_layers
        weights = [  # layer by layer, as the model reads them, then the LM head
            torch.randn(n, k, dtype=dtype)
            for layer in range(layers)
            for k, n, times in shapes.values()
            if times == layers
        ] + [torch.randn(n, k, dtype=dtype) for k, n, times in shapes.values() if times == 1]
        per_batch = {}
        for m in batches:
            xs = {k: torch.randn(m, k, dtype=dtype) for k, _, _ in shapes.values()}
            gflops, hot_s = {}, 0.0
            with torch.no_grad():
                for shape, (k, n, times) in shapes.items():
                    w = torch.randn(n, k, dtype=dtype)
                    seconds = _time(lambda x=xs[k], w=w: F.linear(x, w), min_seconds)
                    gflops[shape] = round(2 * m * k * n / seconds / 1e9, 1)
                    hot_s += seconds * times
                streaming_s = _time(
                    lambda xs=xs, ws=weights: [F.linear(xs[w.shape[1]], w) for w in ws], min_seconds, 3
                )
            per_batch[str(m)] = {
                "tokens_per_s": round(m / hot_s, 1),
                "gflops_step": round(flops_per_token * m / hot_s / 1e9, 1),
                "streaming_tokens_per_s": round(m / streaming_s, 1),
                "gflops_by_shape": gflops,
            }
        out[name] = {
            "peak_gflops": round(peak / 1e9, 1),
            "peak_tokens_per_s": round(peak / flops_per_token, 1),
            "by_batch": per_batch,
        }
    return out


def float32_bound(reference: dict, prompts: int, ceiling: dict) -> float:
    """The most answer tokens/s float32 arithmetic allows on this machine for the reference's run: its
    answer tokens over the time the matmuls of every token it put through the model (each prompt
    token and each answer token but the last) take at the machine's best GEMM rate (`peak_gflops`,
    a 2048^3 product). Generous on purpose: attention, padding and everything that is not a matmul
    are free, and every shape runs as fast as the largest one."""
    processed = reference["prompt_tokens"] + reference["tokens"] - prompts
    seconds = processed * ceiling["flops_per_token"] / (ceiling["float32"]["peak_gflops"] * 1e9)
    return round(reference["tokens"] / seconds, 1)


class Counted:
    """Wraps a backend's `_continue` to count answer tokens (up to and including the stop token) and
    the prompts' own tokens (without padding)."""

    def __init__(self, backend) -> None:
        self.tokens = 0
        self.prompt_tokens = 0
        inner = backend._continue

        def counting(batch, settings, stop, seed):
            new = inner(batch, settings, stop, seed)
            self.prompt_tokens += sum(len(ids) for ids in batch)
            for ids in new:
                cut = next((j for j, t in enumerate(ids) if t in stop), len(ids))
                self.tokens += min(settings.max_new_tokens, cut + 1)
            return new

        backend._continue = counting


def compiled_backend(path, reference):
    """`HFBackend` on the reference's model with a static KV cache and `torch.compile` (inductor)."""
    from transformers import CompileConfig, GenerationConfig

    from trace_realign.evaluate.generate import HFBackend

    class Compiled(HFBackend):
        def _continue(self, batch, settings, stop, seed):
            generate = self.model.generate

            def static_generate(*args, generation_config, **kwargs):
                config = GenerationConfig(**{
                    **generation_config.to_dict(),
                    "cache_implementation": "static",
                    "compile_config": CompileConfig(mode="default", fullgraph=False, dynamic=None),
                })  # fmt: skip
                config.compile_config._compile_all_devices = (
                    True  # transformers compiles on GPUs only otherwise
                )
                return generate(*args, generation_config=config, **kwargs)

            self.model.generate = static_generate
            try:
                return super()._continue(batch, settings, stop, seed)
            finally:
                del self.model.generate

    return Compiled(
        path, batch_size=reference.batch_size, model=reference.model, tokenizer=reference.tokenizer
    )


def compiled_run(path, reference, prompts, batch_size, settings) -> dict:
    """The compiled backend's first batch (compilation included), then the whole run timed."""
    compiled = compiled_backend(path, reference)
    compiled.batch_size = batch_size
    _, first_s, _, _, _ = timed(compiled, prompts[:batch_size], settings)
    texts, wall, cpu, tokens, _ = timed(compiled, prompts, settings)
    return {"first_batch_s": round(first_s, 1), "s": round(wall, 2), "cpu_s": round(cpu, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / wall, 1), "tokens_per_cpu_s": round(tokens / cpu, 1), "texts": texts}  # fmt: skip


def make(name: str, path, batch_size: int, reference=None):
    from trace_realign.evaluate.generate import CT2Backend, HFBackend

    engine, dtype = name.split("-", 1)
    if engine == "hf":
        if dtype == "float32" and reference is not None:
            return HFBackend(
                path, batch_size=batch_size, model=reference.model, tokenizer=reference.tokenizer
            )
        return HFBackend(path, batch_size=batch_size, dtype=dtype, device="cpu")
    return CT2Backend(path, batch_size=batch_size, compute_type=dtype)


def timed(
    backend, prompts, settings, chunks_of: int | None = None
) -> tuple[list[str], float, float, int, int]:
    """Answers through the evaluation's path (`generate_responses`, without a cache), wall seconds,
    CPU seconds of the process (every thread), answer tokens and prompt tokens. `chunks_of`: the
    path before this benchmark's change instead, `backend.generate` on each run of that many prompts
    in their order."""
    from trace_realign.evaluate.generate import generate_responses

    counted = Counted(backend)
    t, c = time.perf_counter(), time.process_time()
    if chunks_of:
        out = [
            a
            for i in range(0, len(prompts), chunks_of)
            for a in backend.generate(prompts[i : i + chunks_of], settings)
        ]
    else:
        out = generate_responses(backend, prompts, settings, progress=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    del backend._continue
    return out, wall, cpu, counted.tokens, counted.prompt_tokens


def newest_mref() -> Path | None:
    """The newest M_ref cached under the cache folder that was built on SmolLM2 (not a tiny model)."""
    from trace_realign.io import cache_root

    found = []
    for meta in (cache_root() / "mref").glob("*/mref.json"):
        base = json.loads(meta.read_text()).get("base", "")
        if "smollm2" in str(base).lower() and (meta.parent / "config.json").is_file():
            found.append(meta.parent)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


class Scripted:
    """A backend that answers with texts already generated (to judge them as the demo does)."""

    def __init__(self, prompts, texts) -> None:
        self.identity = "scripted"
        self.answers = {json.dumps(p): t for p, t in zip(prompts, texts, strict=True)}

    def generate(self, prompts, settings) -> list[str]:
        return [self.answers[json.dumps(p)] for p in prompts]


def demo_metrics(rows, outputs: dict[str, list[str]], paths, settings) -> dict:
    """The demo's evaluation metrics of each backend's answers: target policy agreement (overall and
    by category) under the old and the new policy with the scenario's rule judge; each fast
    backend's rate, and whether it lies inside the reference's 95% interval."""
    import tempfile

    from trace_realign.evaluate import evaluate_model
    from trace_realign.judges.rules import RuleJudge

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, texts in outputs.items():
            for which in ("old", "new"):
                m = evaluate_model(
                    Scripted([r["prompt"] for r in rows], texts), rows, paths[f"{which}_policy"],
                    RuleJudge.from_file(paths[f"{which}_rules"]), Path(tmp) / f"{name}-{which}",
                    stress=False, settings=settings, cache=False, progress=False,
                )  # fmt: skip
                tpa = {"overall": m["tpa"]["overall"], **m["tpa"]["by_category"]}
                for metric, v in tpa.items():
                    out.setdefault(f"{which}/{metric}", {})[name] = (v["rate"], v["ci95"])
    table = {}
    for metric, by in out.items():
        rate, ci = by["hf-float32"]
        table[metric] = {"hf-float32": {"rate": round(rate, 3), "ci95": [round(x, 3) for x in ci]}}
        for name, (r, _) in by.items():
            if name != "hf-float32":
                table[metric][name] = {"rate": round(r, 3), "inside": ci[0] <= r <= ci[1]}
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument(
        "--prompts-per-batch", default=None, help="prompts timed at each batch size (default 8, 32, 64)"
    )
    ap.add_argument(
        "--demo-prompts", type=int, default=256, help="held-out prompts of the demo run (batch 64)"
    )
    ap.add_argument("--demo-batch", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--compile", action="store_true", help="add hf-compile-float32 to the demo run")
    ap.add_argument(
        "--mref", default="auto", help="an M_ref folder for a second agreement check, auto, or none"
    )
    ap.add_argument("--ceiling-seconds", type=float, default=0.5, help="time per matmul shape")
    ap.add_argument("--no-metrics", action="store_true", help="skip judging the demo runs' answers")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few prompts and tokens")
    args = ap.parse_args()
    if args.quick:
        args.demo_prompts, args.max_new_tokens = 32, 24
        args.ceiling_seconds = 0.1

    import ctranslate2
    import torch
    import transformers

    from trace_realign.evaluate.generate import GenerationSettings, ct2_checkpoint, model_identity
    from trace_realign.model.smollm2 import smollm2_path
    from trace_realign.scenario.generate import ScenarioConfig, build_scenario, prepare_scenario

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    batches = [int(b) for b in args.batches.split(",")]
    if args.prompts_per_batch:
        per_batch = [int(n) for n in args.prompts_per_batch.split(",")]
    else:  # two batches' worth, at least 8 prompts, at most 64 (16 with --quick)
        per_batch = [min(max(2 if args.quick else 8, 2 * b), 16 if args.quick else 64) for b in batches]
    names = args.backends.split(",")
    assert names[0] == "hf-float32", "the reference, hf-float32, comes first"
    scenario = ScenarioConfig(n_pairs=240, n_validation=64, n_heldout=256)
    heldout = build_scenario(scenario).heldout
    prompts = [r["prompt"] for r in heldout]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    path = smollm2_path()

    from transformers import AutoConfig

    result: dict = {
        "benchmark": "generation",
        "model": "SmolLM2-135M-Instruct",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "ctranslate2": ctranslate2.__version__,
        },  # fmt: skip
        "max_new_tokens": args.max_new_tokens,
        "ceiling": ceiling(
            AutoConfig.from_pretrained(path), sorted({*batches, args.demo_batch}), args.ceiling_seconds
        ),
    }
    fp32 = result["ceiling"]["float32"]["by_batch"]
    if "skipped" in result["ceiling"]["bfloat16"]:  # emulated: hours per run, and no one's fast path
        result["skipped_backends"] = [n for n in names if "bfloat16" in n]
        names = [n for n in names if "bfloat16" not in n]
    mref = newest_mref() if args.mref == "auto" else (None if args.mref == "none" else Path(args.mref))
    models = {"smollm2": path, **({"mref": mref} if mref is not None else {})}
    result["mref"] = str(mref) if mref is not None else None

    runs, outputs, setup_s = {}, {}, {}
    for model, folder in models.items():
        # converting to CTranslate2, timed into a fresh folder (the backends below reuse the cache)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            ct2_checkpoint(folder, model_identity(folder), cache_dir=tmp)
            setup_s[f"{model}/ct2-conversion"] = round(time.perf_counter() - t, 1)
        # one backend per name and model, built once (loading timed)
        backends = {}
        for name in names:
            t = time.perf_counter()
            backends[name] = make(name, folder, 1, reference=backends.get("hf-float32"))
            setup_s[f"{model}/{name}"] = round(time.perf_counter() - t, 1)
        todo = (
            [(f"batch_{b}", b, n) for b, n in zip(batches, per_batch, strict=True)]
            if model == "smollm2"
            else []
        )
        todo.append(("demo" if model == "smollm2" else "demo_mref", args.demo_batch, args.demo_prompts))
        for k, (label, b, n) in enumerate(todo):
            row: dict = {"batch": b, "prompts": n}
            # the demo's path before this change: HF float32 in chunks of 32 prompts (its batches of
            # 64 held 32), each chunk in the prompts' order
            today = [("hf-float32-chunks32", "hf-float32", 32)] if label.startswith("demo") else []
            # every other setting in the reverse order, so a change of load favours no backend
            order = [(name, name, None) for name in names]
            for entry, name, chunks_of in today + (order if k % 2 == 0 else order[::-1]):
                backends[name].batch_size = b
                texts, wall, cpu, tokens, prompt_tokens = timed(
                    backends[name], prompts[:n], settings, chunks_of
                )
                row[entry] = {"s": round(wall, 2), "cpu_s": round(cpu, 2), "tokens": tokens, "prompt_tokens": prompt_tokens,
                              "tokens_per_s": round(tokens / wall, 1), "tokens_per_cpu_s": round(tokens / cpu, 1)}  # fmt: skip
                outputs[label, entry] = texts
            if args.compile and label == "demo":
                row["hf-compile-float32"] = compiled_run(
                    path, backends["hf-float32"], prompts[:n], b, settings
                )
                outputs[label, "hf-compile-float32"] = row["hf-compile-float32"].pop("texts")
            ref = row["hf-float32"]
            row["float32_bound_tokens_per_s"] = bound = float32_bound(ref, n, result["ceiling"])
            for r in row.values():
                if isinstance(r, dict):
                    r["vs_hf_float32"] = round(r["tokens_per_s"] / ref["tokens_per_s"], 2)
                    r["cpu_vs_hf_float32"] = round(r["tokens_per_cpu_s"] / ref["tokens_per_cpu_s"], 2)
                    r["of_float32_ceiling"] = round(r["tokens_per_s"] / fp32[str(b)]["tokens_per_s"], 3)
                    r["of_float32_bound"] = round(r["tokens_per_s"] / bound, 3)
                    if today:
                        r["vs_today"] = round(
                            r["tokens_per_s"] / row["hf-float32-chunks32"]["tokens_per_s"], 2
                        )
            if today:  # the target, twice the path before, against what float32 allows
                row["twice_today_of_bound"] = round(2 * row["hf-float32-chunks32"]["tokens_per_s"] / bound, 3)
            runs[label] = row
            print(json.dumps({label: row}), flush=True, file=sys.stderr)
        del backends
    result["setup_s"] = setup_s
    result["runs"] = runs

    # identical greedy answers to the reference's, on the demo runs' prompts
    agreement: dict = {}
    for (label, name), texts in outputs.items():
        if label.startswith("demo") and name != "hf-float32":
            reference = outputs[label, "hf-float32"]
            same = sum(a == b for a, b in zip(texts, reference, strict=True))
            key = "smollm2" if label == "demo" else "mref"
            agreement.setdefault(name, {})[key] = {"identical": same, "of": len(reference),
                                                   "share": round(same / len(reference), 3)}  # fmt: skip
    result["agreement"] = agreement
    if not args.no_metrics:
        _, paths = prepare_scenario(Path(tempfile.mkdtemp()) / "scenario", scenario)
        result["metrics"] = {
            key: demo_metrics(heldout[: args.demo_prompts], {n: t for (lab, n), t in outputs.items() if lab == label},
                              paths, settings)
            for key, label in (("smollm2", "demo"), ("mref", "demo_mref"))
            if any(lab == label for lab, _ in outputs)
        }  # fmt: skip
    result["load_before"] = [round(x, 2) for x in load_before]
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
