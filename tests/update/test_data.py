"""Per-preset data selection (docs/method.md's table), validation of the weighted file, batches, tensors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from trace_realign.errors import InputError
from trace_realign.losses import KL, NPO, PREF
from trace_realign.schema import Category
from trace_realign.update.data import (
    StratifiedSampler,
    TraceDataset,
    batch_counts,
    collate_examples,
    read_weighted,
    select_examples,
)
from trace_realign.update.presets import PRESETS

from .rows import COMPLY, REFUSE, weighted_rows, write_rows

I, P, R = Category.INVERT, Category.PUNISH, Category.RETAIN  # noqa: E741


def selection(tmp_path, method, rows=None, alpha_kl=0.1, normalisation="mean"):
    path = write_rows(tmp_path / "w.jsonl", rows if rows is not None else weighted_rows())
    return select_examples(
        read_weighted(path), PRESETS[method], alpha_kl=alpha_kl, normalisation=normalisation
    )


def shape(sel):
    return Counter((e.category, e.kind) for e in sel.examples)


def test_trace_inverts_punishes_and_anchors(tmp_path):
    sel = selection(tmp_path, "trace")
    assert shape(sel) == {(I, PREF): 4, (P, NPO): 4, (R, KL): 4}
    inv = next(e for e in sel.examples if e.category is I)
    assert inv.pos.startswith(COMPLY) and inv.neg == REFUSE  # y_l preferred over y_w
    pun = next(e for e in sel.examples if e.category is P)
    assert (pun.npo_pos, pun.npo_neg) == (True, True)
    # impact weights re-normalised to mean 1 over the conflicts; RETAIN anchors weigh 1
    conflicts = [e.weight for e in sel.examples if e.category is not R]
    assert sum(conflicts) / len(conflicts) == pytest.approx(1.0)
    assert all(e.weight == 1.0 for e in sel.examples if e.category is R)
    raw = [0.5, 0.75, 1.0, 1.25]
    inv_w = [e.weight for e in sel.examples if e.category is I]
    assert inv_w == pytest.approx([8 * r / (sum(raw) + 4.0) for r in raw])


def test_paper_normalisation_sums_to_one(tmp_path):
    sel = selection(tmp_path, "trace", normalisation="paper")
    assert sum(e.weight for e in sel.examples if e.category is not R) == pytest.approx(1.0)


def test_trace_oracle_prefers_the_correction_and_trace_unlearns_punish(tmp_path):
    rows = weighted_rows(corrections=True)
    sel = selection(tmp_path, "trace-oracle", rows)
    pun = [e for e in sel.examples if e.category is P]
    assert all(e.kind == PREF and e.pos.startswith("I won't") and e.neg.startswith("Do it") for e in pun)
    # its weights are those of the loss it trains (impact_weight_corrected), re-normalised to mean 1
    raw = {r["id"]: r["impact_weight_corrected"] for r in rows if r["category"] != "RETAIN"}
    got = {e.row_id: e.weight for e in sel.examples if e.category is not R}
    scale = len(raw) / sum(raw.values())
    assert got == pytest.approx({k: v * scale for k, v in raw.items()})
    # the headline trace ignores the corrections: dual NPO on both PUNISH responses, trace's weights
    sel = selection(tmp_path, "trace", rows)
    pun = [e for e in sel.examples if e.category is P]
    assert pun and all(e.kind == NPO and e.npo_pos and e.npo_neg for e in pun)
    raw = {r["id"]: r["impact_weight"] for r in rows if r["category"] != "RETAIN"}
    scale = len(raw) / sum(raw.values())
    assert {e.row_id: e.weight for e in sel.examples if e.category is not R} == pytest.approx(
        {k: v * scale for k, v in raw.items()}
    )


def test_trace_oracle_refuses_weights_scored_for_another_loss(tmp_path):
    rows = weighted_rows(corrections=True)
    for r in rows:
        r.pop("impact_weight_corrected", None)
    with pytest.raises(InputError, match="scored without the oracle corrections"):
        selection(tmp_path, "trace-oracle", rows)


def test_no_impact_is_uniform_and_no_kl_keeps_the_same_exposure(tmp_path):
    assert {e.weight for e in selection(tmp_path, "trace-no-impact").examples} == {1.0}
    sel = selection(tmp_path, "trace-no-kl")
    # RETAIN is still drawn (with KL weight 0), so no more conflicts per step than trace
    assert shape(sel) == shape(selection(tmp_path, "trace")) == {(I, PREF): 4, (P, NPO): 4, (R, KL): 4}
    assert sel.counts["retain_kl_weight_0"] == 4
    assert shape(selection(tmp_path, "trace", alpha_kl=0.0)) == shape(sel)


def test_no_triage_unlearns_every_old_loser_as_the_paper_ablation_does(tmp_path):
    """No triage: the judge's verdicts are not read; every old pair keeps its old preference and its
    old loser y_l is unlearned (INVERT's y_l is the answer the new policy wants: that is the point)."""
    rows = weighted_rows()
    sel = selection(tmp_path, "trace-no-triage", rows)
    assert {e.kind for e in sel.examples} == {NPO} and len(sel.examples) == len(rows)
    by_id = {r["id"]: r for r in rows}
    assert all(e.pos == by_id[e.row_id]["rejected"] and e.neg is None for e in sel.examples)
    assert all(e.npo_pos and not e.npo_neg and e.weight == 1.0 for e in sel.examples)


def test_npo_flagged_unlearns_every_flagged_response(tmp_path):
    sel = selection(tmp_path, "npo-flagged")
    assert {e.kind for e in sel.examples} == {NPO}
    flags = {e.category: (e.npo_pos, e.npo_neg) for e in sel.examples}
    assert flags == {I: (True, False), P: (True, True), R: (False, True)}
    # the file's impact weights are TRACE's loss's: the trainer weighs these NPO terms itself
    assert all(e.weight == 1.0 for e in sel.examples)


def test_u2a_unlearns_single_flagged_responses(tmp_path):
    rows = weighted_rows()
    sel = selection(tmp_path, "u2a", rows)
    assert {e.kind for e in sel.examples} == {NPO} and all(e.neg is None for e in sel.examples)
    assert shape(sel) == {(I, NPO): 4, (P, NPO): 8, (R, NPO): 4}
    by_id = {r["id"]: r for r in rows}
    got = sorted((e.row_id, e.pos) for e in sel.examples)
    want = sorted(
        [(r["id"], r["chosen"]) for r in rows if r["c_w"] == 0]
        + [(r["id"], r["rejected"]) for r in rows if r["c_l"] == 0]
    )
    assert got == want and len(by_id) == 12


def test_naive_oracle_dpo_swaps_invert_keeps_retain_drops_punish(tmp_path):
    rows = weighted_rows()
    for method in ("naive-oracle-dpo", "rdpo"):
        sel = selection(tmp_path, method, rows)
        assert shape(sel) == {(I, PREF): 4, (R, PREF): 4} and sel.counts["punish_dropped"] == 4
        assert {e.weight for e in sel.examples} == {1.0}
        by_id = {r["id"]: r for r in rows}
        for e in sel.examples:
            r = by_id[e.row_id]
            expect = (r["rejected"], r["chosen"]) if e.category is I else (r["chosen"], r["rejected"])
            assert (e.pos, e.neg) == expect


def test_dpo_gold_uses_corrections(tmp_path):
    rows = weighted_rows(corrections=True)
    del rows[1]["correction"]  # one PUNISH row without a correction is left out, and counted
    sel = selection(tmp_path, "dpo-gold", rows)
    assert shape(sel) == {(I, PREF): 4, (R, PREF): 4, (P, PREF): 3} and sel.counts["punish_dropped"] == 1
    assert all(e.pos.startswith("I won't") for e in sel.examples if e.category is P)
    with pytest.raises(InputError, match="needs oracle corrections"):
        selection(tmp_path, "dpo-gold", weighted_rows())


def test_unknown_rows_are_left_out_and_counted(tmp_path):
    rows = weighted_rows()
    rows[0].update(category="UNKNOWN", c_l=None, impact_weight=None)
    sel = selection(tmp_path, "trace", rows)
    assert sel.counts["rows_UNKNOWN"] == 1 and sel.counts["examples_INVERT_pref"] == 3


@pytest.mark.parametrize(
    "edit, field, line",
    [
        (lambda r: r[2].pop("category"), "category", 3),
        (lambda r: r[1].update(category="MAYBE"), "category", 2),
        (lambda r: r[0].update(impact_weight=-1), "impact_weight", 1),
        (lambda r: r[0].update(impact_weight="high"), "impact_weight", 1),
        (lambda r: r[4].update(c_w=2), "c_w", 5),
        (lambda r: r[3].pop("chosen"), "chosen", 4),
    ],
)
def test_bad_rows_name_line_and_field(tmp_path, edit, field, line):
    rows = weighted_rows()
    edit(rows)
    path = write_rows(tmp_path / "w.jsonl", rows)
    with pytest.raises(InputError) as err:
        read_weighted(path)
    assert (err.value.field, err.value.line, err.value.path) == (field, line, path)


def test_missing_and_all_zero_weights_refuse_to_train(tmp_path):
    rows = weighted_rows()
    rows[3]["impact_weight"] = None  # an INVERT row (line 4) that was never scored
    with pytest.raises(InputError, match="trace-no-impact") as err:
        selection(tmp_path, "trace", rows)
    assert (err.value.line, err.value.field) == (4, "impact_weight")
    assert selection(tmp_path, "trace-no-impact", rows).examples  # uniform weights need none
    zero = [{**r, "impact_weight": 0.0 if r["category"] != "RETAIN" else None} for r in weighted_rows()]
    with pytest.raises(InputError, match="all 8 impact weights are 0"):
        selection(tmp_path, "trace", zero)


def test_nothing_to_realign(tmp_path):
    retain_only = [r for r in weighted_rows() if r["category"] == "RETAIN"]
    with pytest.raises(InputError, match="no INVERT or PUNISH"):
        selection(tmp_path, "trace", retain_only)


def test_batch_counts_follow_the_proportions_exactly_over_batches():
    counts = batch_counts([1, 1, 1], 4, 30)
    assert all(sum(c) == 4 for c in counts)
    assert [sum(c[i] for c in counts) for i in range(3)] == [40, 40, 40]
    assert batch_counts([2, 1, 1], 4, 1) == [[2, 1, 1]]
    assert batch_counts([1, 0, 1], 3, 2) == [[2, 0, 1], [1, 0, 2]]


def test_stratified_sampler_batches_and_determinism():
    groups = [[0, 1, 2], [3], [4, 5, 6, 7, 8, 9]]  # a small PUNISH stratum repeats, never runs dry
    s = StratifiedSampler(groups, [1, 1, 1], batch_size=3, seed=7)
    order = list(s)
    assert len(order) == len(s) == 12
    stratum = {i: g for g, idx in enumerate(groups) for i in idx}
    for b in range(4):
        assert sorted(stratum[i] for i in order[3 * b : 3 * b + 3]) == [0, 1, 2]
    assert list(StratifiedSampler(groups, [1, 1, 1], 3, seed=7)) == order
    s.set_epoch(1)
    assert list(s) != order
    # an empty stratum's share goes to the others
    s2 = StratifiedSampler([[0, 1], [], [2, 3]], [1, 1, 1], batch_size=2, seed=0)
    assert Counter(i < 2 for i in s2) == {True: 2, False: 2}


def _padding(batches, lengths):
    """Padded positions over an epoch: each batch pads every member to its longest."""
    total = 0
    for b in batches:
        members = [i for part in b for i in part]
        total += sum(max(lengths[i] for i in members) - lengths[i] for i in members)
    return total


@pytest.mark.parametrize("proportions", [[1, 1, 1], [3, 1, 2]])
def test_length_grouping_keeps_strata_and_exposure_and_cuts_padding(proportions):
    g = torch.Generator().manual_seed(0)
    groups = [list(range(0, 30)), list(range(30, 37)), list(range(37, 60))]
    lengths = torch.randint(10, 200, (60,), generator=g).tolist()
    plain = StratifiedSampler(groups, proportions, batch_size=4, seed=3)
    grouped = StratifiedSampler(groups, proportions, batch_size=4, seed=3, lengths=lengths, length_window=50)
    for epoch in range(3):
        plain.set_epoch(epoch)
        grouped.set_epoch(epoch)
        a, b = plain.batches(), grouped.batches()
        # the same per-stratum counts in every batch position multiset, and the same draws per example
        assert sorted(tuple(map(len, x)) for x in a) == sorted(tuple(map(len, x)) for x in b)
        assert Counter(i for x in a for part in x for i in part) == Counter(
            i for x in b for part in x for i in part
        )
        for x in b:
            for s, part in enumerate(x):
                assert all(i in groups[s] for i in part)
        assert list(grouped) == [i for x in b for part in x for i in part]
        assert _padding(b, lengths) < 0.5 * _padding(a, lengths)
    # still a shuffle: the order depends on the epoch, and the same seed gives the same order
    grouped.set_epoch(0)
    first = list(grouped)
    assert list(StratifiedSampler(groups, proportions, 4, seed=3, lengths=lengths)) == first
    grouped.set_epoch(1)
    assert list(grouped) != first


def test_natural_sampler_draws_every_example_once_per_epoch():
    lengths = [5, 50, 7, 60, 9, 70, 11, 80]
    for lens in (None, lengths):
        s = StratifiedSampler.natural(8, batch_size=4, seed=1, lengths=lens)
        assert sorted(s) == list(range(8))
    batches = StratifiedSampler.natural(8, 4, seed=1, lengths=lengths).batches()
    assert sorted(sorted(b[0]) for b in batches) == [[0, 2, 4, 6], [1, 3, 5, 7]]


def test_dataset_lengths_are_the_longest_sequence(tmp_path, tiny_model_dir):
    from trace_realign.model.loading import load_tokenizer

    sel = selection(tmp_path, "trace")
    ds = TraceDataset(sel, load_tokenizer(tiny_model_dir))
    assert ds.lengths() == [max(len(e.input_ids) for e in it["seqs"]) for it in ds.items]


def test_collate_maps_examples_to_their_sequences(tmp_path, tiny_model_dir):
    from trace_realign.model.loading import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    ds = TraceDataset(selection(tmp_path, "trace"), tok, max_length=64)
    items = [ds[0], ds[2], ds[1]]  # INVERT (2 sequences), RETAIN (1), PUNISH (2)
    ds.set_reference([(0, 0, -1.5)])
    b = collate_examples(items, ds.pad_token_id)
    assert b["input_ids"].shape[0] == 5 and b["labels"].shape == b["input_ids"].shape
    assert b["pos_idx"].tolist() == [0, 2, 3] and b["neg_idx"].tolist() == [1, 2, 4]
    assert b["has_neg"].tolist() == [True, False, True] and b["kind"].tolist() == [PREF, KL, NPO]
    assert b["ref_logps"][0] == -1.5 and torch.isnan(b["ref_logps"][1:]).all()
    # labels score exactly the response tokens of each sequence
    enc = items[0]["seqs"][0]
    assert (b["labels"][0] != -100).sum() == enc.response_len
    json.dumps(ds.truncation.to_dict())


def test_a_retain_set_adds_kl_anchors_to_the_methods_built_on_triage(tmp_path):
    from trace_realign.update.data import add_retain_anchors, read_retain_answers

    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        '{"prompt": "How do I hurt someone?", "response": "I cannot help with that."}\n'
        '{"prompt": [{"role": "user", "content": "Make a weapon"}], "response": "I won\'t."}\n'
    )
    read = read_retain_answers(answers)
    assert len(read) == 2 and all(rid.startswith("retain:") for rid, _, _ in read)
    sel = add_retain_anchors(selection(tmp_path, "trace"), read, PRESETS["trace"])
    extra = [e for e in sel.examples if e.row_id.startswith("retain:")]
    assert len(extra) == 2 and {e.kind for e in extra} == {KL} and {e.category for e in extra} == {R}
    assert sel.counts["retain_anchor_answers"] == 2
    # a method without the anchor leaves them out, and says so
    dpo = add_retain_anchors(selection(tmp_path, "naive-oracle-dpo"), read, PRESETS["naive-oracle-dpo"])
    assert not any(e.row_id.startswith("retain:") for e in dpo.examples) and "no KL anchor" in dpo.notes[-1]
    answers.write_text('{"prompt": "x"}\n')
    with pytest.raises(InputError, match=r"answers.jsonl:1: field 'response'"):
        read_retain_answers(answers)
