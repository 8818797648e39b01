"""Triage rules, judging through the verdict cache, unknowns, the summary and triaged.jsonl."""

from __future__ import annotations

import json
from itertools import product

import pytest

from trace_realign.cache import VerdictCache
from trace_realign.judges.policy import Policy
from trace_realign.schema import Category, PreferencePair
from trace_realign.triage.triage import (
    TriagedPair,
    categorise,
    print_summary,
    read_triaged,
    summarise,
    triage_pairs,
    write_triaged,
)

from .fakes import TableJudge, make_pairs

POLICY = Policy("Refuse only what the new policy forbids.", name="new")


def reference_category(c_w, c_l):
    # the docs/method.md table, written out case by case
    if c_w == 1:
        return Category.RETAIN
    if c_w == 0 and c_l == 1:
        return Category.INVERT
    if c_w == 0 and c_l == 0:
        return Category.PUNISH
    return Category.UNKNOWN


def test_categorise_matches_the_table_for_every_combination():
    for c_w, c_l in product((1, 0, None), repeat=2):
        assert categorise(c_w, c_l) is reference_category(c_w, c_l)
    assert categorise(1, None) is Category.RETAIN  # c_w = 1 alone decides
    for bad in (2, True, "1", 0.5):
        with pytest.raises(ValueError):
            categorise(bad, 0)


def test_triage_categories_judge_items_and_dedup():
    spec = [("c", "n"), ("n", "c"), ("n", "n"), ("c", "c"), ("u", "c"), ("n", "u"), ("c", "u")]
    pairs, table = make_pairs(spec, meta={"row": 0})
    # a duplicate pair and a shared response: judged once each
    pairs.append(PreferencePair(pairs[0].prompt, pairs[0].chosen, pairs[0].rejected))
    judge = TableJudge(table)
    result = triage_pairs(pairs, judge, POLICY, cache=None, progress=False)
    codes = {"c": 1, "n": 0, "u": None}
    expected = [reference_category(codes[a], codes[b]) for a, b in spec] + [Category.RETAIN]
    assert [r.category for r in result.rows] == expected
    assert [(r.c_w, r.c_l) for r in result.rows[:3]] == [(1, 0), (0, 1), (0, 0)]
    assert result.rows[1].reason_w == "n because table"
    assert len(judge.seen) == 2 * len(spec) == result.judge_stats.calls
    assert result.judge_stats.duplicates == 2
    # the context base.py documents: side and the pair's meta, prompt as text
    first = judge.seen[0]
    assert (first.prompt, first.response, first.meta) == (
        "prompt 0",
        pairs[0].chosen,
        {"side": "chosen", "pair": {"row": 0}},
    )
    assert judge.seen[1].meta["side"] == "rejected"


def test_rerun_is_served_from_the_cache(tmp_path):
    pairs, table = make_pairs([("c", "n"), ("n", "c"), ("n", "n"), ("u", "c")])
    cache = VerdictCache(tmp_path / "v.sqlite")
    first = triage_pairs(pairs, TableJudge(table), POLICY, cache, progress=False)
    judge = TableJudge(table)
    again = triage_pairs(pairs, judge, POLICY, cache, progress=False)
    # only the unknown is asked again: unknowns are failures, not answers, and are never stored
    assert [it.response for it in judge.seen] == [pairs[3].chosen]
    assert again.judge_stats.cache_hits == 7 and again.judge_stats.calls == 1
    assert [r.to_dict() for r in again.rows] == [r.to_dict() for r in first.rows]
    # another policy is another question
    other = triage_pairs(pairs, TableJudge(table), Policy("different"), cache, progress=False)
    assert other.judge_stats.calls == 8
    cache.close()


