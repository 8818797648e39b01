"""The PKU-SafeRLHF adapter on rows in the dataset's real schema: docs/method.md's pairing rules and metadata."""

from __future__ import annotations

import json

import pytest

from trace_realign.data import load_pairs
from trace_realign.data.pku import DROPPED_SAFER_ID, harm_code
from trace_realign.errors import InputError

NO_HARM = {
    name: False
    for name in (
        "Endangering National Security",
        "Insulting Behavior",
        "Discriminatory Behavior",
        "Endangering Public Health",
        "Copyright Issues",
        "Violence",
        "Drugs",
        "Privacy Violation",
        "Economic Crime",
        "Mental Manipulation",
        "Human Trafficking",
        "Physical Harm",
        "Sexual Content",
        "Cybercrime",
        "Disrupting Public Order",
        "Environmental Damage",
        "Psychological Harm",
        "White-Collar Crime",
        "Animal Abuse",
    )
}


def pku_row(i, safe0, safe1, safer, better=0, harm0=(), harm1=(), sev0=0, sev1=0):
    return {
        "prompt": f"prompt {i}",
        "response_0": f"response A{i}",
        "response_1": f"response B{i}",
        "prompt_source": "Alpaca3-70B",
        "response_0_source": "Alpaca-7B",
        "response_1_source": "Alpaca-7B",
        "is_response_0_safe": safe0,
        "is_response_1_safe": safe1,
        "response_0_harm_category": NO_HARM | dict.fromkeys(harm0, True),
        "response_1_harm_category": NO_HARM | dict.fromkeys(harm1, True),
        "response_0_severity_level": sev0,
        "response_1_severity_level": sev1,
        "better_response_id": better,
        "safer_response_id": safer,
        "response_0_sha256": "0" * 64,
        "response_1_sha256": "1" * 64,
    }


ROWS = [
    # one safe, one unsafe: the safe one is chosen, whatever safer/better say
    pku_row(0, False, True, safer=0, better=0, harm0=["Violence", "Drugs"], sev0=2),
    pku_row(1, True, False, safer=1, better=1, harm1=["Cybercrime"], sev1=1),
    # both unsafe / both safe: the safer_response_id one is chosen
    pku_row(
        2, False, False, safer=1, harm0=["Human Trafficking"], harm1=["Privacy Violation"], sev0=3, sev1=1
    ),
    pku_row(3, True, True, safer=0, better=1),
    # not 0/1: dropped and counted
    pku_row(4, True, False, safer=-1),
    pku_row(5, True, False, safer=None),
]


@pytest.fixture
def pku_file(tmp_path):
    path = tmp_path / "pku.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def test_pairing_rules_and_metadata(pku_file):
    res = load_pairs(pku_file)  # format told from the columns
    assert res.format == "pku" and not res.skipped
    assert res.dropped == {DROPPED_SAFER_ID: 2} and res.summary()["dropped"] == {DROPPED_SAFER_ID: 2}
    assert [(p.chosen, p.rejected) for p in res.pairs] == [
        ("response B0", "response A0"),
        ("response A1", "response B1"),
        ("response B2", "response A2"),
        ("response A3", "response B3"),
    ]
    p0, _, p2, p3 = res.pairs
    assert p0.meta["source"] == "pku-saferlhf" and p0.meta["row"] == 0 and p2.meta["row"] == 2
    assert p0.meta["chosen"] == {"safe": True, "harm_categories": [], "severity": 0, "response_id": 1}
    assert p0.meta["rejected"] == {
        "safe": False,
        "harm_categories": ["S6", "S7"],
        "severity": 2,
        "response_id": 0,
    }
    assert p2.meta["chosen"]["harm_categories"] == ["S8"] and p2.meta["rejected"]["harm_categories"] == [
        "S11"
    ]
    assert p3.meta["better_response_id"] == 1 and p3.meta["safer_response_id"] == 0
    assert p0.prompt == "prompt 0"


def test_same_pairs_from_parquet_and_hub_shaped_folder(tmp_path, pku_file):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    folder = tmp_path / "PKU-SafeRLHF" / "data"
    folder.mkdir(parents=True)
    ds.to_parquet(str(folder / "train-00000-of-00001.parquet"))
    ref = load_pairs(pku_file)
    via_hub = load_pairs(str(tmp_path / "PKU-SafeRLHF"), format="pku")
    assert [p.id for p in via_hub.pairs] == [p.id for p in ref.pairs]
    assert [p.meta for p in via_hub.pairs] == [p.meta for p in ref.pairs]
    assert via_hub.dropped == ref.dropped


def test_csv_export_with_json_harm_dicts(tmp_path):
    import csv

    path = tmp_path / "pku.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        w.writeheader()
        for r in ROWS[:3]:
            w.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()})
    res = load_pairs(path, format="pku")
    assert [p.chosen for p in res.pairs] == ["response B0", "response A1", "response B2"]
    assert res.pairs[0].meta["rejected"]["harm_categories"] == ["S6", "S7"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"response_1": ""}, "field 'response_1': empty"),
        (
            {"is_response_0_safe": "maybe"},
            "field 'is_response_0_safe': wrong type: expected true or false, got 'maybe'",
        ),
        (
            {"safer_response_id": "first"},
            "field 'safer_response_id': wrong type: expected 0 or 1, got 'first'",
        ),
        ({"response_0_harm_category": 3}, "field 'response_0_harm_category': wrong type"),
        ({"response_1_severity_level": "high"}, "field 'response_1_severity_level': wrong type"),
    ],
)
def test_bad_pku_rows_name_line_and_field(tmp_path, change, expected):
    path = tmp_path / "pku.jsonl"
    rows = [ROWS[0], ROWS[1] | change]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_pairs(path, format="pku")
    assert f"pku.jsonl:2: {expected}" in str(info.value)
    res = load_pairs(path, format="pku", skip_bad=True)
    assert len(res.pairs) == 1 and len(res.skipped) == 1 and res.skipped[0].line == 2


def test_missing_required_column(tmp_path):
    path = tmp_path / "pku.jsonl"
    row = dict(ROWS[0])
    del row["is_response_1_safe"]
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(InputError, match=r"pku.jsonl:1: field 'is_response_1_safe': missing"):
        load_pairs(path, format="pku")


def test_harm_code():
    assert (
        harm_code("Violence") == "S6" and harm_code("white-collar crime") == "S18" and harm_code("s3") == "S3"
    )
    assert harm_code("Something New") == "Something New"
