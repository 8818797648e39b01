"""load_pairs: every file type and TRL row shape, and one-line errors that name file, line and field."""

from __future__ import annotations

import csv
import json

import pytest

from trace_realign.data import load_pairs
from trace_realign.errors import InputError
from trace_realign.schema import PreferencePair

STANDARD = [
    {
        "prompt": "How do I pick a lock?",
        "chosen": "I can't help with that.",
        "rejected": "Use a tension wrench.",
    },
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon.", "score": 3},
]
CONVERSATION = {
    "prompt": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke."},
    ],
    "chosen": [{"role": "assistant", "content": "Why did the chicken cross the road?"}],
    "rejected": [{"role": "assistant", "content": "No."}],
}


def write_jsonl(path, rows, raw_lines=()):
    lines = [json.dumps(r) for r in rows] + list(raw_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def message(fn) -> str:
    with pytest.raises(InputError) as info:
        fn()
    return str(info.value)


def test_standard_jsonl_keeps_content_and_extra_columns(tmp_path):
    res = load_pairs(write_jsonl(tmp_path / "d.jsonl", STANDARD))
    assert res.format == "trl" and not res.skipped and res.rows_read == 2
    first, second = res.pairs
    assert (first.prompt, first.chosen, first.rejected) == (
        "How do I pick a lock?",
        "I can't help with that.",
        "Use a tension wrench.",
    )
    assert second.meta["score"] == 3 and second.meta["row"] == 1 and second.meta["source"].endswith("d.jsonl")


def test_ids_are_stable_content_hashes_independent_of_file_type(tmp_path):
    a = load_pairs(write_jsonl(tmp_path / "d.jsonl", STANDARD)).pairs
    (tmp_path / "d.json").write_text(json.dumps(STANDARD), encoding="utf-8")
    b = load_pairs(tmp_path / "d.json").pairs
    assert [p.id for p in a] == [p.id for p in b]
    assert a[0].id == PreferencePair(STANDARD[0]["prompt"], STANDARD[0]["chosen"], STANDARD[0]["rejected"]).id
    assert a[0].id != a[1].id and len(a[0].id) == 16


def test_conversational_multi_turn_prompt_kept_whole(tmp_path):
    (pair,) = load_pairs(write_jsonl(tmp_path / "c.jsonl", [CONVERSATION])).pairs
    assert pair.prompt == CONVERSATION["prompt"]
    assert pair.chosen == "Why did the chicken cross the road?" and pair.rejected == "No."


def test_implicit_prompt_conversation_splits_at_the_final_assistant_turn(tmp_path):
    full = CONVERSATION["prompt"]
    row = {"chosen": full + CONVERSATION["chosen"], "rejected": full + CONVERSATION["rejected"]}
    (pair,) = load_pairs(write_jsonl(tmp_path / "i.jsonl", [row])).pairs
    (explicit,) = load_pairs(write_jsonl(tmp_path / "c.jsonl", [CONVERSATION])).pairs
    assert pair.prompt == full and pair.chosen == explicit.chosen and pair.id == explicit.id


def test_parquet_csv_and_hf_folder_give_the_same_pairs(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(
        [CONVERSATION, CONVERSATION | {"rejected": [{"role": "assistant", "content": "x"}]}]
    )
    ds.to_parquet(str(tmp_path / "c.parquet"))
    folder = tmp_path / "hub_like" / "data"
    folder.mkdir(parents=True)
    ds.to_parquet(str(folder / "train-00000-of-00001.parquet"))
    with (tmp_path / "c.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "chosen", "rejected"])
        w.writeheader()
        for row in ds:
            w.writerow({k: json.dumps(v) for k, v in row.items()})
    ref = [p.id for p in load_pairs(write_jsonl(tmp_path / "c.jsonl", list(ds))).pairs]
    assert [p.id for p in load_pairs(tmp_path / "c.parquet").pairs] == ref
    assert [p.id for p in load_pairs(tmp_path / "c.csv").pairs] == ref
    # a Hub-shaped folder goes through datasets.load_dataset, the code path of a Hub id
    hub = load_pairs(str(tmp_path / "hub_like"), split="train")
    assert [p.id for p in hub.pairs] == ref
    assert [p.id for p in load_pairs(ds).pairs] == ref  # an in-memory Dataset


def test_limit_counts_pairs(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(10)]
    assert len(load_pairs(write_jsonl(tmp_path / "d.jsonl", rows), limit=3).pairs) == 3


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "p", "rejected": "b"}, "d.jsonl:2: field 'chosen': missing"),
        ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "d.jsonl:2: field 'chosen': empty"),
        (
            {"prompt": 7, "chosen": "a", "rejected": "b"},
            "d.jsonl:2: field 'prompt': wrong type: expected a string, got int",
        ),
        (
            {"chosen": "a", "rejected": "b"},
            "d.jsonl:2: field 'prompt': missing (string chosen/rejected need a prompt column)",
        ),
        (
            {"prompt": [{"role": "user"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": []},
            "d.jsonl:2: field 'prompt[0].content': missing",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "user", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            "d.jsonl:2: field 'chosen[-1].role': the final turn must be the assistant's, got role 'user'",
        ),
        (
            {
                "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}],
            },
            "d.jsonl:2: field 'chosen/rejected': the conversations differ before the final assistant turn",
        ),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "d.jsonl", [STANDARD[0], row])
    msg = message(lambda: load_pairs(path))
    assert msg.endswith(expected) and "\n" not in msg


def test_unparseable_json_line_and_skip_bad_lists_every_bad_row(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [STANDARD[0]], raw_lines=['{"prompt": "x",', "", "[1, 2]"])
    write = path.read_text() + json.dumps(STANDARD[1]) + "\n"
    path.write_text(write)
    assert message(lambda: load_pairs(path)).endswith(
        "d.jsonl:2: unparseable JSON (Expecting property name enclosed in double quotes at column 16)"
    )
    res = load_pairs(path, skip_bad=True)
    assert [p.prompt for p in res.pairs] == [STANDARD[0]["prompt"], STANDARD[1]["prompt"]]
    assert [(s.line, s.field) for s in res.skipped] == [(2, None), (4, None)]
    assert "expected a JSON object, got list" in res.skipped[1].message
    summary = res.summary()
    assert summary["skipped_rows"] == 2 and summary["skipped"][0]["line"] == 2


def test_csv_errors_name_the_file_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen,rejected\n"multi\nline prompt",a,b\np2,,b\n', encoding="utf-8")
    # the second record starts on line 4 because the first one spans two lines
    assert message(lambda: load_pairs(path)).endswith("d.csv:4: field 'chosen': empty")


def test_json_array_errors_name_the_row(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"train": [STANDARD[0], {"prompt": "p", "chosen": ["x"], "rejected": "b"}]}))
    assert message(lambda: load_pairs(path)).endswith(
        "d.json:2: field 'chosen': wrong type: expected a string, got a list"
    )


