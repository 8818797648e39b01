"""`trace-realign score` end to end on a tiny model: outputs, summary, resume, clear errors."""

from __future__ import annotations

import json

import pytest

import trace_realign.impact.scoring as scoring
from trace_realign.cli import main
from trace_realign.schema import PreferencePair


def _row(i: int, category: str, correction: str | None = None) -> dict:
    pair = PreferencePair(f"Question number {i}?", f"Old winner answer {i}.", f"Old loser {i}.")
    row = pair.to_dict()
    c = {"INVERT": (0, 1), "PUNISH": (0, 0), "RETAIN": (1, 0), "UNKNOWN": (None, 1)}[category]
    row.update(category=category, c_w=c[0], c_l=c[1], reason_w="", reason_l="", extra_field=i)
    if correction:
        row["correction"] = correction
    return row


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def triaged(tmp_path):
    rows = [_row(i, "RETAIN") for i in range(4)]
    rows += [_row(10 + i, "INVERT") for i in range(4)]
    rows += [_row(20 + i, "PUNISH", "A safe reply." if i % 2 else None) for i in range(3)]
    rows += [_row(30, "UNKNOWN")]
    return _write(tmp_path / "triaged.jsonl", rows)


def _args(model, triaged, out, *extra):
    return ["score", "--model", str(model), "--triaged", str(triaged), "--out", str(out), "--no-progress",
            "--gold-size", "6", "--batch-size", "3", "--max-length", "96", *extra]  # fmt: skip


