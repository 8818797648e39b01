"""The demo's settings: run sizes and the comparison protocol, read from `demo.yaml`, and the
`trace-realign run` configuration they give (`pipeline_config`), the same for every method.

    from trace_realign.demo.settings import load_settings
    settings = load_settings()            # or load_settings("my_demo.yaml")
    size = settings.sizes["default"]      # a DemoSize
    from trace_realign.scenario.source import load_scenario
    values = load_settings(overlay=load_scenario("values").settings)  # a scenario's own choices
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.io import load_yaml
from trace_realign.scenario.generate import ScenarioConfig
from trace_realign.scenario.mref import MrefSettings
from trace_realign.scenario.source import DATA_DIR

SETTINGS_FILE = Path(__file__).with_name("demo.yaml")
# the embedded scenario's attack judge (operational help only) and its independent second judge;
# every scenario names its own (`ScenarioSource.files`)
ATTACK_RULES = DATA_DIR / "attack_rules.yaml"
EVAL_JUDGE_CUES = DATA_DIR / "eval_judge.yaml"
LORA_TARGETS = ("q_proj", "v_proj")


@dataclass(frozen=True)
class DemoSize:
    """Everything that sets how big (and how slow) a demo run is."""

    scenario: ScenarioConfig
    mref: MrefSettings
    train_steps: int
    train_batch_size: int
    learning_rate: float
    gold_size: int
    max_new_tokens: int
    eval_batch_size: int
    lora_r: int = 16
    lora_alpha: int = 32
    # the protocol, the same for every method (docs/results.md, "The comparison protocol")
    sampler: str = "natural"  # the data's own category proportions, as the paper's trainer
    aux_nll: float = 0.0  # weight of the auxiliary NLL of the preferred response, 0 = off for all
    alpha_kl: float = 0.1  # α_KL of the TRACE rows (the baselines have no KL term)
    compare_heldout: int = 256  # held-out prompts of `--compare` (the default run uses the scenario's)
    extra_train: dict[str, Any] = field(default_factory=dict)
    # real harmful prompts from outside the scenario (`evaluate.external`): {set, limit, max_new_tokens};
    # the held-out run reads its report third, a validation run its validation third
    external: dict[str, Any] | None = None


@dataclass(frozen=True)
class CompareProtocol:
    """What `demo --compare` trains and tests (`compare:` in demo.yaml)."""

    reference: str
    also_tested: tuple[str, ...]
    methods: tuple[str, ...]
    seeded: dict[str, int]  # method -> training seeds (the others train under one)
    seeds: int  # the most seeds any method trains under (`--seeds` lowers it for a quick look)
    noise_rates: tuple[float, ...]
    heldout: int
    tradeoff_points: int
    tradeoff_prompts: int | None
    # each method's own train options over the size's block: the learning rate chosen for it on the
    # validation split (`demo --tune`), U2A's own settings
    method_train: dict[str, dict[str, Any]] = field(default_factory=dict)
    # every noise rate's triage is scored (do the weights find the flipped verdicts?); at the rates of
    # noise_train_rates these methods are also trained, under noise_seeds seeds
    noise_methods: tuple[str, ...] = ("trace",)
    noise_train_rates: tuple[float, ...] = ()
    noise_seeds: int = 1
    # the old data cut to these shares (seeded), its own triage and weights, these methods and seeds
    scale_fractions: tuple[float, ...] = ()
    scale_methods: tuple[str, ...] = ()
    scale_seeds: int = 1

    @property
    def choices(self) -> tuple[str, ...]:
        """What `--methods` can pick (the reference always runs): the rows, "noise" (the noisy-judge
        runs) and "scale" (the data-scale runs)."""
        return (*self.methods, "noise", "scale")


@dataclass(frozen=True)
class Tuning:
    """What `demo --tune` tries on the validation split (`tuning:` in demo.yaml): every method of
    `methods` at every learning rate of `learning_rates`, and a method of `extra_rates` at its own
    further rates too (U2A's grid reaches below the anchored objectives'), one training seed, the rest
    as in the comparison. The rate with the highest validation agreement is the method's."""

    methods: tuple[str, ...]
    learning_rates: tuple[float, ...]
    extra_rates: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def rates(self, method: str) -> tuple[float, ...]:
        """The rates `method` trains at, in increasing order."""
        return tuple(sorted({*self.learning_rates, *self.extra_rates.get(method, ())}))

    def all_rates(self) -> tuple[float, ...]:
        """Every rate some method trains at, in increasing order."""
        return tuple(sorted({lr for m in self.methods for lr in self.rates(m)}))


