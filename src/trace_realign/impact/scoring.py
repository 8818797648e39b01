"""Alignment impact (Algorithm 1, lines 8–20): how much each conflict pair agrees with the gold direction.

`g_J = ∇_θ Σ_{D_gold} ℓ_pref(x, y+, y−)` and, for a conflict `i` with loss `ℓ_i`,
`w_i = ⟨g_J, ∇_θ ℓ_i⟩`, all at `θ = θ_ref` over the trainable parameters. Then, over the
conflicts, `w ← max(0, w/γ)` and a normalisation (`normalise_weights`).

At `θ_ref` every loss here is a function of sequence log-probabilities whose derivative is
known without a policy forward pass (`Δ = 0`, every log-ratio is 0), so
`∇ℓ_i = c_a ∇log π(a) + c_b ∇log π(b)` with constant coefficients, and
`w_i = c_a ⟨∇log π(a), g_J⟩ + c_b ⟨∇log π(b), g_J⟩`: one directional derivative of the
sequence log-probabilities along `g_J`. Three ways to get it:

- `exact`: forward-mode AD (`torch.func.jvp`) along `g_J`, every weight of a batch in one pass.
  Forward-mode AD has no rule for the fused SDPA kernels, so attention runs eager meanwhile.
- `fd`: a central finite difference along `g_J`: two no-grad forward passes per batch.
- `naive`: the real loss of each pair against real reference log-probabilities, one backward
  per pair, flattened and dotted with `g_J`. Slow; kept as the correctness oracle.

No per-sample gradient matrix is ever formed. Under `accelerate launch` each process scores
its shard of the pairs and of the gold batch; `g_J` is summed across processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from accelerate.utils import gather_object, reduce
from tqdm.auto import tqdm

from trace_realign.errors import InputError
from trace_realign.impact.reference import reference_logprobs
from trace_realign.losses import TERM_KINDS, LossType, NpoForm, term_losses
from trace_realign.model.loading import eval_mode, is_peft, process_state, trainable_parameters
from trace_realign.model.logprobs import response_logprobs
from trace_realign.model.tokenize import IGNORE_INDEX, TruncationReport, collate, encode_many, pad_id
from trace_realign.options import NORMALISATIONS, SCORING_MODES
from trace_realign.schema import Category, Prompt
from trace_realign.triage.terms import category_term

Mode = Literal["exact", "fd", "naive"]
Normalisation = Literal["mean", "paper"]
Gradient = dict[str, torch.Tensor]
# U2A's single negatives: NPO on the response `a` alone (`b` is not used, not encoded)
SINGLE = "npo_a"


@dataclass(frozen=True)
class ScoredItem:
    """One loss term on one prompt. `kind="pref"`: `ℓ_pref(x, a, b)`, prefer `a` over `b`;
    `kind="npo"`: `ℓ_NPO(x, a, b)`, suppress both."""

    id: str
    prompt: Prompt
    a: str
    b: str
    kind: Literal["pref", "npo", "npo_a"] = "pref"


@dataclass
class ScoreOptions:
    mode: Mode = "fd"
    beta: float = 0.3
    loss_type: LossType = "sigmoid"
    gamma: float = 1.0
    normalisation: Normalisation = "mean"
    batch_size: int = 8
    # pairs per backward pass of g_J (default batch_size // 2): a backward keeps every layer's
    # activations of its batch, a forward-only pass (fd, reference) frees them layer by layer, so the
    # gradient's batches set the stage's peak memory unless they are smaller
    grad_batch_size: int | None = None
    max_length: int | None = None
    max_prompt_length: int | None = None
    # fd: how far (nats per gold sequence) the step along g_J moves log-probabilities (see `fd_step`)
    fd_target_change: float = 0.05
    # the NPO terms' form: TRACE's, or U2A's when U2A re-estimates its weights (`losses.NpoForm`)
    npo: NpoForm = NpoForm()

    def __post_init__(self) -> None:
        if self.mode not in SCORING_MODES:
            raise InputError(
                f"unknown mode {self.mode!r}: use one of {', '.join(SCORING_MODES)}", field="mode"
            )
        if self.normalisation not in NORMALISATIONS:
            raise InputError(
                f"unknown normalisation {self.normalisation!r}: use one of {', '.join(NORMALISATIONS)}",
                field="normalisation",
            )
        if not self.gamma > 0:
            raise InputError(f"gamma must be positive, got {self.gamma}", field="gamma")
        if not self.beta > 0:
            raise InputError(f"beta must be positive, got {self.beta}", field="beta")
        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {self.batch_size}", field="batch_size")
        if self.grad_batch_size is not None and self.grad_batch_size < 1:
            raise InputError(
                f"grad batch size must be at least 1, got {self.grad_batch_size}", field="grad_batch_size"
            )

    @property
    def gradient_batch_size(self) -> int:
        """Pairs per backward pass of `g_J`."""
        return self.grad_batch_size or max(1, self.batch_size // 2)


@dataclass
class GoldDirection:
    """`g_J` by parameter name, and how many gold items (over all processes) were summed into it."""

    grad: Gradient
    n_items: int

    @property
    def norm(self) -> float:
        return gradient_norm(self.grad)


def conflict_item(
    pair_id: str,
    prompt: Prompt,
    chosen: str,
    rejected: str,
    category: Category,
    correction: str | None = None,
) -> ScoredItem:
    """The loss Algorithm 1 trains a conflict with (`triage.terms.category_term`): INVERT
    `ℓ_pref(x, y_l, y_w)`; PUNISH `ℓ_pref(x, y_c, y_w)` with an oracle correction, else `ℓ_NPO(x, y_w, y_l)`."""
    if category not in (Category.INVERT, Category.PUNISH):
        raise ValueError(f"{category} pairs are not conflicts")
    term = category_term(category, chosen, rejected, correction)
    return ScoredItem(pair_id, prompt, term.a, term.b, term.kind)


def item_loss(
    kind: str,
    pol_a: torch.Tensor,
    ref_a: torch.Tensor,
    pol_b: torch.Tensor,
    ref_b: torch.Tensor,
    beta: float,
    loss_type: LossType = "sigmoid",
    npo: NpoForm = NpoForm(),
    len_a: torch.Tensor | None = None,
    len_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-item loss `[N]` from sequence log-probabilities of `a` and `b`, by `losses.term_losses`,
    the function the trainer trains with: `pref` ℓ_pref(a ≻ b), `npo` NPO on both, `npo_a` (U2A's
    single negatives) NPO on `a` alone (`b` ignored). `npo`, `len_*`: the NPO form and, for U2A's
    per-token form, the responses' token counts."""
    code = torch.full_like(pol_a, TERM_KINDS["npo" if kind == SINGLE else kind], dtype=torch.long)
    only_a = torch.full_like(pol_a, kind != SINGLE, dtype=torch.bool)
    return term_losses(
        code, pol_a, ref_a, pol_b, ref_b, beta=beta, loss_type=loss_type, npo_b=only_a, npo=npo, len_a=len_a,
        len_b=len_b,
    )  # fmt: skip