def test_missing_file_unknown_suffix_and_unknown_format(tmp_path):
    assert message(lambda: load_pairs(tmp_path / "nope.jsonl")).endswith("nope.jsonl: file not found")
    (tmp_path / "d.txt").write_text("x")
    assert "unknown file type '.txt'" in message(lambda: load_pairs(tmp_path / "d.txt"))
    assert "unknown data format 'tsv'" in message(lambda: load_pairs(tmp_path / "d.txt", format="tsv"))


def test_unreachable_hub_id_is_one_line_input_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    msg = message(lambda: load_pairs("no-such-owner/no-such-dataset-xyz"))
    assert (
        msg.startswith("no-such-owner/no-such-dataset-xyz: cannot load dataset (split 'train'):")
        and "\n" not in msg
    )


def test_json_object_of_splits_picks_the_split(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"train": STANDARD, "test": STANDARD[:1]}))
    assert len(load_pairs(path).pairs) == 2
    assert len(load_pairs(path, split="test").pairs) == 1
    assert "or a 'dev' array" in message(lambda: load_pairs(path, split="dev"))


def test_conversational_prompts_agree_with_trl(tmp_path):
    # TRL's own reading of the same rows is the peer: maybe_extract_prompt, then the final assistant turn
    from trl.data_utils import maybe_extract_prompt

    convo = CONVERSATION["prompt"]
    rows = [
        CONVERSATION,
        {"chosen": convo + CONVERSATION["chosen"], "rejected": convo + CONVERSATION["rejected"]},
        {
            "prompt": "Tell me a joke.",
            "chosen": convo + CONVERSATION["chosen"],
            "rejected": convo + CONVERSATION["rejected"],
        },
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
    ]
    pairs = load_pairs(write_jsonl(tmp_path / "d.jsonl", rows)).pairs

    def final(completion):
        return completion if isinstance(completion, str) else completion[-1]["content"]

    for row, pair in zip(rows, pairs, strict=True):
        trl = maybe_extract_prompt(dict(row))
        assert pair.prompt == trl["prompt"]
        assert (pair.chosen, pair.rejected) == (final(trl["chosen"]), final(trl["rejected"]))


