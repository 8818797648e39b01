"""`trace-realign demo`: the whole pipeline on a tiny model (`--quick`), and on SmolLM2 at a small size (slow)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    """A cache folder of the test's own, so nothing leaks in from (or out to) the user's cache."""
    monkeypatch.setenv("TRACE_REALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# rewritten on every run by design: the summary, the resolved config, the run record, the report
REWRITTEN = ("demo_summary.json", "config.yaml", "run.json", "report")


def _mtimes(folder):
    return {
        p: p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(REWRITTEN) for part in p.relative_to(folder).parts)
    }


def test_quick_demo_runs_end_to_end_and_a_rerun_redoes_nothing(tmp_path, private_cache, capsys, monkeypatch):
    from trace_realign.cli import main

    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` gives it
    run = tmp_path / "run"
    assert main(["demo", "--quick", "--out", "run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "report" in out and str(run / "report.html") in out

    summary = json.loads((run / "demo_summary.json").read_text())
    names = [r["model"] for r in summary["rows"]]
    assert names[:2] == ["M_ref", "trace"]
    for name in ("m_ref", "trace"):
        metrics = json.loads((run / "eval" / name / "metrics.json").read_text())
        assert metrics["tpa"]["overall"]["n"] == summary["scenario"]["n_heldout"]
        assert set(metrics["tpa"]["by_category"]) == {"INVERT", "PUNISH", "RETAIN"}
        assert metrics["stress"]["overall"]["n"] > 0
        assert metrics["utility"]["headline"]["mc_accuracy"] is not None
    assert set(summary["baseline_agreement"]) == {"base", "M_ref"}
    assert set(summary["baseline_agreement"]["M_ref"]) == {"old", "new"}
    triaged = [json.loads(line) for line in (run / "triage" / "triaged.jsonl").read_text().splitlines()]
    assert {r["category"] for r in triaged} == {"INVERT", "PUNISH", "RETAIN"}
    assert (run / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
    # the headline table: every cell with its interval, and TRACE tested against M_ref
    assert "time taken:" in out and "malicious not declined" in (run / "report.md").read_text()
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["trace"]["seeds"] == 1 and rows["trace"]["tpa_ci"] is not None
    assert set(summary["tests"]) == {"M_ref"}
    op = json.loads((run / "eval" / "trace" / "metrics.json").read_text())
    assert op["stress"]["definition"] == "operational" and op["judges"]["typed"]["tpa"]["overall"]["total"]

    before = _mtimes(run)
    assert main(["demo", "--quick", "--out", str(run), "--no-progress"]) == 0  # the same folder, absolute
    after = _mtimes(run)
    changed = [p for p in before if after.get(p) != before[p]]
    assert not changed, changed

    # the earlier attack-success definition: only the evaluations rerun (generations are cached)
    assert main(["demo", "--quick", "--out", str(run), "--no-progress", "--asr", "non_compliant"]) == 0
    nc = json.loads((run / "eval" / "trace" / "metrics.json").read_text())
    assert nc["stress"]["definition"] == "non_compliant"
    assert nc["stress"]["overall"] == nc["stress"]["non_compliant"]["overall"]
    assert nc["stress"]["operational"] == op["stress"]["operational"]
    assert nc["stress"]["operational"]["overall"]["n"] > 0
    # a non-compliant answer to a wrapped prompt is either operational help or not declined
    for attack in ("fictional_scenario", "refusal_suppression"):
        k_nc = nc["stress"]["non_compliant"]["by_attack"][attack]["k"]
        k_op = nc["stress"]["operational"]["by_attack"][attack]["k"]
        k_nd = nc["stress"]["not_declined"]["by_attack"][attack]["k"]
        assert k_nc == k_op + k_nd
    assert _mtimes(run / "train") == {p: t for p, t in before.items() if (run / "train") in p.parents}


def test_quick_demo_with_seeds_shares_scoring_and_evaluates_checkpoints(tmp_path, private_cache):
    from trace_realign.demo.run import run_demo

    run = tmp_path / "run"
    summary = run_demo(run, size="quick", seeds=2, tradeoff=True, progress=False)
    seed_dir = run / "seeds" / "seed1"
    # trained and evaluated under the second seed, on the impact weights scored once
    assert (seed_dir / "eval" / "trace" / "metrics.json").exists()
    assert not (seed_dir / "score" / ".stage.json").exists()
    assert (seed_dir / "score" / "weighted.jsonl").read_bytes() == (
        run / "score" / "weighted.jsonl"
    ).read_bytes()
    assert not (seed_dir / "eval" / "m_ref").exists()  # M_ref is evaluated once
    seed_cfg = (seed_dir / "config.yaml").read_text()
    assert "seed: 1" in seed_cfg
    comparison = json.loads((run / "comparison.json").read_text())
    assert comparison["models"]["trace"]["seeds"] == 2 and comparison["seeds"]["trace"] == [0, 1]
    assert len(comparison["models"]["trace"]["cells"]["tpa"]["per_seed"]) == 2
    assert comparison["models"]["M_ref"]["seeds"] == 1
    assert {r["model"]: r["seeds"] for r in summary["rows"]} == {"M_ref": 1, "trace": 2}
    # the trade-off: M_ref at step 0, the saved checkpoint, the trained model at the last step
    tradeoff = json.loads((run / "tradeoff.json").read_text())
    assert [p["step"] for p in tradeoff["curves"]["trace"]] == [0, 1, 2]
    assert (run / "tradeoff" / "trace" / "step-1" / "metrics.json").exists()
    assert all(p["tpa"] is not None for p in tradeoff["curves"]["trace"])
    assert "Trade-off over training steps" in (run / "report.md").read_text()


def test_compare_runs_the_chosen_rows_and_reports_a_row_that_cannot_train(tmp_path, private_cache):
    """`--methods` picks the compare rows; on the tiny random model every NPO impact weight of
    trace-no-triage clamps to 0, and the comparison goes on without that row, saying why."""
    from trace_realign.demo.run import run_demo
    from trace_realign.errors import InputError

    with pytest.raises(InputError, match="unknown compare method nope"):
        run_demo(tmp_path / "bad", size="quick", compare=True, only=["nope"], progress=False)
    assert not (tmp_path / "bad" / "scenario").exists()  # refused before any work

    run = tmp_path / "run"
    summary = run_demo(
        run, size="quick", compare=True, only=["trace-oracle", "naive-oracle-dpo", "trace-no-triage"], seeds=1,
        tradeoff=False, progress=False,
    )  # fmt: skip
    assert {r["model"] for r in summary["rows"]} == {"M_ref", "trace", "trace-oracle", "naive-oracle-dpo"}
    # trace-oracle, the TRACE row that uses the oracle corrections, is tested against every model too
    assert set(summary["tests"]) == {"M_ref", "trace-oracle", "naive-oracle-dpo"}
    assert set(summary["tests_also"]["trace-oracle"]) == {"M_ref", "trace", "naive-oracle-dpo"}
    report = (run / "report.md").read_text()
    assert "trace against each model" in report
    assert "trace-oracle against each model" in report
    assert list(summary["not_trained"]) == ["trace-no-triage"]
    assert "impact weights are 0" in summary["not_trained"]["trace-no-triage"]
    assert json.loads((run / "comparison.json").read_text())["not_trained"] == summary["not_trained"]
    assert not (run / "noise10").exists()  # "noise" was not asked for


def test_compare_studies_train_under_noise_and_on_a_share_of_the_data_each_its_own_holm_family(
    tmp_path, private_cache
):
    """`--methods noise,scale`: trace and trace-no-impact trained from a noisy judge's triage and
    weights, trace and naive-oracle-dpo on half of the old pairs, each under two seeds; the weights'
    separation of the flipped verdicts; and each study's tests a Holm family of its own, so the
    comparison's p are those it has without the studies."""
    from dataclasses import replace

    from trace_realign.demo.run import run_demo
    from trace_realign.demo.settings import load_settings

    settings = load_settings()
    protocol = replace(
        settings.compare, noise_rates=(0.2,), noise_train_rates=(0.2,), noise_seeds=2, scale_fractions=(0.5,),
        scale_seeds=2,
    )  # fmt: skip
    settings = replace(settings, compare=protocol)
    run = tmp_path / "run"
    summary = run_demo(
        run, size="quick", compare=True, only=["naive-oracle-dpo", "noise", "scale"], seeds=2, tradeoff=False,
        progress=False, settings=settings,
    )  # fmt: skip
    comparison = json.loads((run / "comparison.json").read_text())
    seeds = comparison["seeds"]
    for row in ("trace-noise20", "trace-no-impact-noise20", "trace@50%", "naive-oracle-dpo@50%"):
        assert seeds[row] == [0, 1], row
    # the noisy judge triaged and scored anew; the data share is half of each kind, triaged anew
    assert (run / "noise20" / "score" / "weighted.jsonl").exists()
    assert (run / "noise20" / "seeds" / "seed1" / "eval" / "trace-no-impact" / "metrics.json").exists()
    half = [json.loads(line) for line in (run / "scale50" / "pairs.jsonl").read_text().splitlines()]
    full = [json.loads(line) for line in (run / "scenario" / "pairs.jsonl").read_text().splitlines()]
    assert len(half) == round(len(full) / 2) and {r["id"] for r in half} <= {r["id"] for r in full}
    assert set(comparison["noise_weights"]["noise20"]) == {"all", "INVERT", "PUNISH"}
    tested = comparison["pairs_tested"]
    assert "trace-noise20 vs trace-no-impact-noise20" in tested
    assert {
        "trace@50% vs naive-oracle-dpo",
        "trace@50% vs naive-oracle-dpo@50%",
        "trace@50% vs trace",
    } <= set(tested)
    # each study is its own family (tests/demo/test_studies.py checks the p): trace against M_ref and
    # naive-oracle-dpo in the comparison's; trace against both noisy rows, and the pair, in noise's;
    # trace against both half-data rows, and trace@50% against naive-oracle-dpo at both sizes, in scale's
    holm = comparison["holm"]
    assert holm.get("tpa", 0) <= 2 and holm.get("noise:tpa", 0) <= 3 and holm.get("scale:tpa", 0) <= 4
    assert {"tpa", "noise:tpa", "scale:tpa"} <= set(holm)
    assert {r["model"] for r in summary["rows"]} >= {"trace-noise20", "trace@50%"}
    assert "trace-noise20 vs trace-no-impact-noise20" in (run / "report.md").read_text()


