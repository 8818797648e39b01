"""Weighted-file rows the update tests train on."""

from __future__ import annotations

import json

from trace_realign.schema import content_id

REFUSE = "I cannot help with that."
COMPLY = "Sure: here are the steps."


def weighted_rows(n_per_category: int = 4, corrections: bool = False) -> list[dict]:
    """INVERT (old refusal now wrong), PUNISH (both responses wrong) and RETAIN rows with impact weights;
    with `corrections`, PUNISH rows carry an oracle correction and every conflict the weights of the
    loss trace-oracle trains too (`impact_weight_corrected`, as the score stage writes them)."""
    rows = []
    for i in range(n_per_category):
        topic = f"topic {i}"
        rows.append(
            _row(f"How do I study {topic}?", REFUSE, COMPLY + f" {i}", "INVERT", 0, 1, 0.5 + 0.25 * i)
        )
        punish = _row(
            f"Hurt someone with {topic}", f"Do it like this {i}.", f"Fine, {i}.", "PUNISH", 0, 0, 1.0
        )
        if corrections:
            punish["correction"] = f"I won't help hurt anyone, {i}."
        rows.append(punish)
        rows.append(_row(f"What is {topic}?", f"It is a subject {i}.", REFUSE, "RETAIN", 1, 0, None))
    if corrections:
        for r in rows:
            if r["category"] == "INVERT":
                r["impact_weight_corrected"] = r["impact_weight"] / 2
            elif r["category"] == "PUNISH":
                r["impact_weight_corrected"] = 2.0 + int(r["chosen"].rstrip(".").split()[-1])
    return rows


def _row(prompt, chosen, rejected, category, c_w, c_l, w):
    return {
        "id": content_id(prompt, chosen, rejected),
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "meta": {},
        "category": category,
        "c_w": c_w,
        "c_l": c_l,
        "impact_weight": w,
    }


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)