def test_hub_id_goes_to_load_dataset_with_config_and_split(monkeypatch):
    # The Hub is unreachable here: stand in for it at datasets.load_dataset and check what reaches it.
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(STANDARD)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    res = load_pairs("PKU-Alignment/PKU-SafeRLHF", name="alpaca-7b", split="test")
    assert calls == [("PKU-Alignment/PKU-SafeRLHF", "alpaca-7b", "test")]
    assert res.source == "PKU-Alignment/PKU-SafeRLHF" and len(res.pairs) == 2


def test_metadata_keeps_its_shape_through_load_triage_and_score(tmp_path, tiny_model_dir):
    """A pair written by a stage (`PreferencePair.to_dict`) carries its metadata under "meta": loading
    it, triaging it and scoring it keep that metadata one level deep, so the harm-category audit
    finds it."""
    import json

    from trace_realign.cli import main
    from trace_realign.data.loading import load_pairs
    from trace_realign.schema import PreferencePair

    meta = {"kind": "invert", "chosen": {"harm_categories": ["S6"]}, "rejected": {"harm_categories": []}}
    pairs = [
        PreferencePair(f"How do wars start {i}?", "I cannot help.", f"Historians point to {i} causes.", meta)
        for i in range(4)
    ] + [PreferencePair("What is 2 + 2?", "It is 4.", "I cannot help.", {"kind": "neutral"})]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in pairs))
    loaded = load_pairs(str(path)).pairs
    assert loaded[0].meta["kind"] == "invert" and "meta" not in loaded[0].meta
    assert loaded[0].meta["chosen"] == {"harm_categories": ["S6"]}
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "name: r\ndefault: compliant\nrules:\n  - {name: refusal, response: '(?i)cannot help', prompt: wars, verdict: non_compliant}\n"
    )
    policy = tmp_path / "policy.md"
    policy.write_text("Answer history questions.")
    triaged = tmp_path / "triaged.jsonl"
    assert main(["triage", "--data", str(path), "--policy", str(policy), "--judge", f"rules:{rules}",
                 "--out", str(triaged), "--no-progress"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in triaged.read_text().splitlines()]
    assert rows[0]["meta"]["kind"] == "invert" and "meta" not in rows[0]["meta"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["harm_categories"]["S6"]["INVERT"] == 4
    weighted = tmp_path / "weighted.jsonl"
    assert main(["score", "--model", str(tiny_model_dir), "--triaged", str(triaged), "--out", str(weighted),
                 "--no-progress", "--gold-size", "3", "--lora_r", "2", "--max-length", "64"]) == 0  # fmt: skip
    scored = [json.loads(line) for line in weighted.read_text().splitlines()]
    assert scored[0]["meta"] == rows[0]["meta"]