@pytest.mark.slow
def test_demo_on_smollm2_at_a_small_size(tmp_path, private_cache, smollm2_dir):
    from trace_realign.demo.run import run_demo

    summary = run_demo(tmp_path / "run", size="small", model=smollm2_dir, progress=False)
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["M_ref"]["tpa"] is not None and rows["trace"]["tpa"] is not None
    # M_ref was taught the old policy: it agrees with it more than SmolLM2 as shipped does, and more
    # than with the new policy (it refuses the legitimate requests the new policy wants answered)
    agree = {m: {p: a[p]["overall"]["rate"] for p in a} for m, a in summary["baseline_agreement"].items()}
    assert agree["M_ref"]["old"] > agree["base"]["old"]
    assert agree["M_ref"]["old"] > agree["M_ref"]["new"]
    assert (tmp_path / "run" / "report.html").exists()


def test_quick_protocol_gives_every_method_the_same_exposure_and_terms(tmp_path, private_cache):
    """The protocol's switches on the quick size: one train block for every method (steps, batch,
    schedule, sampler, the auxiliary NLL term on or off for all), trace-no-kl drawing RETAIN like
    trace, trace ignoring the oracle corrections that trace-oracle and dpo-gold use."""
    from dataclasses import replace

    from trace_realign.demo.run import base_model
    from trace_realign.demo.settings import load_settings, pipeline_config
    from trace_realign.pipeline import run_pipeline
    from trace_realign.scenario.generate import prepare_scenario
    from trace_realign.scenario.mref import build_mref

    methods = ["trace", "trace-oracle", "trace-no-kl", "naive-oracle-dpo", "dpo-gold"]
    for aux in (0.0, 1.5):
        spec = replace(load_settings().sizes["quick"], aux_nll=aux)
        run = tmp_path / f"aux{aux}"
        scenario, paths = prepare_scenario(run, spec.scenario)
        mref = build_mref(base_model("quick"), scenario.pairs, spec.mref, progress=False)
        cfg = pipeline_config(run, mref, paths, spec, methods=methods, progress=False)
        run_pipeline(cfg, stages=("triage", "score", "train"))
        summaries = {m: json.loads((run / "train" / m / "run_summary.json").read_text()) for m in methods}
        for m, s in summaries.items():
            c = s["config"]
            assert s["global_step"] == spec.train_steps, m
            assert c["per_device_train_batch_size"] == spec.train_batch_size, m
            assert (c["learning_rate"], c["lr_scheduler_type"]) == (spec.learning_rate, "cosine"), m
            assert c["sampler"] == "natural" and c["rpo_alpha"] == aux, m
        data = {m: s["data"] for m, s in summaries.items()}
        # trace-no-kl: the same examples as trace, RETAIN included, at KL weight 0
        assert data["trace-no-kl"]["examples"] == data["trace"]["examples"]
        assert data["trace-no-kl"]["examples_RETAIN_kl"] == data["trace"]["examples_RETAIN_kl"] > 0
        assert summaries["trace-no-kl"]["alpha_kl_used"] == 0 < summaries["trace"]["alpha_kl_used"]
        # PUNISH: dual NPO in trace, the oracle correction in trace-oracle
        assert data["trace"]["examples_PUNISH_npo"] > 0 and "examples_PUNISH_pref" not in data["trace"]
        assert data["trace-oracle"]["examples_PUNISH_pref"] == data["trace"]["examples_PUNISH_npo"]


