"""Drawing what the reviewers label: stratified by the judge's category, seeded, kept for restarts."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from trace_realign.errors import InputError
from trace_realign.label.sample import (
    SAMPLE_FILE,
    load_sample,
    prepare_sample,
    read_disagreements,
    stratified_indices,
)

from .conftest import HTML_PAIR, POLICY


def test_each_stratum_gets_its_proportional_share_by_largest_remainder():
    strata = ["RETAIN"] * 60 + ["INVERT"] * 30 + ["PUNISH"] * 10
    picked = stratified_indices(strata, 10, seed=3)
    assert Counter(strata[i] for i in picked) == {"RETAIN": 6, "INVERT": 3, "PUNISH": 1}
    assert len(set(picked)) == 10
    # 5 of 4/5/3: exact shares 1.67 / 2.08 / 1.25, floors 1/2/1, the one left goes to the largest remainder
    small = ["INVERT"] * 4 + ["RETAIN"] * 5 + ["PUNISH"] * 3
    assert Counter(small[i] for i in stratified_indices(small, 5, 0)) == {
        "INVERT": 2,
        "RETAIN": 2,
        "PUNISH": 1,
    }


def test_the_draw_is_seeded_and_shuffled():
    strata = ["A"] * 50 + ["B"] * 50
    assert stratified_indices(strata, 20, 7) == stratified_indices(strata, 20, 7)
    assert stratified_indices(strata, 20, 7) != stratified_indices(strata, 20, 8)
    picked = stratified_indices(strata, 20, 7)
    assert [strata[i] for i in picked] != sorted(strata[i] for i in picked)  # categories interleave


def test_a_triaged_sample_is_written_once_and_reopened_unchanged(triaged_file, tmp_path):
    out = tmp_path / "labels"
    sample = prepare_sample(out, triaged=triaged_file, size=6, seed=1, policy=POLICY)
    assert len(sample.items) == 6 and len({x.id for x in sample.items}) == 6
    assert sample.available == 13 and sum(sample.strata.values()) == 13
    assert {x.category for x in sample.items} <= set(sample.strata)
    assert sample.policy_text == POLICY.read_text()
    on_disk = json.loads((out / SAMPLE_FILE).read_text())
    assert [x["id"] for x in on_disk["items"]] == [x.id for x in sample.items]
    # a second reviewer or a restart: no options, or the same ones
    assert load_sample(out).items == sample.items
    assert prepare_sample(out).items == sample.items
    assert prepare_sample(out, triaged=triaged_file, size=6, seed=1, policy=POLICY).items == sample.items


def test_reopening_with_other_options_is_refused(triaged_file, pairs_file, tmp_path):
    out = tmp_path / "labels"
    prepare_sample(out, triaged=triaged_file, size=6, policy=POLICY)
    other_policy = tmp_path / "other.md"
    other_policy.write_text("Refuse everything.")
    for options in ({"size": 7}, {"seed": 5}, {"data": pairs_file}, {"policy": other_policy}):
        with pytest.raises(InputError, match="holds a sample drawn with"):
            prepare_sample(out, **({"triaged": triaged_file} if "data" not in options else {}), **options)


def test_a_sample_larger_than_the_data_is_an_input_error(triaged_file, tmp_path):
    with pytest.raises(InputError) as err:
        prepare_sample(tmp_path, triaged=triaged_file, size=14, policy=POLICY)
    assert err.value.field == "sample" and "13 distinct pairs" in str(err.value)
    assert not (tmp_path / SAMPLE_FILE).exists()
    with pytest.raises(InputError, match="at least one"):
        prepare_sample(tmp_path, triaged=triaged_file, size=0, policy=POLICY)
    with pytest.raises(InputError, match="--sample N"):
        prepare_sample(tmp_path, triaged=triaged_file, policy=POLICY)
    with pytest.raises(InputError, match="--policy"):
        prepare_sample(tmp_path, triaged=triaged_file, size=3)
    with pytest.raises(InputError, match="no sample"):
        prepare_sample(tmp_path)


def test_raw_pairs_have_no_strata_and_conversations_stay_turns(pairs_file, tmp_path):
    sample = prepare_sample(tmp_path, data=pairs_file, size=13, policy=POLICY)
    assert {x.category for x in sample.items} == {None}
    convo = next(x for x in sample.items if isinstance(x.prompt, list))
    assert convo.turns == HTML_PAIR["prompt"]
    plain = next(x for x in sample.items if isinstance(x.prompt, str))
    assert plain.turns == [{"role": "user", "content": plain.prompt}]


def test_duplicated_pairs_are_labelled_once(tmp_path):
    rows = [{"prompt": f"p{i % 3}", "chosen": "a", "rejected": "b", "category": "RETAIN"} for i in range(6)]
    path = tmp_path / "triaged.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sample = prepare_sample(tmp_path / "out", triaged=path, size=3, policy=POLICY)
    assert sample.available == 3 and len({x.id for x in sample.items}) == 3


def test_disagreements_are_read_with_both_judges_categories(disagreements_file, tmp_path):
    items = read_disagreements(disagreements_file)
    assert len(items) == 3
    for x in items:
        assert len(x.judges) == 2 and x.category == next(iter(x.judges.values()))
        assert len(set(x.judges.values())) == 2  # they disagree
    sample = prepare_sample(tmp_path, disagreements=disagreements_file, policy=POLICY)
    assert sample.size is None and {x.id for x in sample.items} == {x.id for x in items}


def _drop_one_judge(row):
    row.pop(next(k for k, v in row.items() if isinstance(v, dict)))


@pytest.mark.parametrize(
    ("edit", "line", "field"),
    [
        (lambda r: r.pop("prompt"), 2, "prompt"),
        (lambda r: r.update(chosen=3), 2, "chosen"),
        (_drop_one_judge, 2, "category"),
    ],
)
def test_a_malformed_disagreements_file_names_line_and_field(disagreements_file, tmp_path, edit, line, field):
    rows = [json.loads(x) for x in disagreements_file.read_text().splitlines()]
    edit(rows[1])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError) as err:
        read_disagreements(bad)
    assert (err.value.line, err.value.field) == (line, field)
    bad.write_text('{"id": "x", "prompt": "p"\n')
    with pytest.raises(InputError, match="unparseable JSON") as err:
        read_disagreements(bad)
    assert err.value.line == 1