def reference_coefficients(kind: str, beta: float, loss_type: LossType = "sigmoid") -> tuple[float, float]:
    """`(∂ℓ/∂log π(a), ∂ℓ/∂log π(b))` at `θ_ref`, where every log-ratio is 0.

    Taken from the loss functions themselves, so they cannot drift from them: `pref` (sigmoid)
    gives `(−β/2, +β/2)`, `pref` (ipo) `(−1/β, +1/β)`, `npo` `(+β/2, +β/2)`.
    """
    a = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, dtype=torch.float64)
    ga, gb = torch.autograd.grad(item_loss(kind, a, zero, b, zero, beta, loss_type).sum(), (a, b))
    return ga.item(), gb.item()


def _coefficient_vectors(items: Sequence[ScoredItem], beta: float, loss_type: LossType):
    pairs = [reference_coefficients(it.kind, beta, loss_type) for it in items]
    return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def _batch(tokenizer: Any, items: Sequence[ScoredItem], opts: ScoreOptions, report: TruncationReport | None):
    """One collated batch holding every `a` then every `b` of `items`."""
    seqs = [(it.prompt, it.a) for it in items] + [(it.prompt, it.b) for it in items]
    encs = encode_many(
        tokenizer, seqs, max_length=opts.max_length, max_prompt_length=opts.max_prompt_length, report=report
    )
    return collate(encs, pad_id(tokenizer))


