"""Score and train read one category -> loss mapping (`triage.terms.category_term`)."""

from __future__ import annotations

import pytest

from trace_realign.impact.scoring import conflict_item
from trace_realign.schema import Category
from trace_realign.triage.terms import WEIGHT_COLUMNS, Term, category_term
from trace_realign.update.data import KIND_NAMES, WeightedRow, select_examples
from trace_realign.update.presets import PRESETS


def test_the_triage_table():
    assert category_term(Category.INVERT, "w", "l") == Term("pref", "l", "w")
    assert category_term(Category.PUNISH, "w", "l", "c") == Term("pref", "c", "w")
    assert category_term(Category.PUNISH, "w", "l") == Term("npo", "w", "l")
    assert category_term(Category.RETAIN, "w", "l", "c") == Term("kl", "w", None)
    with pytest.raises(ValueError):
        category_term(Category.UNKNOWN, "w", "l")


@pytest.mark.parametrize(
    "category, correction",
    [(Category.INVERT, None), (Category.PUNISH, "a safe reply"), (Category.PUNISH, None)],
)
@pytest.mark.parametrize("method, score_corrections", [("trace", False), ("trace-oracle", True)])
def test_score_weighs_the_loss_that_train_trains(category, correction, method, score_corrections):
    """`trace` trains dual NPO on PUNISH and `score` scores it by default; `trace-oracle` trains the
    correction term, which `score --corrections` scores (impact/stage.py passes the correction on
    only then)."""
    assert PRESETS[method].corrections is score_corrections
    weights = dict.fromkeys(WEIGHT_COLUMNS.values(), 1.0)
    row = WeightedRow(1, "id", "x?", "y_w", "y_l", category, 0, None, correction, 1.0, weights)
    scored = conflict_item("id", "x?", "y_w", "y_l", category, correction if score_corrections else None)
    (example,) = select_examples([row], PRESETS[method], alpha_kl=0.1).examples
    assert (KIND_NAMES[example.kind], example.pos, example.neg) == (scored.kind, scored.a, scored.b)