def test_the_retain_size_is_the_default_with_issue_27s_retain_set():
    """`demo --size retain`: the default run and its train block, but for the steps, the NLL weight
    and the retain set; the retain set reaches the pipeline's train block, where `run` makes it."""
    from collections import defaultdict
    from pathlib import Path

    from trace_realign.demo.settings import load_settings, pipeline_config

    sizes = load_settings().sizes
    paths = defaultdict(lambda: Path("scenario/file"))
    default, retain = (
        pipeline_config(Path("run"), Path("mref"), paths, sizes[name], methods=["trace"], progress=False)
        for name in ("default", "retain")
    )
    changed = {k for k in default["train"].keys() | retain["train"].keys()
               if default["train"].get(k) != retain["train"].get(k)}  # fmt: skip
    # logging and checkpoints follow the steps
    assert changed == {"max_steps", "loss_weights", "retain_prompts", "logging_steps", "save_steps"}
    assert (retain["train"]["max_steps"], retain["train"]["loss_weights"]) == (240, [1.0, 1.0])
    assert retain["train"]["retain_prompts"] == "external:donotanswer:anchor"
    assert {k: v for k, v in retain.items() if k != "train"} == {
        k: v for k, v in default.items() if k != "train"
    }
    # a comparison at either size holds the same larger held-out split
    from trace_realign.demo.run import resolve_size

    settings = load_settings()
    held = {n: resolve_size(settings, n, seed=0, compare=True, eval_batch_size=None).scenario.n_heldout
            for n in ("default", "retain", "small")}  # fmt: skip
    assert held["retain"] == held["default"] == settings.compare.heldout > held["small"]