class _ResponseLogprobs(torch.nn.Module):
    """`response_logprobs` of a model as a module's forward, so `torch.func.functional_call` can swap
    its parameters (named `model.<name>`) for the forward-mode pass of `exact`."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return response_logprobs(self.model, batch)


def _logprobs(model: Any, batch: dict[str, torch.Tensor], params: Gradient | None = None) -> torch.Tensor:
    """Summed response log-probabilities `[N]`, without full-vocabulary logits (`response_logprobs`)."""
    if params is None:
        return response_logprobs(model, batch)
    wrapped = _ResponseLogprobs(model)
    return torch.func.functional_call(
        wrapped, {f"model.{n}": p for n, p in params.items()}, (batch,), strict=False
    )


@contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    hf = model.get_base_model() if is_peft(model) else model
    before = hf.config._attn_implementation
    if before != "eager":
        hf.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager":
            hf.set_attn_implementation(before)


def _distributed() -> tuple[int, int]:
    state = process_state()
    return state.process_index, state.num_processes


def _sum_across_processes(grad: Gradient) -> Gradient:

    return {n: reduce(g, reduction="sum") for n, g in grad.items()}


def gold_gradient(
    model: Any,
    tokenizer: Any,
    gold: Sequence[ScoredItem],
    opts: ScoreOptions,
    *,
    exact_reference: bool = False,
    report: TruncationReport | None = None,
    progress: bool = True,
) -> GoldDirection:
    """`g_J = ∇_θ Σ_{D_gold} ℓ_pref(x, y+, y−)` over the trainable parameters, at `θ_ref`.

    The reference log-probabilities are the policy's own, detached (at `θ_ref` they are equal,
    so `Δ = 0` and the gradient is exact) unless `exact_reference`, which computes them with the
    reference network, as the oracle does.
    """
    if not gold:
        raise InputError("the gold batch is empty: g_J needs RETAIN or INVERT pairs", field="gold_size")
    if any(it.kind != "pref" for it in gold):
        raise ValueError("gold items are preferences (x, y+, y-): kind must be 'pref'")
    params = trainable_parameters(model)
    if not params:
        raise InputError("the model has no trainable parameters to score over", field="use_peft")
    rank, world = _distributed()
    shard = list(gold)[rank::world]
    # g_J accumulates in place in each parameter's .grad (backward adds to it as each gradient is
    # produced), so at most one gradient-sized tensor is alive rather than the sum and a batch's copy
    saved_grads = {n: p.grad for n, p in params.items()}
    for p in params.values():
        p.grad = None
    with eval_mode(model):  # LoRA dropout off: the weights must be those of θ_ref itself
        step = opts.gradient_batch_size
        for start in tqdm(range(0, len(shard), step), desc="g_J", disable=not progress):
            items = shard[start : start + step]
            n = len(items)
            batch = _batch(tokenizer, items, opts, report)
            lp = _logprobs(model, batch)
            if exact_reference:
                ref = reference_logprobs(
                    model,
                    tokenizer,
                    [(it.id, it.prompt, it.a) for it in items] + [(it.id, it.prompt, it.b) for it in items],
                    batch_size=2 * n,
                    max_length=opts.max_length,
                    max_prompt_length=opts.max_prompt_length,
                    progress=False,
                ).to(lp.device)
            else:
                ref = lp.detach()
            loss = item_loss("pref", lp[:n], ref[:n], lp[n:], ref[n:], opts.beta, opts.loss_type).sum()
            loss.backward(inputs=list(params.values()))
            del loss, lp, ref
    acc = {}
    for n, p in params.items():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        acc[n] = g.detach().float()
        p.grad = saved_grads[n]
    return GoldDirection(_sum_across_processes(acc) if world > 1 else acc, len(gold))


def gradient_norm(g: Gradient) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in g.values()))


def fd_step(g_J: Gradient, n_gold: int, opts: ScoreOptions) -> float:
    """The central-difference step `h` along `g_J`.

    Along `g_J` the gold objective changes at the known rate `‖g_J‖²`, and each gold sequence
    enters it with a coefficient of magnitude `|c|` (`reference_coefficients`), so `h` is set
    to move the gold log-probabilities by about `fd_target_change` nats per sequence: far above
    float32 rounding of a sequence log-probability, small enough that the `O(h²)` error stays
    near 1e-3 relative. (A step scaled by `‖θ‖` fails under LoRA: `‖θ‖` is all `A`, which `g_J`
    does not touch at `B = 0`.)
    """
    c = abs(reference_coefficients("pref", opts.beta, opts.loss_type)[0])
    return opts.fd_target_change * c * 2 * n_gold / gradient_norm(g_J) ** 2


def _directional_fd(model: Any, batch: dict[str, torch.Tensor], g_J: Gradient, h: float) -> torch.Tensor:
    """`(log π(θ + h g_J) − log π(θ − h g_J)) / 2h`, moving the trainable parameters in place.

    `θ → θ + d → θ − d → θ` (with `d = h g_J` formed one parameter at a time) is exact in floating
    point where `θ = 0` or `d = 0`: under LoRA at `θ_ref` that is every parameter (`B = 0`, and
    `g_J` is 0 on `A`), so no copy is made. Any other parameter (full fine-tuning) is copied
    first and restored from the copy, so scoring never leaves a rounding trace in the weights.
    """
    params = trainable_parameters(model)
    with torch.no_grad():
        saved = {n: p.clone() for n, p in params.items() if p.any() and g_J[n].any()}
    at = dict.fromkeys(params, 0)  # where each in-place parameter stands: θ + at·d
    out = []
    try:
        with torch.no_grad():
            for sign in (1, -1):
                for n, p in params.items():
                    if n in saved:
                        p.copy_(saved[n]).add_(g_J[n].to(p), alpha=sign * h)
                        continue
                    d = g_J[n].to(p) * h
                    while at[n] != sign:
                        p.add_(d) if at[n] < sign else p.sub_(d)
                        at[n] += 1 if at[n] < sign else -1
                out.append(_logprobs(model, batch).double())
    finally:
        with torch.no_grad():
            for n, p in params.items():
                if n in saved:
                    p.copy_(saved[n])
                elif at[n]:
                    d = g_J[n].to(p) * h
                    p.sub_(d) if at[n] > 0 else p.add_(d)
    return ((out[0] - out[1]) / (2 * h)).float()


def _directional_jvp(model: Any, batch: dict[str, torch.Tensor], g_J: Gradient) -> torch.Tensor:
    params = {n: p.detach() for n, p in trainable_parameters(model).items()}
    tangents = {n: g_J[n].to(p) for n, p in params.items()}
    _, d = torch.func.jvp(lambda ps: _logprobs(model, batch, ps), (params,), (tangents,))
    return d


def _naive_impacts(
    model: Any, tokenizer: Any, items: Sequence[ScoredItem], g_J: Gradient, opts: ScoreOptions, report
) -> list[float]:
    params = trainable_parameters(model)
    flat_g = torch.cat([g_J[n].flatten().double() for n in params])
    out = []
    for it in items:
        batch = _batch(tokenizer, [it], opts, report)
        ref = reference_logprobs(
            model,
            tokenizer,
            [(it.id, it.prompt, it.a), (it.id, it.prompt, it.b)],
            batch_size=2,
            max_length=opts.max_length,
            max_prompt_length=opts.max_prompt_length,
            progress=False,
        )
        lp = _logprobs(model, batch)
        ref = ref.to(lp.device)
        loss = item_loss(it.kind, lp[:1], ref[:1], lp[1:], ref[1:], opts.beta, opts.loss_type).sum()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        flat = torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).flatten().double()
                for g, p in zip(grads, params.values(), strict=True)
            ]
        )
        out.append(float(flat @ flat_g.to(flat.device)))
    return out


def conflict_impacts(
    model: Any,
    tokenizer: Any,
    items: Sequence[ScoredItem],
    gold: GoldDirection,
    opts: ScoreOptions,
    *,
    done: dict[str, float] | None = None,
    on_batch: Callable[[dict[str, float]], None] | None = None,
    report: TruncationReport | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Raw impacts `⟨g_J, ∇ℓ_i⟩` by item id, before damping, clamping and normalisation.

    Ids in `done` are taken as computed (resume); `on_batch` receives each new batch's values
    as soon as it is computed, so the caller can save them. Under several processes each
    scores every `world`-th pending item and all results are gathered.
    """
    done = dict(done or {})
    rank, world = _distributed()
    pending = [it for it in items if it.id not in done][rank::world]
    mine: dict[str, float] = {}
    g_J, gnorm = gold.grad, gold.norm
    h = fd_step(g_J, gold.n_items, opts) if opts.mode == "fd" and gnorm > 0 else 0.0
    bar = tqdm(total=len(pending), desc=f"impact ({opts.mode})", unit="pair", disable=not progress)
    with eval_mode(model), _eager_attention(model) if opts.mode == "exact" else _nothing():
        for start in range(0, len(pending), opts.batch_size):
            chunk = pending[start : start + opts.batch_size]
            n = len(chunk)
            if gnorm == 0:
                values = [0.0] * n  # no gold direction: nothing agrees with it
            elif opts.mode == "naive":
                values = _naive_impacts(model, tokenizer, chunk, g_J, opts, report)
            else:
                batch = _batch(tokenizer, chunk, opts, report)
                if opts.mode == "exact":
                    d = _directional_jvp(model, batch, g_J)
                else:
                    d = _directional_fd(model, batch, g_J, h)
                ca, cb = _coefficient_vectors(chunk, opts.beta, opts.loss_type)
                d = d.detach().double().cpu()
                values = (ca.double() * d[:n] + cb.double() * d[n:]).tolist()
            new = {it.id: float(v) for it, v in zip(chunk, values, strict=True)}
            mine.update(new)
            if on_batch is not None:
                on_batch(new)
            bar.update(n)
    bar.close()
    if world > 1:
        for part in gather_object([mine]):
            done.update(part)
    else:
        done.update(mine)
    return {it.id: done[it.id] for it in items}


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def normalise_weights(
    raw: Sequence[float], *, gamma: float = 1.0, normalisation: Normalisation = "mean"
) -> list[float]:
    """Algorithm 1 line 20 over the conflicts: `w ← w/γ`, `w ← max(0, w)`, then

    - `paper`: `w / Σ|w|` (weights sum to 1, as published);
    - `mean`: `N · w / Σ|w|` (mean weight 1 over the N conflicts, so a mini-batch loss keeps its
      scale whatever the dataset size; relative weights are the paper's).

    With either normalisation a positive `γ` cancels out; it matters only for raw weights.
    If every weight clamps to 0 all stay 0 (no conflict agrees with the gold direction).
    """
    w = [max(0.0, r / gamma) for r in raw]
    total = sum(w)
    if total == 0:
        return [0.0] * len(w)
    scale = 1 / total if normalisation == "paper" else len(w) / total
    return [x * scale for x in w]


