"""`TraceTrainer`: the hybrid update of Algorithm 1 (lines 21-29), and every baseline, as one Trainer.

Each step minimises, over a batch of B examples (natural or stratified, `TraceConfig.sampler`;
see `update.data`),

    L = (1/B) [ Σ_INVERT w_i ℓ_pref(x_i, y_l, y_w) + Σ_PUNISH w_j (ℓ_pref(x_j, y_c, y_w) or ℓ_NPO)
              + α_KL Σ_RETAIN KL(π_ref(·|x_k, y_w) ‖ π_θ(·|x_k, y_w)) ]

With `"sft"` in `loss_type` every preference term also gets its `loss_weights` share of the
per-token NLL of its preferred response (RPO; TRL 1.16's spelling of the old `rpo_alpha`): on
a small model DPO alone can widen the margin on the later tokens of the preferred response and
saturate while greedy decoding still opens the old way; the NLL term keeps raising the preferred
response itself, its first tokens included.

`trace-no-triage` and `u2a` get their weights from the trainer itself (`update.u2a.ImpactWeights`,
a callback): the impact of their own NPO terms, and for U2A re-estimated every K steps.

The 1/B makes it a mean, so the learning rate does not depend on the batch size. All
sequences of a batch go through one policy forward pass, in which a prompt that several of them
share (a pair's two responses) runs once (`TraceConfig.shared_prompt`; the same numbers, to float
rounding, see `model.logprobs.shared_prompt_logprobs`); the reference forward pass runs only
on the sequences that need it: the RETAIN anchors (the KL needs the reference's logits, not
just a number) and any sequence whose `log π_ref` is not cached. With LoRA the reference is the
same network with the adapter disabled (under FSDP that pass runs through the sharded wrapper);
for full fine-tuning, a frozen copy placed like the policy (`update.sharding`: sharded under FSDP
and ZeRO-3, never replicated in full on every rank).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, set_seed
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_utils import get_last_checkpoint

from trace_realign.errors import InputError
from trace_realign.impact.reference import item_key, open_cache, reference_logprobs
from trace_realign.io import write_json_atomic
from trace_realign.losses import KL, NPO, PREF, NpoForm, term_losses, token_kl
from trace_realign.model.loading import (
    LoraOptions,
    Reference,
    apply_lora,
    deepspeed_on_cpu_if_no_accelerator,
    is_peft,
    load_model,
    load_tokenizer,
)
from trace_realign.model.logprobs import (
    decoder_and_head,
    logprobs_and_logits,
    positions_to_keep,
    prefix_cache_blocker,
)
from trace_realign.model.tokenize import IGNORE_INDEX
from trace_realign.update.config import TraceConfig, npo_form
from trace_realign.update.data import (
    STRATA,
    StratifiedSampler,
    TraceCollator,
    TraceDataset,
    add_retain_anchors,
    read_retain_answers,
    read_weighted,
    select_examples,
    weight_summary,
)
from trace_realign.update.presets import Preset, get_preset, pair_loss_type
from trace_realign.update.sharding import prepare_reference
from trace_realign.update.u2a import ImpactWeights, example_item, objective_items

# Logged means; each is accumulated as (sum, count) so categories absent from a batch never skew them.
METRICS = (
    "invert/loss",
    "punish/loss",
    "retain/loss",
    "invert/weight",
    "punish/weight",
    "retain/weight",
    "invert/margin",
    "punish/margin",
    "retain/margin",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "npo/logratio",
    "kl",
)


@dataclass
class HybridLoss:
    """The batch loss and the per-example pieces it was made of (all `[B]` but `loss`)."""

    loss: torch.Tensor
    per_example: torch.Tensor
    reward_pos: torch.Tensor  # β log π_θ/π_ref of the preferred (PREF) or y_w (NPO, KL) response
    reward_neg: torch.Tensor
    kl: torch.Tensor  # token KL on KL examples, 0 elsewhere


def hybrid_loss(
    pol: torch.Tensor,
    ref: torch.Tensor,
    kl: torch.Tensor,
    batch: dict[str, torch.Tensor],
    *,
    beta: float,
    alpha_kl: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    preference_weight: float = 1.0,
    sft_weight: float = 0.0,
    npo: NpoForm = NpoForm(),
    n_tokens: torch.Tensor | None = None,
) -> HybridLoss:
    """The weighted hybrid loss from sequence log-probabilities, batched (no loop over examples).

    `pol`, `ref`: `[S]` summed log-probabilities of every sequence of the batch; `kl`: `[B]` token KL
    of each example's first sequence (used only where `kind == KL`); `batch`: the collated tensors.
    Each example's term is `losses.term_losses` (the same function impact scoring scores): `loss_type`
    is the preference loss (sigmoid, ipo, or robust with the flip rate `label_smoothing`), and each
    preference term is `preference_weight · ℓ_pref + sft_weight · NLL(preferred)` (TRL's
    `loss_type [.., "sft"]` with `loss_weights`). `npo`: the NPO terms' form (U2A's reads per token).
    `n_tokens`: `[S]` response tokens of each sequence.
    """
    kind, weight = batch["kind"], batch["weight"].to(pol.dtype)
    pp, pn = pol[batch["pos_idx"]], pol[batch["neg_idx"]]
    rp, rn = ref[batch["pos_idx"]].to(pol.dtype), ref[batch["neg_idx"]].to(pol.dtype)
    npo_mask = batch["npo_mask"].to(pol.dtype)
    per = term_losses(
        kind,
        pp,
        rp,
        pn,
        rn,
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        npo_a=npo_mask[:, 0],
        npo_b=npo_mask[:, 1] * batch["has_neg"].to(pol.dtype),
        kl=kl,
        alpha_kl=alpha_kl,
        preference_weight=preference_weight,
        sft_weight=sft_weight,
        npo=npo,
        len_a=None if n_tokens is None else n_tokens[batch["pos_idx"]],
        len_b=None if n_tokens is None else n_tokens[batch["neg_idx"]],
    )
    loss = (weight * per).sum() / max(1, kind.numel())
    return HybridLoss(loss, per, beta * (pp - rp), beta * (pn - rn), kl)


class GradNormStop(TrainerCallback):
    """Stop when the norm of an update's gradient falls below ε (docs/method.md: stop when ‖∇L‖ < ε)."""

    def __init__(self, trainer: TraceTrainer, eps: float) -> None:
        self.trainer, self.eps = trainer, eps

    def on_step_end(self, args, state, control, **kwargs):
        g = self.trainer.last_grad_norm
        if self.eps > 0 and g is not None and g < self.eps:
            self.trainer.stop_reason = f"grad_norm {g:.3g} < {self.eps:g} at step {state.global_step}"
            control.should_training_stop = True
        return control