@dataclass(frozen=True)
class DemoSettings:
    sizes: dict[str, DemoSize]
    compare: CompareProtocol
    tuning: Tuning
    source: str


def _known(cls: type, block: Any, where: str, path: str) -> dict[str, Any]:
    if not isinstance(block, dict):
        raise InputError("expected a mapping", path=path, field=where)
    names = {f.name for f in fields(cls)}
    for key in block:
        if key not in names:
            raise InputError(
                f"unknown option (known: {', '.join(sorted(names))})", path=path, field=f"{where}.{key}"
            )
    return dict(block)


def _size(name: str, block: Any, path: str) -> DemoSize:
    opts = _known(DemoSize, block, f"sizes.{name}", path)
    for key in ("scenario", "mref", "train_steps", "train_batch_size", "learning_rate", "gold_size",
                "max_new_tokens", "eval_batch_size"):  # fmt: skip
        if key not in opts:
            raise InputError("missing", path=path, field=f"sizes.{name}.{key}")
    mref = _known(MrefSettings, opts["mref"] or {}, f"sizes.{name}.mref", path)
    if "target_modules" in mref:
        mref["target_modules"] = tuple(mref["target_modules"])
    scenario = _known(ScenarioConfig, opts["scenario"] or {}, f"sizes.{name}.scenario", path)
    return DemoSize(**{**opts, "scenario": ScenarioConfig(**scenario), "mref": MrefSettings(**mref)})


def load_settings(path: str | Path | None = None, overlay: str | Path | None = None) -> DemoSettings:
    """The sizes and the comparison protocol of a demo YAML file (default: the packaged demo.yaml).

    `overlay`: a scenario's own settings (its manifest's `settings` file: what was chosen on its
    validation split), laid over the file's. `sizes` and `compare` merge key by key, down to one
    method's `method_train` options; a `tuning` block replaces the file's whole; any other value
    replaces the file's. An error in the merged settings names both files."""
    file = Path(path) if path is not None else SETTINGS_FILE
    data = load_yaml(file)
    if overlay is not None:
        data = _laid_over(data, Path(overlay))
    path = str(file) if overlay is None else f"{overlay} (over {file})"  # what an error names
    for key in ("sizes", "compare"):
        if not isinstance(data.get(key), dict):
            raise InputError("missing or not a mapping", path=path, field=key)
    sizes = {name: _size(name, block, path) for name, block in data["sizes"].items()}
    proto = _known(CompareProtocol, data["compare"], "compare", path)
    for key in (
        "also_tested", "methods", "noise_rates", "noise_methods", "noise_train_rates", "scale_fractions",
        "scale_methods",
    ):  # fmt: skip
        proto[key] = tuple(proto.get(key) or ())
    proto["method_train"] = {m: dict(opts or {}) for m, opts in (proto.get("method_train") or {}).items()}
    seeded = proto.get("seeded") or {}
    if not isinstance(seeded, dict) or not all(isinstance(n, int) and n >= 1 for n in seeded.values()):
        raise InputError("expected method: number of seeds (>= 1)", path=path, field="compare.seeded")
    proto["seeded"] = dict(seeded)
    tune = _known(Tuning, data.get("tuning") or {"methods": [], "learning_rates": []}, "tuning", path)
    for key in ("methods", "learning_rates"):
        if not isinstance(tune.get(key), list):
            raise InputError("missing, or not a list", path=path, field=f"tuning.{key}")
    try:
        compare = CompareProtocol(**proto)
        extra = tune.get("extra_rates") or {}
        if not isinstance(extra, dict) or not all(isinstance(v, list) for v in extra.values()):
            raise InputError("expected method: [learning rates]", path=path, field="tuning.extra_rates")
        for m in extra:
            if m not in tune["methods"]:
                raise InputError("not one of tuning.methods", path=path, field=f"tuning.extra_rates.{m}")
        tuning = Tuning(
            tuple(tune["methods"]),
            tuple(float(x) for x in tune["learning_rates"]),
            {m: tuple(float(x) for x in v) for m, v in extra.items()},
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise InputError(str(exc), path=path, field="compare") from None
    return DemoSettings(sizes, compare, tuning, path)


def _laid_over(data: dict[str, Any], overlay: Path) -> dict[str, Any]:
    """`data` with the overlay file's blocks merged in (`load_settings`)."""
    top = load_yaml(overlay, "scenario settings")
    for key, block in top.items():
        if key not in ("sizes", "compare", "tuning"):
            raise InputError("unknown key (expected compare, sizes, tuning)", path=str(overlay), field=key)
        if not isinstance(block, dict):
            raise InputError("expected a mapping", path=str(overlay), field=key)
    return {
        **data,
        **{k: block if k == "tuning" else _merged(data.get(k), block) for k, block in top.items()},
    }


def _merged(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merged(base.get(k), v) for k, v in over.items()}}
    return over