def impact_weights(
    model: Any,
    tokenizer: Any,
    conflicts: Sequence[ScoredItem],
    gold: Sequence[ScoredItem],
    opts: ScoreOptions | None = None,
    *,
    progress: bool = True,
) -> dict[str, float]:
    """Normalised impact weights by conflict id: `g_J` from `gold`, then every conflict's weight."""
    opts = opts or ScoreOptions()
    if not conflicts:
        raise InputError("there are no conflicts (INVERT or PUNISH pairs) to score", field="category")
    g_J = gold_gradient(model, tokenizer, gold, opts, exact_reference=opts.mode == "naive", progress=progress)
    raw = conflict_impacts(model, tokenizer, conflicts, g_J, opts, progress=progress)
    weights = normalise_weights(list(raw.values()), gamma=opts.gamma, normalisation=opts.normalisation)
    return dict(zip(raw, weights, strict=True))


# ---- at the current parameters (U2A's rounds; the NPO impact of trace-no-triage) ------------
#
# Everything above holds at θ_ref only, where every log-ratio is 0 and the loss coefficients are
# constants. Below, the same directional derivatives are taken at whatever parameters the model
# holds now, and each item's coefficients `∂ℓ_i/∂log π(a)`, `∂ℓ_i/∂log π(b)` come from its current
# log-ratios against the frozen reference log-probabilities passed in. At θ_ref the two agree.
#
# Items may also be `kind="npo_a"`: NPO on the single response `a` (`b` is not used, not encoded).