def test_score_writes_weights_and_summary(tiny_model_dir, triaged, tmp_path):
    out = tmp_path / "score" / "weighted.jsonl"
    cache_dir = tmp_path / "refcache"
    extra = ("--use_peft", "--lora_r", "4", "--mode", "exact", "--ref-cache-dir", str(cache_dir))
    assert main(_args(tiny_model_dir, triaged, out, *extra)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and all(r["extra_field"] is not None for r in rows)  # every input field kept
    conflicts = [r for r in rows if r["category"] in ("INVERT", "PUNISH")]
    assert all(r["impact_weight"] is None for r in rows if r["category"] in ("RETAIN", "UNKNOWN"))
    weights = [r["impact_weight"] for r in conflicts]
    assert len(weights) == 7 and min(weights) >= 0
    assert sum(weights) / len(weights) == pytest.approx(1.0)  # default: mean normalisation
    summary = json.loads((tmp_path / "score" / "summary.json").read_text())
    assert summary["mode"] == "exact" and summary["normalisation"] == "mean" and summary["loss"] == "sigmoid"
    # trace's loss (dual NPO on every PUNISH pair) in impact_weight; trace-oracle's (the correction
    # where a PUNISH pair has one) in impact_weight_corrected; only the corrected term is scored twice
    assert summary["conflict_kinds"] == {"INVERT": 4, "PUNISH_npo": 3, "PUNISH_corrected": 1}
    assert summary["columns"] == {"npo": "impact_weight", "corrected": "impact_weight_corrected"}
    corrected = [r["impact_weight_corrected"] for r in conflicts]
    assert sum(corrected) / len(corrected) == pytest.approx(1.0)
    assert set(summary["weights"]) == {"npo", "corrected"}
    profile = summary["weights"]["npo"]
    assert profile["all"]["n"] == 7 and set(profile["by_category"]) == {"INVERT", "PUNISH"}
    assert 1.0 <= profile["all"]["effective_n"] <= 7.0
    # Algorithm 2 with B = 6: floor(6/3) RETAIN, floor(6/3) INVERT, the rest PUNISH
    assert summary["gold_sources"] == {"INVERT": 2, "PUNISH": 2, "RETAIN": 2}
    assert sum(summary["weight_histogram"]["counts"]) == 7
    assert summary["zero_weight_share"] == pytest.approx(sum(w == 0 for w in weights) / 7)
    assert summary["top_impact"][0]["impact_weight"] == max(weights)
    assert not list((tmp_path / "score").glob(".*partial"))  # work folder removed when done

    # the reference log-probs of every conflict sequence are cached where training will look
    from trace_realign.impact.reference import ReferenceCache, item_key, open_cache, reference_logprobs
    from trace_realign.model.loading import load_model, load_tokenizer

    # 7 conflicts x 2 responses, and the oracle correction trace-oracle trains
    assert summary["reference_cache"] and len(ReferenceCache(summary["reference_cache"])) == 15
    tok, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    cache = open_cache(model, tok, max_length=96, cache_dir=cache_dir)
    assert str(cache.path) == summary["reference_cache"]  # a plain θ_ref model finds the same file
    row = conflicts[0]
    fresh = reference_logprobs(
        model, tok, [(row["id"], row["prompt"], row["chosen"])], max_length=96, progress=False
    )
    assert cache.get(item_key(row["id"], row["chosen"])) == pytest.approx(fresh.item(), rel=1e-5)


def test_no_corrections_scores_trace_s_loss_alone(tiny_model_dir, triaged, tmp_path):
    out = tmp_path / "npo" / "weighted.jsonl"
    extra = ("--lora_r", "4", "--mode", "exact", "--ref-cache-dir", str(tmp_path / "rc"), "--no_corrections")
    assert main(_args(tiny_model_dir, triaged, out, *extra)) == 0
    summary = json.loads((tmp_path / "npo" / "summary.json").read_text())
    assert summary["conflict_kinds"] == {"INVERT": 4, "PUNISH_npo": 3, "PUNISH_corrected": 0}
    assert all("impact_weight_corrected" not in json.loads(line) for line in out.read_text().splitlines())


def test_paper_normalisation_and_full_finetuning(tiny_model_dir, triaged, tmp_path):
    out = tmp_path / "w.jsonl"
    # `--normalisation` is the old name of `--weight_normalisation`: still read, with a warning
    with pytest.warns(FutureWarning, match="normalisation is deprecated"):
        code = main(
            _args(tiny_model_dir, triaged, out, "--normalisation", "paper", "--use_peft", "false",
                  "--summary", str(tmp_path / "s.json"))
        )  # fmt: skip
    assert code == 0
    weights = [json.loads(line)["impact_weight"] for line in out.read_text().splitlines()]
    assert sum(w for w in weights if w is not None) == pytest.approx(1.0)
    assert json.loads((tmp_path / "s.json").read_text())["use_peft"] is False


def test_a_killed_run_resumes_where_it_stopped(tiny_model_dir, triaged, tmp_path, monkeypatch, capsys):
    out = tmp_path / "weighted.jsonl"
    args = _args(
        tiny_model_dir, triaged, out, "--use_peft", "--lora_r", "4", "--ref-cache-dir", str(tmp_path / "rc")
    )
    assert main(args) == 0
    want = out.read_text()
    out.unlink()

    real = scoring._directional_fd
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(scoring, "_directional_fd", flaky)
    assert main(args) == 130  # interrupted after the first of three batches
    assert not out.exists() and list(tmp_path.glob(".weighted.jsonl.partial/raw.rank0.jsonl"))
    calls.clear()
    monkeypatch.setattr(scoring, "_directional_fd", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(args) == 0
    assert len(calls) == 2  # only the two unfinished batches were recomputed
    got = [json.loads(line) for line in out.read_text().splitlines()]
    for a, b in zip(got, [json.loads(line) for line in want.splitlines()], strict=True):
        if b["impact_weight"] is None:
            assert a["impact_weight"] is None
        else:
            assert a["impact_weight"] == pytest.approx(b["impact_weight"], rel=1e-6)


def test_no_conflicts_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    path = _write(tmp_path / "t.jsonl", [_row(i, "RETAIN") for i in range(3)])
    assert main(_args(tiny_model_dir, path, tmp_path / "o.jsonl")) == 2
    err = capsys.readouterr().err
    assert "no conflicts to score" in err and "t.jsonl" in err and "Traceback" not in err


def test_missing_field_names_line_and_field(tiny_model_dir, tmp_path, capsys):
    rows = [_row(1, "INVERT"), _row(2, "PUNISH")]
    del rows[1]["rejected"]
    path = _write(tmp_path / "t.jsonl", rows)
    assert main(_args(tiny_model_dir, path, tmp_path / "o.jsonl")) == 2
    assert "t.jsonl:2: field 'rejected'" in capsys.readouterr().err


def test_tokenizer_that_cannot_place_the_boundary(tiny_model_dir, triaged, tmp_path, capsys):
    from transformers import AutoTokenizer

    from trace_realign.model.tiny import tiny_llama

    broken = tmp_path / "broken"
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = (
        "{% for m in messages %}{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}A:{% endif %}"
    )
    tok.save_pretrained(broken)
    tiny_llama(len(tok)).save_pretrained(broken)
    assert main(_args(broken, triaged, tmp_path / "o.jsonl")) == 2
    assert "cannot place the response boundary" in capsys.readouterr().err


def test_the_python_stage_gives_what_the_command_gives(tiny_model_dir, triaged, tmp_path):
    from trace_realign.impact.stage import ScoreConfig, score

    cli_out, py_out = tmp_path / "cli" / "w.jsonl", tmp_path / "py" / "w.jsonl"
    assert main(_args(tiny_model_dir, triaged, cli_out, "--lora_r", "4", "--no-ref-cache")) == 0
    config = ScoreConfig(gold_size=6, batch_size=3, max_length=96, lora_r=4)
    summary = score(tiny_model_dir, triaged, py_out, config, ref_cache=False, progress=False)
    assert py_out.read_text() == cli_out.read_text()
    assert summary == json.loads((py_out.parent / "summary.json").read_text())
    assert summary["use_peft"] is True  # LoRA by default, as train


@pytest.mark.parametrize(("method", "variant"), [("trace", "npo"), ("trace-oracle", "corrected")])
def test_each_method_trains_the_loss_its_weights_were_scored_on(
    tiny_model_dir, triaged, tmp_path, monkeypatch, method, variant
):
    """The real score stage, then the real trainer: every conflict a method trains is the very item
    the score stage scored for it (same loss, same responses), and its weight is that item's
    normalised impact. trace-oracle's corrected PUNISH pair is weighted by its own impact, never by
    the NPO impact of a loss it does not train."""
    import trace_realign.update.trainer as trainer_module
    from trace_realign.update import TraceConfig, train

    scored: dict[str, scoring.ScoredItem] = {}
    real_impacts = scoring.conflict_impacts

    def spy_impacts(model, tokenizer, items, *args, **kwargs):
        scored.update({it.id: it for it in items})
        return real_impacts(model, tokenizer, items, *args, **kwargs)

    monkeypatch.setattr(scoring, "conflict_impacts", spy_impacts)
    out = tmp_path / "score" / "weighted.jsonl"
    assert (
        main(_args(tiny_model_dir, triaged, out, "--lora_r", "4", "--ref-cache-dir", str(tmp_path / "rc")))
        == 0
    )
    rows = {r["id"]: r for r in (json.loads(line) for line in out.read_text().splitlines())}

    trained = {}
    real_init = trainer_module.TraceTrainer.__init__

    def spy_init(self, model, args, train_dataset, *a, **kw):
        trained.update({e.row_id: e for e in train_dataset.selection.examples})
        real_init(self, model, args, train_dataset, *a, **kw)

    monkeypatch.setattr(trainer_module.TraceTrainer, "__init__", spy_init)
    config = TraceConfig(
        output_dir=str(tmp_path / method), method=method, max_steps=1, per_device_train_batch_size=4,
        lora_r=4, max_length=96, report_to="none", use_cpu=True, save_strategy="no",
    )  # fmt: skip
    train(tiny_model_dir, out, config, ref_cache_dir=tmp_path / "rc")

    column = {"npo": "impact_weight", "corrected": "impact_weight_corrected"}[variant]
    conflicts = {rid: e for rid, e in trained.items() if rows[rid]["category"] in ("INVERT", "PUNISH")}
    assert len(conflicts) == 7
    corrected = 0
    for rid, e in conflicts.items():
        item = (
            scored[f"{rid}:corrected"]
            if variant == "corrected" and rows[rid].get("correction")
            else scored[rid]
        )
        kind = {0: "pref", 1: "npo"}[e.kind]
        assert (kind, e.pos, e.neg) == (item.kind, item.a, item.b), rid
        corrected += item.kind == "pref" and rows[rid]["category"] == "PUNISH"
    assert corrected == (1 if variant == "corrected" else 0)
    # each example's weight is its row's weight of this loss, re-normalised over the conflicts used
    raw = {rid: rows[rid][column] for rid in conflicts}
    scale = len(raw) / sum(raw.values())
    assert {rid: e.weight for rid, e in conflicts.items()} == pytest.approx(
        {k: v * scale for k, v in raw.items()}
    )