class TraceTrainer(Trainer):
    """A `transformers.Trainer` whose loss is TRACE's hybrid update, or a baseline's (`args.method`).

    `train_dataset` is a `TraceDataset`; batches come from a `StratifiedSampler`, with one group
    (`sampler="natural"`, the default) or one per category (`"stratified"`), the same for every
    method, grouped by length under `train_sampling_strategy="group_by_length"`. With `args.precompute_ref_log_probs` the reference log-probabilities of
    every preference/NPO response are computed once before training, through the shared on-disk
    cache of `impact.reference` (so the score stage's values are reused), and the per-step
    reference forward pass then runs only on RETAIN anchors.
    """

    # compute_loss returns a per-micro-batch mean: let Trainer divide by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: Any,
        args: TraceConfig,
        train_dataset: TraceDataset,
        processing_class: Any = None,
        *,
        ref_cache_dir: str | Path | None = None,
        ref_model: Any = None,
        objective: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """`objective`: J's preferred pairs (`ScoredItem`s, see `update.u2a.objective_items`), needed by
        the methods whose weights the trainer estimates itself (`trace-no-triage`, `u2a`)."""

        if not args.deepspeed:
            deepspeed_on_cpu_if_no_accelerator()
        self.preset: Preset = get_preset(args.method)
        self.alpha_kl = args.alpha_kl if self.preset.use_kl else 0.0
        self.loss_type = pair_loss_type(self.preset, args.loss_terms.loss_type)
        self.npo_form = npo_form(args)
        if args.gradient_checkpointing and is_peft(model):
            # the frozen embeddings give checkpointed blocks no input that requires grad otherwise
            model.enable_input_require_grads()
        # made before any update, so a full fine-tuning copy is θ_ref; `ref_model` is a copy loaded
        # apart (ZeRO-3 partitions the policy as it loads, and a partitioned model cannot be deep-copied)
        self.reference = Reference(model, ref_model)
        super().__init__(
            model=model,
            args=args,
            data_collator=TraceCollator(train_dataset.pad_token_id),
            train_dataset=train_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.model_accepts_loss_kwargs = False
        self.last_grad_norm: float | None = None
        self.stop_reason = ""
        self._sums = torch.zeros(len(METRICS), 2, dtype=torch.float64)
        self.add_callback(GradNormStop(self, args.grad_norm_stop))
        # weights by example, set by `reweighting` when the method estimates them itself (else the data's)
        self.example_weights: torch.Tensor | None = None
        self.reweighting = None
        if self.preset.weights in ("npo-impact", "u2a"):
            if not objective:
                raise InputError(
                    f"method {self.preset.name} needs J's preferred pairs (objective=...)",
                    field="u2a_objective",
                )
            items = [example_item(e) for e in train_dataset.selection.examples]
            schedule = "u2a" if self.preset.weights == "u2a" else "once"
            self.reweighting = ImpactWeights(self, items, objective, schedule)
            self.add_callback(self.reweighting)
        self.shared_prompt = self._shared_prompt_status(model)
        self.reference_stats: dict[str, Any] = {"precomputed": 0, "from_cache": 0}
        if args.precompute_ref_log_probs and (self.is_fsdp_enabled or self.is_deepspeed_enabled):
            # The precompute runs on the main process alone, before the engine has placed the model:
            # under FSDP that is a whole-model pass on the CPU, under ZeRO-3 (parameters partitioned
            # as they load) a collective the other processes never join. The step's pass instead.
            self.reference_stats["precompute_skipped"] = "FSDP/DeepSpeed: reference pass in every step"
        elif args.precompute_ref_log_probs:
            self._precompute_reference(processing_class, ref_cache_dir)
        if self.reference.copy is not None:
            # after the precompute, which runs the whole copy on one process while the others wait

            self.reference.copy = prepare_reference(self.reference.copy, self.accelerator)

    def _shared_prompt_status(self, model: Any) -> str:
        """Where a pair's prompt runs once (`TraceConfig.shared_prompt`), for run_summary.json."""
        args = self.args
        if not args.shared_prompt:
            return "off (shared_prompt false)"
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return "off: FSDP and DeepSpeed own the forward pass"
        parts = decoder_and_head(model)
        if parts is None:
            return "off: the model's logits are more than an LM head over its decoder"
        blocker = prefix_cache_blocker(parts[0])
        if blocker is not None:
            return f"off: {blocker}"
        if args.gradient_checkpointing:
            return "reference pass only: gradient checkpointing drops the key/value cache"
        if args.world_size > 1:
            return "reference pass only: DDP owns the policy's forward pass"
        return "on: policy and reference passes"

    # ---- data ----------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset=None):

        ds = train_dataset if train_dataset is not None else self.train_dataset
        lengths = ds.lengths() if self.args.train_sampling_strategy == "group_by_length" else None
        batch_size, seed = self.args.per_device_train_batch_size, self.args.seed
        if self.args.sampler == "stratified":  # the same policy for every method (equal exposure)
            groups = ds.selection.by_stratum()
            return StratifiedSampler(
                groups, self.args.sampling_proportions, batch_size, seed, lengths=lengths
            )
        return StratifiedSampler.natural(len(ds), batch_size, seed, lengths=lengths)

    def _precompute_reference(self, tokenizer: Any, cache_dir: str | Path | None) -> None:

        ds: TraceDataset = self.train_dataset
        todo = [t for t in ds.ref_items() if ds.items[t[0]]["kind"] != KL]
        if not todo:
            return
        ref_model = self.reference.copy if self.reference.copy is not None else self.model
        # the main process fills the cache; the others then read it instead of recomputing
        with self.accelerator.main_process_first():
            cache = open_cache(
                ref_model,
                tokenizer,
                max_length=self.args.max_length,
                max_prompt_length=self.args.max_prompt_length,
                cache_dir=cache_dir,
            )
            hits = sum(cache.get(item_key(pid, resp)) is not None for _, _, pid, _, resp in todo)
            values = reference_logprobs(
                ref_model,
                tokenizer,
                [(pid, prompt, resp) for _, _, pid, prompt, resp in todo],
                # the training batch size: its logits are known to fit, and a larger batch would set the peak
                batch_size=self.args.per_device_train_batch_size,
                max_length=self.args.max_length,
                max_prompt_length=self.args.max_prompt_length,
                cache=cache,
                progress=self.is_local_process_zero() and not self.args.disable_tqdm,
            )
        ds.set_reference([(i, slot, v) for (i, slot, *_), v in zip(todo, values.tolist(), strict=True)])
        self.reference_stats = {"precomputed": len(todo) - hits, "from_cache": hits, "cache": str(cache.path)}

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """`Trainer.train`, restoring the estimated weights (ω) of the checkpoint it resumes from."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        if resume_from_checkpoint and self.reweighting is not None:
            self.reweighting.load(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    # ---- loss ----------------------------------------------------------------------------

    def _estimated_weights(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with each example's weight read from `example_weights`, when the trainer estimates them."""
        if self.example_weights is None:
            return inputs
        return {**inputs, "weight": self.example_weights.to(inputs["weight"].device)[inputs["example"]]}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = self._estimated_weights(inputs)
        out = self.batch_loss(model, inputs)
        if model.training:
            self._accumulate(out, inputs)
        return (out.loss, out) if return_outputs else out.loss

    def batch_loss(self, model: Any, inputs: dict[str, torch.Tensor]) -> HybridLoss:
        """One policy forward pass over every sequence of the batch, a reference pass where needed.

        With `shared_prompt` a pair's two responses run their prompt once, in both passes (see
        `model.logprobs.shared_prompt_logprobs`); the RETAIN rows, whose KL needs full logits, run whole."""
        inputs = self._estimated_weights(inputs)
        ids, attn, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        kind = inputs["kind"]
        retain = inputs["pos_idx"][kind == KL]
        kl_seq = retain if self.alpha_kl else retain[:0]  # the rows whose KL needs full logits
        # only the KL rows get full-vocabulary logits; FSDP and DeepSpeed wrappers own the forward
        plain = self.is_fsdp_enabled or self.is_deepspeed_enabled
        share = self.args.shared_prompt
        pol, kl_logits = logprobs_and_logits(
            model, ids, attn, labels, kl_seq, plain=plain, share_prompts=share
        )
        # the reference pass, like the policy's, projects through the LM head only from the first
        # position that predicts a response token: on a 49k vocabulary the prompt positions' logits
        # would cost time and memory for nothing
        keep = positions_to_keep(labels)
        mask = labels[:, labels.shape[1] - keep + 1 :] != IGNORE_INDEX
        ref = inputs["ref_logps"].to(pol.device).clone()
        if not self.alpha_kl and retain.numel():
            # RETAIN drawn for equal exposure but weighing nothing: no reference pass for it, and a
            # finite placeholder (log-ratio 0) so no NaN reaches the unused branches of the loss
            ref[retain] = pol.detach()[retain].to(ref.dtype)
        need = torch.isnan(ref)
        need[kl_seq] = True
        kl = torch.zeros(kind.numel(), device=pol.device, dtype=pol.dtype)
        if need.any():
            rows = need.nonzero().squeeze(-1)
            # position of each KL sequence among the rows the reference sees
            at = torch.full((ref.numel(),), -1, dtype=torch.long, device=ref.device)
            at[rows] = torch.arange(rows.numel(), device=ref.device)
            # under FSDP the adapter-disabled pass must go through the wrapper that gathers the shards
            runner = model if self.is_fsdp_enabled else None
            with torch.no_grad(), self.reference(runner) as ref_model:
                ref_logps, ref_logits = logprobs_and_logits(
                    ref_model,
                    ids[rows],
                    attn[rows],
                    labels[rows],
                    at[kl_seq],
                    plain=plain,
                    share_prompts=share,
                    keep=keep,  # the policy's window, so the KL rows' logits line up
                )
            ref[rows] = ref_logps.to(ref.dtype)
            if kl_seq.numel():
                kl[kind == KL] = token_kl(ref_logits, kl_logits, mask[kl_seq])
        terms = self.args.loss_terms
        return hybrid_loss(
            pol,
            ref,
            kl,
            inputs,
            beta=self.args.beta,
            alpha_kl=self.alpha_kl,
            loss_type=self.loss_type,
            label_smoothing=self.args.label_smoothing,
            preference_weight=terms.preference_weight,
            # presets that build no preference pair have no preferred response to raise
            sft_weight=terms.sft_weight if self.preset.pair_loss is not None else 0.0,
            npo=self.npo_form,
            n_tokens=mask.sum(-1),
        )

    # ---- logging -------------------------------------------------------------------------

    def _accumulate(self, out: HybridLoss, inputs: dict[str, torch.Tensor]) -> None:
        kind, stratum, w = inputs["kind"], inputs["stratum"], inputs["weight"]
        pref = kind == PREF
        rows: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        for s, cat in enumerate(STRATA):
            m = stratum == s
            name = cat.value.lower()
            rows += [(f"{name}/loss", out.per_example, m), (f"{name}/weight", w, m)]
            rows.append((f"{name}/margin", out.reward_pos - out.reward_neg, m & pref))
        margin = out.reward_pos - out.reward_neg
        rows += [
            ("rewards/chosen", out.reward_pos, pref),
            ("rewards/rejected", out.reward_neg, pref),
            ("rewards/margins", margin, pref),
            ("rewards/accuracies", (margin > 0).to(margin.dtype), pref),
            ("npo/logratio", out.reward_pos / self.args.beta, kind == NPO),
            ("kl", out.kl, kind == KL),
        ]
        index = {name: i for i, name in enumerate(METRICS)}
        for name, value, m in rows:
            m = m.to(value.device)
            self._sums[index[name], 0] += float(value.detach()[m].double().sum())
            self._sums[index[name], 1] += float(m.sum())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._sums[:, 1].sum() > 0:
            sums = self._sums.to(self.args.device)
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            for name, (total, n) in zip(METRICS, sums.tolist(), strict=True):
                if n > 0:
                    logs[name] = total / n
            self._sums.zero_()
        if "loss" in logs and self.reweighting is not None:
            logs.update(self.reweighting.pop_logs())
        super().log(logs, start_time)

    def _get_grad_norm(self, model, grad_norm=None):
        g = super()._get_grad_norm(model, grad_norm)
        self.last_grad_norm = float(g)
        return g

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.batch_loss(model, inputs).loss.detach()
        return loss, None, None


# ---- the whole stage: data in, adapter and run_summary.json out ---------------------------


def train(
    model_name_or_path: str | Path,
    weighted_path: str | Path,
    config: TraceConfig,
    *,
    ref_cache_dir: str | Path | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Realign `model_name_or_path` on `weighted_path` with `config.method`; return the run summary.

    Writes to `config.output_dir`: checkpoints while training (a rerun with `resume=True` continues
    from the last one), then the PEFT adapter (or the full model), `merged/` with `save_merged`,
    and `run_summary.json`.
    """

    started = time.time()
    preset = get_preset(config.method)
    rows = read_weighted(weighted_path)
    selection = select_examples(
        rows,
        preset,
        alpha_kl=config.alpha_kl,
        normalisation=config.weight_normalisation,
        path=str(weighted_path),
    )
    if config.retain_answers:
        selection = add_retain_anchors(selection, read_retain_answers(config.retain_answers), preset)
    tokenizer = load_tokenizer(model_name_or_path)
    model = load_model(model_name_or_path, dtype=config.dtype)
    if config.use_peft:
        set_seed(config.seed)  # LoRA's A matrices are random: same seed, same start
        model = apply_lora(model, LoraOptions.from_config(config))
    dataset = TraceDataset(
        selection, tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length
    )
    objective = None
    if preset.weights in ("npo-impact", "u2a"):
        objective = objective_items(rows, config.u2a_objective, config.u2a_objective_size, seed=config.seed)
    trainer = TraceTrainer(
        model,
        config,
        dataset,
        tokenizer,
        ref_cache_dir=ref_cache_dir,
        ref_model=_zero3_reference(model_name_or_path, config),
        objective=objective,
    )
    checkpoint = config.resume_from_checkpoint
    out = Path(config.output_dir)
    if checkpoint is None and resume and out.is_dir():
        checkpoint = get_last_checkpoint(str(out))
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out))
    if config.save_merged and config.use_peft and trainer.is_world_process_zero():
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        merged.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
    summary = _run_summary(trainer, preset, config, selection, dataset, checkpoint, result, started)
    summary.update(model=str(model_name_or_path), weighted=str(weighted_path))
    if trainer.is_world_process_zero():
        write_json_atomic(out / "run_summary.json", summary)
    return summary


def _run_summary(trainer, preset, config, selection, dataset, checkpoint, result, started) -> dict[str, Any]:
    """run_summary.json: what was trained on what, how it stopped, and everything it logged."""
    stop = trainer.stop_reason or (
        f"max_steps {config.max_steps}" if config.max_steps > 0 else f"{config.num_train_epochs:g} epochs"
    )
    return {
        "method": preset.name,
        "method_summary": preset.summary,
        "preference_loss": _loss_label(preset, config),
        "alpha_kl_used": trainer.alpha_kl,
        "data": selection.counts,
        "notes": selection.notes,
        "weights": weight_summary(selection),
        # weights the trainer estimated itself (trace-no-triage's NPO impact, U2A's rounds)
        "reweighting": trainer.reweighting.summary() if trainer.reweighting is not None else None,
        "truncation": dataset.truncation.to_dict(),
        "reference": trainer.reference_stats,
        "shared_prompt": trainer.shared_prompt,
        "resumed_from": checkpoint,
        "global_step": trainer.state.global_step,
        "stop_reason": stop,
        "final_metrics": {**result.metrics, **_last_logged(trainer.state.log_history)},
        "log_history": trainer.state.log_history,
        "wall_time_s": time.time() - started,
        "config": json.loads(config.to_json_string()),
    }


def _zero3_reference(model_name_or_path: str | Path, config: TraceConfig) -> Any:
    """Full fine-tuning under ZeRO-3 loads `θ_ref` a second time from its path: the policy was
    partitioned as it loaded (`zero.Init`), and a partitioned model cannot be deep-copied."""

    if config.use_peft or not is_deepspeed_zero3_enabled():
        return None

    return load_model(model_name_or_path)


def _loss_label(preset: Preset, config: TraceConfig) -> str:
    if preset.pair_loss is None:
        return "none (no preference pairs: NPO only)"
    loss_type = pair_loss_type(preset, config.loss_terms.loss_type)
    if loss_type == "robust":
        label = f"robust DPO (flip rate {config.label_smoothing})"
    elif loss_type == "sigmoid":
        label = "sigmoid (DPO; the paper's 'IPO')"
    else:
        label = "ipo ((Δ - 1/(2β))²)"
    if config.loss_terms.sft_weight > 0:
        label += f" + {config.loss_terms.sft_weight:g} × sft (NLL of the preferred response)"
    return label


def _last_logged(history: list[dict[str, Any]]) -> dict[str, float]:
    """The last value of every metric logged during training (train_* totals excluded)."""
    out: dict[str, float] = {}
    for entry in history:
        for k, v in entry.items():
            if isinstance(v, (int, float)) and not math.isnan(v) and not k.startswith("train_"):
                out[k] = v
    return out