def current_coefficients(
    kinds: Sequence[str],
    pol_a: torch.Tensor,
    ref_a: torch.Tensor,
    pol_b: torch.Tensor,
    ref_b: torch.Tensor,
    beta: float,
    loss_type: LossType = "sigmoid",
    npo: NpoForm = NpoForm(),
    len_a: torch.Tensor | None = None,
    len_b: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(∂ℓ_i/∂log π(a_i), ∂ℓ_i/∂log π(b_i))` `[N]` (float64) at the given log-probabilities.

    Taken by autograd from the loss functions, as `reference_coefficients` does; with every
    log-ratio 0 they equal those constants. `b`'s coefficient is 0 for `npo_a`.
    """
    a = pol_a.detach().double().cpu().requires_grad_(True)
    b = pol_b.detach().double().cpu().requires_grad_(True)
    ra, rb = ref_a.detach().double().cpu(), ref_b.detach().double().cpu()
    total = a.new_zeros(())
    for kind in sorted(set(kinds)):
        m = torch.tensor([k == kind for k in kinds])
        la, lb = (None, None) if len_a is None else (len_a[m], len_b[m])
        total = total + item_loss(kind, a[m], ra[m], b[m], rb[m], beta, loss_type, npo, la, lb).sum()
    ga, gb = torch.autograd.grad(total, (a, b), allow_unused=True)
    return (
        ga if ga is not None else torch.zeros_like(a),
        gb if gb is not None else torch.zeros_like(b),
    )


def _current_batch(tokenizer: Any, items: Sequence[ScoredItem], opts: ScoreOptions, report):
    """Every `a`, then the `b` of every two-response item; `b_rows[i]` is -1 for `npo_a`."""
    seqs = [(it.prompt, it.a) for it in items]
    b_rows = []
    for it in items:
        if it.kind == SINGLE:
            b_rows.append(-1)
        else:
            b_rows.append(len(seqs))
            seqs.append((it.prompt, it.b))
    encs = encode_many(
        tokenizer, seqs, max_length=opts.max_length, max_prompt_length=opts.max_prompt_length, report=report
    )
    return collate(encs, pad_id(tokenizer)), torch.tensor(b_rows)


def _response_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Response tokens of each sequence of a collated batch `[S]` (U2A's NPO reads per token)."""
    return (batch["labels"] != IGNORE_INDEX).sum(-1).cpu()


def _split(values: torch.Tensor, b_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item: `a`'s value and `b`'s (0 where there is no `b`)."""
    n = b_rows.numel()
    va = values[:n]
    vb = torch.where(b_rows >= 0, values[b_rows.clamp(min=0)], torch.zeros_like(va))
    return va, vb


def _as_ref(ref: Sequence[tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.tensor([[float(x) for x in r] for r in ref], dtype=torch.float64).reshape(-1, 2)
    return t[:, 0], t[:, 1]


def objective_gradient(
    model: Any,
    tokenizer: Any,
    items: Sequence[ScoredItem],
    ref: Sequence[tuple[float, float]],
    opts: ScoreOptions,
    *,
    report: TruncationReport | None = None,
) -> tuple[GoldDirection, float]:
    """`∇_θ Σ_i ℓ(x_i, a_i, b_i)` at the current parameters, and the mean loss `J`.

    `ref[i]` holds the frozen reference log-probabilities of `a_i` and `b_i` (`b`'s is unused for
    `npo_a`). Eval mode (no dropout), as in `gold_gradient`; processes split the items and sum.
    """
    if not items:
        raise InputError("the objective J has no pairs", field="u2a_objective")
    params = trainable_parameters(model)
    if not params:
        raise InputError("the model has no trainable parameters to score over", field="use_peft")
    ref_a, ref_b = _as_ref(ref)
    rank, world = _distributed()
    order = list(range(len(items)))[rank::world]
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    loss_sum = torch.zeros((), dtype=torch.float64)
    with eval_mode(model):
        for start in range(0, len(order), opts.batch_size):
            idx = order[start : start + opts.batch_size]
            chunk = [items[i] for i in idx]
            batch, b_rows = _current_batch(tokenizer, chunk, opts, report)
            lp = _logprobs(model, batch)
            pa, pb = _split(lp, b_rows.to(lp.device))
            ra, rb = ref_a[idx].to(lp), ref_b[idx].to(lp)
            loss = lp.new_zeros(())
            for kind in sorted({it.kind for it in chunk}):
                m = torch.tensor([it.kind == kind for it in chunk], device=lp.device)
                loss = loss + item_loss(kind, pa[m], ra[m], pb[m], rb[m], opts.beta, opts.loss_type).sum()
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    acc[name] += g.float()
            loss_sum += float(loss.detach())
    if world > 1:
        acc = _sum_across_processes(acc)
        loss_sum = reduce(loss_sum.to(next(iter(acc.values())).device), reduction="sum").cpu()
    return GoldDirection(acc, len(items)), float(loss_sum) / len(items)


def objective_loss(
    model: Any,
    tokenizer: Any,
    items: Sequence[ScoredItem],
    ref: Sequence[tuple[float, float]],
    opts: ScoreOptions,
    *,
    report: TruncationReport | None = None,
) -> float:
    """The mean loss `J` over `items` at the current parameters, forward passes only (no gradient):
    what U2A reads at the end to keep the best of its rounds. Processes split the items and sum."""
    if not items:
        raise InputError("the objective J has no pairs", field="u2a_objective")
    ref_a, ref_b = _as_ref(ref)
    rank, world = _distributed()
    order = list(range(len(items)))[rank::world]
    total = torch.zeros((), dtype=torch.float64)
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(order), opts.batch_size):
            idx = order[start : start + opts.batch_size]
            chunk = [items[i] for i in idx]
            batch, b_rows = _current_batch(tokenizer, chunk, opts, report)
            lp = _logprobs(model, batch).double().cpu()
            pa, pb = _split(lp, b_rows)
            for j, it in enumerate(chunk):
                total += float(
                    item_loss(
                        it.kind, pa[[j]], ref_a[[idx[j]]], pb[[j]], ref_b[[idx[j]]], opts.beta, opts.loss_type
                    )
                )
    if world > 1:
        total = reduce(total.to(next(model.parameters()).device), reduction="sum").cpu()
    return float(total) / len(items)


def _value_and_directional(
    model: Any, batch: dict[str, torch.Tensor], g: Gradient, mode: Mode, h: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probabilities at the current parameters and their derivative along `g`.

    `exact`: one forward-mode pass gives both. `fd`: two passes at `θ ± h g`; their mean is the
    log-probability to `O(h²)`, their difference the derivative."""
    if mode == "exact":
        params = {n: p.detach() for n, p in trainable_parameters(model).items()}
        tangents = {n: g[n].to(p) for n, p in params.items()}
        lp, d = torch.func.jvp(lambda ps: _logprobs(model, batch, ps), (params,), (tangents,))
        return lp.detach().double(), d.detach().double()
    params = trainable_parameters(model)
    saved = {n: p.detach().clone() for n, p in params.items()}
    out = []
    try:
        with torch.no_grad():
            for sign in (1.0, -1.0):
                for n, p in params.items():
                    p.copy_(saved[n] + (sign * h) * g[n].to(p))
                out.append(_logprobs(model, batch).double())
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])
    return (out[0] + out[1]) / 2, (out[0] - out[1]) / (2 * h)


def _naive_current(
    model: Any, tokenizer: Any, it: ScoredItem, ref_a: torch.Tensor, ref_b: torch.Tensor, g: Gradient,
    opts: ScoreOptions, report: TruncationReport | None,
) -> tuple[float, float]:  # fmt: skip
    """One item's `⟨g, ∇ℓ⟩` by a real backward of its loss, flattened and dotted (the slow oracle),
    and its current loss."""
    params = trainable_parameters(model)
    flat_g = torch.cat([g[n].flatten().double() for n in params])
    batch, b_rows = _current_batch(tokenizer, [it], opts, report)
    lp = _logprobs(model, batch)
    pa, pb = _split(lp, b_rows.to(lp.device))
    la, lb = _split(_response_tokens(batch), b_rows)
    loss = item_loss(
        it.kind, pa, ref_a.to(lp), pb, ref_b.to(lp), opts.beta, opts.loss_type, opts.npo, la.to(lp), lb.to(lp)
    ).sum()
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    flat = torch.cat(
        [
            (gr if gr is not None else torch.zeros_like(p)).flatten().double()
            for gr, p in zip(grads, params.values(), strict=True)
        ]
    )
    return float(flat @ flat_g.to(flat.device)), float(loss.detach())


def current_impacts(
    model: Any,
    tokenizer: Any,
    items: Sequence[ScoredItem],
    ref: Sequence[tuple[float, float]],
    direction: GoldDirection,
    opts: ScoreOptions,
    *,
    report: TruncationReport | None = None,
    progress: bool = False,
) -> tuple[list[float], list[float]]:
    """`⟨g, ∇ℓ_i⟩` for every item at the current parameters, and each current loss `ℓ_i`.

    `ref[i]`: frozen reference log-probabilities of `a_i`, `b_i`. The coefficients of `∇log π`
    come from the current log-ratios (`current_coefficients`), the directional derivatives from
    `exact` (forward mode) or `fd` (central difference, step `fd_step`); `naive` is one backward
    per item, flattened and dotted with `g` (the slow oracle). Processes split the items.
    """
    ref_a, ref_b = _as_ref(ref)
    g, gnorm = direction.grad, direction.norm
    rank, world = _distributed()
    order = list(range(len(items)))[rank::world]
    mine: dict[int, tuple[float, float]] = {}
    h = fd_step(g, direction.n_items, opts) if opts.mode == "fd" and gnorm > 0 else 0.0
    bar = tqdm(total=len(order), desc=f"impact at θ ({opts.mode})", disable=not progress)
    with eval_mode(model), _eager_attention(model) if opts.mode == "exact" else _nothing():
        for start in range(0, len(order), opts.batch_size):
            idx = order[start : start + opts.batch_size]
            chunk = [items[i] for i in idx]
            kinds = [it.kind for it in chunk]
            ra, rb = ref_a[idx], ref_b[idx]
            if opts.mode == "naive":
                for i, it in zip(idx, chunk, strict=True):
                    mine[i] = _naive_current(model, tokenizer, it, ref_a[[i]], ref_b[[i]], g, opts, report)
            else:
                batch, b_rows = _current_batch(tokenizer, chunk, opts, report)
                if gnorm == 0:
                    with torch.no_grad():
                        lp = _logprobs(model, batch).double().cpu()
                    d = torch.zeros_like(lp)
                else:
                    lp, d = _value_and_directional(model, batch, g, opts.mode, h)
                    lp, d = lp.cpu(), d.cpu()
                pa, pb = _split(lp, b_rows)
                da, db = _split(d, b_rows)
                la, lb = (x.double() for x in _split(_response_tokens(batch), b_rows))
                ca, cb = current_coefficients(
                    kinds, pa, ra, pb, rb, opts.beta, opts.loss_type, opts.npo, la, lb
                )
                values = ca * da + cb * db
                with torch.no_grad():
                    losses = [
                        float(
                            item_loss(
                                k,
                                pa[[j]],
                                ra[[j]],
                                pb[[j]],
                                rb[[j]],
                                opts.beta,
                                opts.loss_type,
                                opts.npo,
                                la[[j]],
                                lb[[j]],
                            )  # fmt: skip
                        )
                        for j, k in enumerate(kinds)
                    ]
                for j, i in enumerate(idx):
                    mine[i] = (float(values[j]), losses[j])
            bar.update(len(idx))
    bar.close()
    if world > 1:
        merged: dict[int, tuple[float, float]] = {}
        for part in gather_object([mine]):
            merged.update(part)
        mine = merged
    return [mine[i][0] for i in range(len(items))], [mine[i][1] for i in range(len(items))]
