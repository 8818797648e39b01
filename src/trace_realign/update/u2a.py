"""Weights estimated by the trainer itself: U2A's bi-level ω, and the NPO impact of trace-no-triage.

U2A (Unlearning to Align, arXiv 2504.06659; docs/method.md, U2A) unlearns single negative responses with
weighted NPO, `Σ_i ω_i ℓ_NPO,i(θ)`, and chooses ω so that the unlearned model does well on an
alignment objective `J(θ)` (the preference loss on preferred pairs, against the frozen reference).
With `θ*(ω)` the minimiser of the inner problem, the implicit function theorem gives
`dθ*/dω_i = −H⁻¹ ∇ℓ_i`, so with `H⁻¹ ≈ I/γ`

    dJ/dω_i = −⟨∇J, ∇ℓ_i⟩ / γ,    δω_i := ⟨∇J, ∇ℓ_i⟩ / γ = −dJ/dω_i

and a step of exponentiated-gradient descent on J is `ω_i ← ω_i · exp(+η δω_i)`: a negative whose
unlearning step also descends J gains weight. The first estimate keeps the top-k negatives by
δω (largest first, the same order), then every K training steps δω is re-estimated at the current
parameters and ω updated, until the rounds are spent or J stops falling.

`ImpactWeights` is the `TrainerCallback` that does this; with `schedule="once"` it computes a single
estimate at the start (θ = θ_ref), normalised like TRACE's impact weights: the weights of
trace-no-triage, i.e. the impact of the NPO term that method trains. Both reuse the score stage's
batched directional derivatives (`impact.scoring.current_impacts`, `objective_gradient`).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from trace_realign.errors import InputError
from trace_realign.impact.gold import gold_batch
from trace_realign.impact.reference import reference_logprobs
from trace_realign.impact.scoring import (
    SINGLE,
    ScoredItem,
    ScoreOptions,
    current_impacts,
    normalise_weights,
    objective_gradient,
    objective_loss,
)
from trace_realign.losses import NPO, NpoForm
from trace_realign.model.loading import trainable_parameters
from trace_realign.schema import Category, PreferencePair, canonical_hash
from trace_realign.triage.triage import TriagedPair
from trace_realign.update.config import npo_form
from trace_realign.update.data import Example, WeightedRow

STATE_FILE = "u2a_state.json"
FLOOR = 1e-6  # ω is clamped above 0 after each update


# ---- pure pieces ------------------------------------------------------------------------------


def example_item(e: Example) -> ScoredItem:
    """The NPO term an example trains, as a scored item: both responses (`npo`) or one (`npo_a`)."""
    if e.kind != NPO:
        raise ValueError("only NPO examples are weighted by their own impact")
    if e.npo_pos and e.npo_neg and e.neg is not None:
        return ScoredItem(e.row_id, e.prompt, e.pos, e.neg, "npo")
    if e.npo_pos or e.neg is None:
        return ScoredItem(e.row_id, e.prompt, e.pos, e.pos, SINGLE)
    return ScoredItem(e.row_id, e.prompt, e.neg, e.neg, SINGLE)


def objective_items(rows: Sequence[WeightedRow], source: str, size: int, seed: int = 0) -> list[ScoredItem]:
    """J's preferred pairs `(x, y+, y−)` from the rows: the gold batch of Algorithm 2 (`gold`), or a
    random subset of the relabelled pairs (`relabelled`: INVERT swapped, RETAIN kept)."""
    usable = [r for r in rows if r.category is not Category.UNKNOWN]
    if source == "gold":
        triaged = [
            TriagedPair(
                PreferencePair(r.prompt, r.chosen, r.rejected, id=r.id),
                r.category,
                r.c_w,
                r.c_l,
                correction=r.correction,
            )
            for r in usable
        ]
        items = [
            ScoredItem(g.pair_id, g.prompt, g.y_plus, g.y_minus) for g in gold_batch(triaged, size, seed=seed)
        ]
    else:
        pairs = [
            ScoredItem(r.id, r.prompt, r.rejected, r.chosen)
            if r.category is Category.INVERT
            else ScoredItem(r.id, r.prompt, r.chosen, r.rejected)
            for r in usable
            if r.category in (Category.INVERT, Category.RETAIN)
        ]
        items = random.Random(seed).sample(pairs, min(size, len(pairs)))
    if not items:
        raise InputError(
            f"J has no preferred pairs ({source}): it needs RETAIN or INVERT rows", field="u2a_objective"
        )
    return items


def delta_omega(
    raw: Sequence[float], n_objective: int, gamma: float, omega: Sequence[float], sparsity: float = 0.0
) -> list[float]:
    """`δω_i = ⟨∇J, ∇ℓ_i⟩/γ − λ/(2√ω_i)`, with `J` the mean loss over `n_objective` pairs
    (`raw` holds inner products with the gradient of their sum). The second term is the
    derivative of the sparsity penalty `λ Σ √ω`, with the sign of `−dJ/dω` as the first."""
    out = []
    for r, w in zip(raw, omega, strict=True):
        d = r / (n_objective * gamma)
        if sparsity > 0:
            d -= sparsity / (2 * math.sqrt(max(w, FLOOR)))
        out.append(d)
    return out


def top_k(delta: Sequence[float], k: int) -> list[bool]:
    """Keep the k negatives with the largest δω (ties: the earlier one)."""
    order = sorted(range(len(delta)), key=lambda i: (-delta[i], i))
    keep = set(order[:k])
    return [i in keep for i in range(len(delta))]


def multiplicative_update(
    omega: Sequence[float], delta: Sequence[float], eta: float, active: Sequence[bool]
) -> list[float]:
    """`ω ← ω·exp(η δω)` over the active negatives, renormalised to mean 1 there, clamped above 0;
    inactive negatives stay at 0. The exponent is shifted by its maximum (the normalisation
    cancels it), so a large `η δω` cannot overflow."""
    idx = [i for i, a in enumerate(active) if a]
    out = [0.0] * len(omega)
    if not idx:
        return out
    logs = [math.log(max(omega[i], FLOOR)) + eta * delta[i] for i in idx]
    top = max(logs)
    new = [math.exp(v - top) for v in logs]
    scale = len(idx) / sum(new)
    for i, v in zip(idx, new, strict=True):
        out[i] = max(v * scale, FLOOR)
    return out


def omega_stats(omega: Sequence[float], active: Sequence[bool] | None = None) -> dict[str, float]:
    """The distribution of the active weights: count, min, quantiles, max and the effective number
    of negatives `(Σω)²/Σω²`."""
    w = sorted(x for x, a in zip(omega, active or [True] * len(omega), strict=True) if a)
    if not w:
        return {"n": 0}

    def q(p: float) -> float:
        return w[min(len(w) - 1, int(p * (len(w) - 1) + 0.5))]

    s, s2 = sum(w), sum(x * x for x in w)
    return {
        "n": len(w),
        "min": w[0],
        "p10": q(0.1),
        "median": q(0.5),
        "p90": q(0.9),
        "max": w[-1],
        "mean": s / len(w),
        "effective_n": s * s / s2 if s2 > 0 else 0.0,
    }


# ---- the callback -------------------------------------------------------------------------------


class ImpactWeights(TrainerCallback):
    """Estimates the weights of `trainer.train_dataset`'s examples and puts them in
    `trainer.example_weights` (indexed by example), which `TraceTrainer.batch_loss` then uses.

    `schedule="once"`: one estimate before the first step, `⟨∇Σ_gold ℓ, ∇ℓ_i⟩` normalised like TRACE's
    impact weights (trace-no-triage). `schedule="u2a"`: U2A's rounds (module docstring).
    The state (ω, the kept negatives, J's history) is saved in every checkpoint and restored by
    `load` on resume, so a resumed run takes the same next weights as an uninterrupted one.
    """

    def __init__(
        self,
        trainer: Any,
        items: Sequence[ScoredItem],
        objective: Sequence[ScoredItem],
        schedule: Literal["once", "u2a"],
    ) -> None:
        cfg = trainer.args
        self.trainer, self.items, self.objective, self.schedule = (
            trainer,
            list(items),
            list(objective),
            schedule,
        )
        self.opts = ScoreOptions(
            mode=cfg.u2a_scoring,
            beta=cfg.beta,
            loss_type=cfg.loss_terms.loss_type,
            # trace-no-triage's weights are normalised, where a damping γ > 0 cancels: u2a_gamma serves both
            gamma=cfg.u2a_gamma,
            batch_size=cfg.u2a_batch_size,
            max_length=cfg.max_length,
            max_prompt_length=cfg.max_prompt_length,
            # U2A scores the NPO its inner problem trains (its own form when asked); trace-no-triage TRACE's
            npo=npo_form(cfg) if schedule == "u2a" else NpoForm(),
        )
        self.omega: list[float] = []
        self.active: list[bool] = []
        self.round = 0
        self.steps_per_round = 0
        self.last_J: float | None = None
        self.history: list[dict[str, Any]] = []
        self.restored = False
        self.pending: dict[str, float] = {}
        self._ref_items: list[tuple[float, float]] | None = None
        self._ref_objective: list[tuple[float, float]] | None = None
        # the trainable parameters where J was lowest, restored when U2A stops (its early stopping
        # keeps the best unlearned model, not the last one)
        self.best: dict[str, Any] | None = None
        self.restored_from: dict[str, Any] | None = None
        self.final_J: float | None = None

    # -- reference log-probabilities, once --

    def _references(self) -> None:
        tr = self.trainer
        model = tr.reference.copy if tr.reference.copy is not None else tr.model
        seqs = []
        for it in self.items + self.objective:
            seqs += [(it.id, it.prompt, it.a), (it.id, it.prompt, it.b)]
        # single negatives repeat a as b: each distinct sequence is encoded once (a chat prompt is a
        # list of messages, so sequences are told apart by their content hash, not by the tuple)
        keys = [canonical_hash(*seq) for seq in seqs]
        unique = list({k: seq for k, seq in zip(keys, seqs, strict=True)}.items())
        values = reference_logprobs(
            model,
            tr.processing_class,
            [seq for _, seq in unique],
            batch_size=self.opts.batch_size * 2,
            max_length=self.opts.max_length,
            max_prompt_length=self.opts.max_prompt_length,
            progress=False,
        ).tolist()
        at = {k: v for (k, _), v in zip(unique, values, strict=True)}
        pairs = [(at[keys[2 * i]], at[keys[2 * i + 1]]) for i in range(len(seqs) // 2)]
        self._ref_items, self._ref_objective = pairs[: len(self.items)], pairs[len(self.items) :]

    # -- one estimate at the current parameters --

    def estimate(self) -> tuple[float, list[float], dict[str, float]]:
        """`J` and the raw `⟨∇Σ_J ℓ, ∇ℓ_i⟩` of every item at the model's current parameters."""
        if self._ref_items is None:
            self._references()
        tr = self.trainer
        t0 = time.time()
        direction, J = objective_gradient(
            tr.model, tr.processing_class, self.objective, self._ref_objective, self.opts
        )
        t1 = time.time()
        raw, _ = current_impacts(
            tr.model, tr.processing_class, self.items, self._ref_items, direction, self.opts
        )
        t2 = time.time()
        n_seq = sum(1 if it.kind == SINGLE else 2 for it in self.items)
        passes = {"exact": "1 forward-mode pass", "fd": "2 forward passes", "naive": "1 forward + 1 backward"}
        cost = {
            "seconds_objective": t1 - t0,
            "seconds_impacts": t2 - t1,
            "objective_sequences": 2 * len(self.objective),
            "negative_sequences": n_seq,
            "per_negative_sequence": passes[self.opts.mode],
            "per_objective_sequence": "1 forward + 1 backward",
        }
        return J, raw, cost

    def _keep_if_best(self, state: Any, J: float) -> None:
        """Remember the trainable parameters when J is the lowest yet (adapter-sized under LoRA)."""
        if self.schedule != "u2a" or (self.best is not None and self.best["J"] <= J):
            return
        params = trainable_parameters(self.trainer.model)
        self.best = {
            "J": J,
            "round": self.round,
            "step": state.global_step,
            "params": {n: p.detach().to("cpu", copy=True) for n, p in params.items()},
        }

    def _restore_best(self, state: Any, J: float) -> None:
        """Put back the parameters of the lowest J when the model now stands above it."""
        if self.best is None or self.best["J"] >= J:
            return
        with torch.no_grad():
            for n, p in trainable_parameters(self.trainer.model).items():
                p.copy_(self.best["params"][n].to(p.device))
        self.restored_from = {
            "round": self.best["round"],
            "step": self.best["step"],
            "J": self.best["J"],
            "J_at_stop": J,
        }

    def _set_weights(self) -> None:
        self.trainer.example_weights = torch.tensor(self.omega, dtype=torch.float32)

    def _record(
        self, state: Any, J: float, delta: Sequence[float] | None, cost: dict[str, Any], **extra
    ) -> None:
        entry = {
            "round": self.round,
            "step": state.global_step,
            "J": J,
            "omega": omega_stats(self.omega, self.active),
            **({"delta_omega": omega_stats(delta)} if delta is not None else {}),
            **cost,
            **extra,
        }
        self.history.append(entry)
        # handed to the trainer's next log (a log call from a callback would swallow that step's loss log)
        self.pending = {"u2a/J": J, "u2a/round": float(self.round)}
        self.pending.update({f"u2a/omega_{k}": float(v) for k, v in entry["omega"].items()})

    def pop_logs(self) -> dict[str, float]:
        """The latest round's J and ω distribution, once, for `TraceTrainer.log`."""
        out, self.pending = self.pending, {}
        return out

    # -- TrainerCallback hooks --

    def on_train_begin(self, args, state, control, **kwargs):
        if self.restored:
            self._set_weights()
            return control
        J, raw, cost = self.estimate()
        self.last_J = J
        self._keep_if_best(state, J)
        if self.schedule == "once":
            self.omega = normalise_weights(raw, gamma=self.opts.gamma, normalisation=_norm(args))
            self.active = [True] * len(self.omega)
            if sum(self.omega) == 0:
                raise InputError(
                    f"all {len(raw)} NPO impact weights are 0 after clamping: no flagged response's unlearning "
                    "agrees with the gold direction, so this run would train nothing",
                    field="impact_weight",
                )
            self._set_weights()
            self._record(state, J, None, cost, raw=_stats_raw(raw))
            return control
        delta = delta_omega(raw, len(self.objective), self.opts.gamma, [1.0] * len(raw), args.u2a_sparsity)
        k = max(1, round(args.u2a_top_k_fraction * len(delta))) if args.u2a_top_k_fraction else args.u2a_top_k
        self.active = top_k(delta, k)
        self.omega = [1.0 if a else 0.0 for a in self.active]
        self.steps_per_round = args.u2a_steps_per_round or max(
            1, math.ceil(state.max_steps / (args.u2a_rounds + 1))
        )
        self._set_weights()
        self._record(state, J, delta, cost, kept=sum(self.active))
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.schedule != "u2a" or state.global_step % self.steps_per_round:
            return control
        if self.round >= args.u2a_rounds:
            if state.global_step < state.max_steps:
                self.trainer.stop_reason = f"u2a: {args.u2a_rounds} rounds done at step {state.global_step}"
                control.should_training_stop = True
            return control
        if state.global_step >= state.max_steps:
            return control  # no step left to train with new weights
        self.round += 1
        J, raw, cost = self.estimate()
        improvement = self.last_J - J if self.last_J is not None else math.inf
        self.last_J = J
        self._keep_if_best(state, J)
        if improvement <= args.u2a_es_threshold:
            self._restore_best(state, J)
            self._record(state, J, None, cost, stopped=True)
            change = (
                f"a rise of {-improvement:.3g}" if improvement < 0 else f"a fall of only {improvement:.3g}"
            )
            self.trainer.stop_reason = (
                f"u2a: J went from {J + improvement:.3g} to {J:.3g} in round {self.round} (step "
                f"{state.global_step}), {change}: the early stop fires at a fall of at most "
                f"{args.u2a_es_threshold:g}"
            )
            control.should_training_stop = True
            return control
        delta = delta_omega(raw, len(self.objective), self.opts.gamma, self.omega, args.u2a_sparsity)
        active = [d for d, a in zip(delta, self.active, strict=True) if a]
        eta = args.u2a_eta
        if args.u2a_eta_per_sd > 0:
            sd = float(np.std(active)) if len(active) > 1 else 0.0
            eta = args.u2a_eta_per_sd / sd if sd > 0 else 0.0
        self.omega = multiplicative_update(self.omega, delta, eta, self.active)
        self._set_weights()
        self._record(state, J, active, cost, eta=eta)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        """U2A's last word: J at the final parameters, and the best-J state back if it was lower."""
        if self.schedule != "u2a" or self.best is None or self.restored_from:
            return control
        if self._ref_objective is None:
            self._references()
        J = objective_loss(
            self.trainer.model, self.trainer.processing_class, self.objective, self._ref_objective, self.opts
        )
        self.final_J = J
        self._restore_best(state, J)
        return control

    def on_save(self, args, state, control, **kwargs):

        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / STATE_FILE).write_text(json.dumps(self.state_dict()), encoding="utf-8")
        return control

    # -- persistence --

    def state_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "omega": self.omega,
            "active": self.active,
            "round": self.round,
            "steps_per_round": self.steps_per_round,
            "last_J": self.last_J,
            "history": self.history,
        }

    def load(self, checkpoint: str | Path) -> None:
        path = Path(checkpoint) / STATE_FILE
        if not path.exists():
            raise InputError(
                f"{path} is missing: this checkpoint holds no {self.schedule} weights to resume with "
                "(start the run again without resuming)",
                path=str(path),
            )
        s = json.loads(path.read_text(encoding="utf-8"))
        if s["schedule"] != self.schedule or len(s["omega"]) != len(self.items):
            raise InputError(
                f"the weights saved in {path} belong to another run ({s['schedule']}, {len(s['omega'])} examples)",
                path=str(path),
            )
        self.omega, self.active = [float(x) for x in s["omega"]], [bool(x) for x in s["active"]]
        self.round, self.steps_per_round = int(s["round"]), int(s["steps_per_round"])
        self.last_J, self.history = s["last_J"], list(s["history"])
        self.restored = True

    def summary(self) -> dict[str, Any]:
        """For run_summary.json: the schedule, ω's final distribution and every round."""
        return {
            "schedule": self.schedule,
            "scoring": self.opts.mode,
            "objective_pairs": len(self.objective),
            "examples": len(self.items),
            "kept": sum(self.active),
            "steps_per_round": self.steps_per_round,
            "omega": omega_stats(self.omega, self.active),
            "rounds": self.history,
            "final_J": self.final_J,
            "best_J": None if self.best is None else {k: self.best[k] for k in ("J", "round", "step")},
            # the parameters U2A ended with: those of the lowest J (None: the last ones were the best)
            "restored_best": self.restored_from,
        }


def _norm(args: Any) -> str:
    return "mean" if args.weight_normalisation == "none" else args.weight_normalisation


def _stats_raw(raw: Sequence[float]) -> dict[str, float]:
    return {
        "min": min(raw),
        "max": max(raw),
        "mean": sum(raw) / len(raw),
        "positive": sum(r > 0 for r in raw),
    }