def test_unknowns_left_out_by_default_and_kept_on_request():
    pairs, table = make_pairs([("u", "c"), ("n", "u"), ("c", "u"), ("n", "c")])
    default = triage_pairs(pairs, TableJudge(table), POLICY, None, progress=False)
    assert [r.category for r in default.rows] == [
        Category.UNKNOWN,
        Category.UNKNOWN,
        Category.RETAIN,
        Category.INVERT,
    ]
    s = summarise(default)
    assert s["unknown"] == {
        "pairs": 2,
        "verdicts": 3,
        "read_as": None,
        "pairs_kept_by_reading_as": 0,
        "handling": "left out of training",
    }
    kept = triage_pairs(pairs, TableJudge(table), POLICY, None, unknown_as="non_compliant", progress=False)
    assert [r.category for r in kept.rows] == [
        Category.INVERT,
        Category.PUNISH,
        Category.RETAIN,
        Category.INVERT,
    ]
    assert [r.unknown_as for r in kept.rows] == ["non_compliant", "non_compliant", None, None]
    assert kept.rows[0].c_w is None  # the verdict itself stays unknown on disk
    assert summarise(kept)["unknown"]["pairs_kept_by_reading_as"] == 2
    as_compliant = triage_pairs(
        pairs, TableJudge(table), POLICY, None, unknown_as="compliant", progress=False
    )
    assert [r.category for r in as_compliant.rows][:2] == [Category.RETAIN, Category.INVERT]


def test_summary_counts_shares_calls_and_skipped_rows(tmp_path):
    from trace_realign.data import load_pairs

    path = tmp_path / "d.jsonl"
    rows = [{"prompt": f"p{i}", "chosen": f"w{i}", "rejected": f"l{i}"} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"prompt": "x"}\n')
    load = load_pairs(path, skip_bad=True)
    table = {"w0": "c", "l0": "n", "w1": "n", "l1": "c", "w2": "n", "l2": "n", "w3": "c", "l3": "c"}
    result = triage_pairs(load.pairs, TableJudge(table), POLICY, None, progress=False)
    s = summarise(result, load)
    assert s["pairs"] == 4
    assert s["counts"] == {"INVERT": 1, "PUNISH": 1, "RETAIN": 2, "UNKNOWN": 0}
    assert s["shares"]["RETAIN"] == 0.5 and sum(s["shares"].values()) == pytest.approx(1.0)
    assert s["judge_calls"] == {"items": 8, "calls": 8, "cache_hits": 0, "duplicates": 0, "saved": 0}
    assert s["skipped_rows"]["count"] == 1 and s["skipped_rows"]["rows"][0]["field"] == "chosen"
    assert s["policy"] == {"name": "new", "hash": POLICY.hash} and s["judge"] == "table-judge"
    assert "harm_categories" not in s
    json.dumps(s)  # the summary is written as JSON


def test_harm_category_breakdown_from_pku_metadata():
    def pku_meta(harm_w, harm_l):
        return {
            "source": "pku-saferlhf",
            "chosen": {"safe": True, "harm_categories": harm_w, "severity": 0},
            "rejected": {"safe": False, "harm_categories": harm_l, "severity": 2},
        }

    pairs = [
        PreferencePair("p0", "a0", "b0", pku_meta([], ["S6"])),
        PreferencePair("p1", "a1", "b1", pku_meta(["S6"], ["S11"])),
        PreferencePair("p2", "a2", "b2", pku_meta([], [])),
    ]
    table = {"a0": "n", "b0": "c", "a1": "n", "b1": "n", "a2": "c", "b2": "c"}
    s = summarise(triage_pairs(pairs, TableJudge(table), POLICY, None, progress=False))
    audit = s["harm_categories"]
    assert list(audit) == ["S6", "S11", "none"]
    assert audit["S6"] == {
        "name": "Violence",
        "pairs": 2,
        "INVERT": 1,
        "PUNISH": 1,
        "RETAIN": 0,
        "UNKNOWN": 0,
        "changed_share": 1.0,
    }
    assert audit["S11"]["PUNISH"] == 1 and audit["none"]["RETAIN"] == 1

    from rich.console import Console

    console = Console(record=True, width=140)
    print_summary(s, console)
    text = console.export_text()
    assert "S6 Violence" in text and "INVERT" in text and "calls made" in text