def aux_nll_options(weight: float) -> dict[str, Any]:
    """The trainer options of the auxiliary NLL term on the preferred response, for every method.

    The one place that names the option: TRL 1.16's `"sft"` entry of `loss_type` with its share in
    `loss_weights` (the old `rpo_alpha`); 0 leaves the paper's objective alone."""
    if weight <= 0:
        return {}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, float(weight)]}


def pipeline_config(
    run_dir: Path,
    mref: Path,
    paths: dict[str, Path],
    size: DemoSize,
    *,
    methods: list[str],
    judge: str | None = None,
    evaluate_reference: bool = True,
    seed: int = 0,
    score_seed: int | None = None,
    asr: str = "operational",
    progress: bool = True,
    method_train: dict[str, dict[str, Any]] | None = None,
    prompts: str = "heldout",
    attack_rules: Path = ATTACK_RULES,
    eval_cues: Path = EVAL_JUDGE_CUES,
) -> dict[str, Any]:
    """The `trace-realign run` configuration of the demo (also written to `run_dir/config.yaml`).

    Triage reads the scenario's pairs with `judge` (default: the new policy's rule judge) and the
    scenario's oracle corrections (used by trace-oracle and dpo-gold only). Equal exposure: every
    method gets the same `train` block (steps, batch, learning-rate schedule, sampler policy, the
    auxiliary NLL term), over which `method_train` sets a method's own options (the learning rate
    chosen for it on validation); evaluation always uses the clean rule judge, on the `prompts`
    split ("heldout" for results, "validation" for choosing settings), with the scenario's attack rules
    and typed judge's cues (`attack_rules`, `eval_cues`; default: the embedded scenario's).
    """
    clean = f"rules:{paths['new_rules']}"
    lora = {"lora_r": size.lora_r, "lora_alpha": size.lora_alpha, "lora_target_modules": list(LORA_TARGETS)}
    return {
        "run_dir": str(run_dir),
        "model": str(mref),
        "data": str(paths["pairs"]),
        "policy": str(paths["new_policy"]),
        "judge": judge or clean,
        "triage": {"corrections": f"file:{paths['corrections']}", "progress": progress},
        # LoRA, loss, lengths and seed: the pipeline scores with the settings training uses
        # `score_seed` (default `seed`) seeds impact scoring: the training seeds share one scoring
        "score": {
            "gold_size": size.gold_size,
            "no_progress": not progress,
            "seed": seed if score_seed is None else score_seed,
        },
        "methods": methods,
        "train": {
            "max_steps": size.train_steps,
            "per_device_train_batch_size": size.train_batch_size,
            "learning_rate": size.learning_rate,
            "seed": seed,
            "logging_steps": max(1, size.train_steps // 10),
            "save_steps": max(1, size.train_steps // 3),
            "save_total_limit": 1,
            "disable_tqdm": not progress,
            "sampler": size.sampler,
            "alpha_kl": size.alpha_kl,
            **aux_nll_options(size.aux_nll),
            **lora,
            **size.extra_train,
        },
        "method_train": method_train or {},
        "evaluate": {
            "prompts": str(paths[prompts]),
            "judge": clean,
            "reference": evaluate_reference,
            "mc_file": str(paths["multiple_choice"]),
            "text_file": str(paths["neutral_text"]),
            "generation": {"max_new_tokens": size.max_new_tokens},
            "batch_size": size.eval_batch_size,
            "progress": progress,
            # attack success counts operational help only; an independent typed judge reads beside
            "asr": asr,
            "attack_judge": f"rules:{attack_rules}",
            "judges": {"typed": {"kind": "typed", "file": str(eval_cues)}},
            **_external(size, prompts, eval_cues),
        },
    }


def _external(size: DemoSize, prompts: str, eval_cues: str | Path) -> dict[str, Any]:
    """The evaluate block's external prompts: the report third for results, the validation third
    when settings are being chosen; the typed judge's declining cues as the second reading."""
    if not size.external:
        return {}
    split = "report" if prompts == "heldout" else "validation"
    return {"external": {**size.external, "split": split, "cues": str(eval_cues)}}