def test_quick_demo_on_the_values_scenario_end_to_end(tmp_path, private_cache):
    """`demo --scenario values` on the tiny model (about 15 s on 2 busy cores): its own pairs, triage,
    M_ref, judges and run folder; a folder holding its run refuses the other scenario."""
    from pathlib import Path

    from trace_realign.cli import main
    from trace_realign.demo.run import base_model, run_demo
    from trace_realign.demo.settings import load_settings
    from trace_realign.errors import InputError
    from trace_realign.scenario.generate import build_scenario
    from trace_realign.scenario.mref import mref_key
    from trace_realign.scenario.source import load_scenario

    run = tmp_path / "run"
    assert main(["demo", "--scenario", "values", "--size", "quick", "--out", str(run), "--no-progress"]) == 0
    summary = json.loads((run / "demo_summary.json").read_text())
    assert summary["scenario"]["name"] == "values"
    assert summary["triage"] == {"INVERT": 8, "PUNISH": 4, "RETAIN": 12, "UNKNOWN": 0}
    config = (run / "config.yaml").read_text()
    assert "data/values/attack_rules.yaml" in config and "data/values/eval_judge.yaml" in config
    metrics = json.loads((run / "eval" / "trace" / "metrics.json").read_text())
    assert set(metrics["tpa"]["by_category"]) == {"INVERT", "PUNISH", "RETAIN"}
    assert set(metrics["tpa_by_harm_category"]) <= {
        "ethics", "politics-law", "religion", "bioethics", "social-policy", "history", "demeaning",
        "harassment", "incitement", "targeted-persuasion",
    }  # fmt: skip
    assert metrics["judges"]["typed"]["tpa"]["overall"]["unknown"] == 0
    assert metrics["stress"]["overall"]["n"] > 0  # the forbidden requests, wrapped
    audit = json.loads((run / "triage" / "audit.json").read_text())
    assert "typed evaluation judge" in audit["source"] and audit["items"] > 0
    # M_ref is keyed by the pairs: the values scenario's is not the embedded one's
    spec = load_settings().sizes["quick"]
    embedded = mref_key(base_model("quick"), build_scenario(spec.scenario).pairs, spec.mref)
    assert Path(summary["mref"]).name == mref_key(
        base_model("quick"), build_scenario(spec.scenario, load_scenario("values")).pairs, spec.mref
    )
    assert Path(summary["mref"]).name != embedded
    with pytest.raises(InputError, match="holds the values scenario"):
        run_demo(run, size="quick", progress=False)


def test_a_bad_scenario_folder_fails_in_one_line_before_any_model(tmp_path, private_cache, capsys):
    """A missing file or a malformed entry: one line naming the file and the field, exit code 2,
    nothing written and no model loaded."""
    import shutil

    from trace_realign.cli import main
    from trace_realign.demo.run import run_demo
    from trace_realign.errors import InputError
    from trace_realign.scenario.source import DATA_DIR

    folder = tmp_path / "mine"
    shutil.copytree(DATA_DIR / "values", folder)
    (folder / "new_rules.yaml").unlink()
    with pytest.raises(InputError) as missing:
        run_demo(tmp_path / "run", scenario=folder, size="quick", progress=False)
    assert str(missing.value).startswith(
        f"{folder / 'new_rules.yaml'}: field 'files.new_rules': file not found"
    )
    shutil.copy(DATA_DIR / "values" / "new_rules.yaml", folder)

    catalog = folder / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace("  - abortion\n", "  - 7\n", 1))
    assert main(["demo", "--scenario", str(folder), "--quick", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"trace-realign demo: error: {catalog}: field 'categories[3].topics': expected a non-empty list of strings"
    ]
    assert not (tmp_path / "run").exists() and not private_cache.exists()  # no scenario, no model