def test_corrections_fill_punish_rows_only():
    pairs, table = make_pairs([("n", "n"), ("n", "c"), ("n", "n")])
    asked = []

    def corrections(policy, punish_pairs):
        asked.extend(p.id for p in punish_pairs)
        return [f"better answer to {p.prompt}" for p in punish_pairs[:1]] + [None] * (len(punish_pairs) - 1)

    result = triage_pairs(pairs, TableJudge(table), POLICY, None, corrections=corrections, progress=False)
    assert asked == [pairs[0].id, pairs[2].id]
    assert [r.correction for r in result.rows] == ["better answer to prompt 0", None, None]
    assert summarise(result)["corrections"] == {"punish_pairs": 2, "corrections": 1}


def test_triaged_jsonl_round_trip_and_schema(tmp_path):
    pairs, table = make_pairs([("c", "n"), ("u", "n")], meta={"k": 1})
    result = triage_pairs(pairs, TableJudge(table), POLICY, None, progress=False)
    path = tmp_path / "triaged.jsonl"
    write_triaged(path, result.rows)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert set(lines[0]) == {
        "id",
        "prompt",
        "chosen",
        "rejected",
        "meta",
        "category",
        "c_w",
        "c_l",
        "reason_w",
        "reason_l",
    }
    assert lines[1]["category"] == "UNKNOWN" and lines[1]["c_w"] is None and lines[0]["id"] == pairs[0].id
    back = read_triaged(path)
    assert back == result.rows and isinstance(back[0], TriagedPair)


def test_read_triaged_names_bad_lines(tmp_path):
    from trace_realign.errors import InputError

    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "category": "MAYBE"}) + "\n")
    with pytest.raises(InputError, match=r"t.jsonl:1: field 'category'"):
        read_triaged(path)


def test_label_judge_reads_pku_and_user_columns(tmp_path):
    from trace_realign.data import load_pairs
    from trace_realign.judges.spec import make_judge

    def side(safe):
        return {"safe": safe, "harm_categories": [], "severity": 0}

    pku = [
        PreferencePair("p0", "a", "b", {"chosen": side(True), "rejected": side(False)}),
        PreferencePair("p1", "a", "b", {"chosen": side(False), "rejected": side(False)}),
    ]
    result = triage_pairs(pku, make_judge("labels:pku"), POLICY, None, progress=False)
    assert [r.category for r in result.rows] == [Category.RETAIN, Category.PUNISH]

    path = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "q", "chosen": "same", "rejected": "other", "ok_w": False, "ok_l": True},
        {"prompt": "q", "chosen": "same", "rejected": "third", "ok_w": True, "ok_l": None},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = load_pairs(path).pairs
    result = triage_pairs(pairs, make_judge("labels:ok_w,ok_l"), POLICY, None, progress=False)
    # the same (prompt, response) carries different labels in the two rows: each row's own column counts
    assert [(r.category, r.c_w, r.c_l) for r in result.rows] == [
        (Category.INVERT, 0, 1),
        (Category.RETAIN, 1, None),
    ]


def test_dry_run_under_the_noise_wrapper_counts_what_the_wrapped_judge_would_be_asked(tmp_path):
    from trace_realign.judges.noisy import NoisyJudge
    from trace_realign.triage.triage import plan_triage

    pairs, table = make_pairs([("n", "c"), ("c", "n"), ("n", "n")])
    cache = VerdictCache(tmp_path / "v.sqlite")
    inner = TableJudge(table)
    triage_pairs(pairs[:2], inner, POLICY, cache, progress=False)  # 4 verdicts stored

    plan = plan_triage(pairs, NoisyJudge(TableJudge(table), rate=0.2), POLICY, cache)
    assert (plan["items"], plan["cache_hits"], plan["calls"]) == (6, 4, 2)
