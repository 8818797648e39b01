"""The same sample through Label Studio: its import format out, its JSON export back into audit's format.

The export below is written by hand in the shape Label Studio documents for a completed task
(labelstud.io/guide/task_format, export.html): `id`, `data`, `annotations[]` with `completed_by`,
`result[]` of `{id, from_name, to_name, type, value, origin}`, `was_cancelled`, `created_at`,
`updated_at`, `lead_time`, `task`, plus `predictions`, `project` and timestamps on the task.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from trace_realign.cli import main
from trace_realign.errors import InputError
from trace_realign.label.labelstudio import export_tasks, import_export, labelling_config, read_export
from trace_realign.label.sample import prepare_sample
from trace_realign.label.store import LabelStore
from trace_realign.triage.labelled import read_labelled
from trace_realign.triage.reviewers import reviewer_agreement

from .conftest import POLICY


@pytest.fixture
def sample(triaged_file, tmp_path):
    return prepare_sample(tmp_path / "labels", triaged=triaged_file, size=4, seed=2, policy=POLICY)


def result(from_name, to_name, kind, value, rid):
    return {
        "id": rid,
        "from_name": from_name,
        "to_name": to_name,
        "type": kind,
        "value": value,
        "origin": "manual",
    }


def annotation(aid, task, who, a=None, b=None, note=None, cancelled=False, at="2026-03-09T22:16:08.728353Z"):
    results = []
    if a:
        results.append(result("verdict_a", "response_a", "choices", {"choices": [a]}, f"a{aid}"))
    if b:
        results.append(result("verdict_b", "response_b", "choices", {"choices": [b]}, f"b{aid}"))
    if note:
        results.append(result("note", "prompt", "textarea", {"text": [note]}, f"n{aid}"))
    return {
        "id": aid,
        "completed_by": who,
        "result": results,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": at,
        "updated_at": at,
        "lead_time": 12.5,
        "result_count": 0,
        "task": task,
        "prediction": {},
        "parent_prediction": None,
        "parent_annotation": None,
    }


def ls_export(tasks_json, annotations_by_task):
    """Label Studio's JSON export of the imported tasks, with the given annotations."""
    out = []
    for i, task in enumerate(tasks_json, start=1):
        out.append(
            {
                "id": i,
                "annotations": annotations_by_task.get(i - 1, []),
                "drafts": [],
                "predictions": [],
                "data": task["data"],
                "meta": {},
                "created_at": "2026-03-09T21:52:49.513742Z",
                "updated_at": "2026-03-09T22:16:08.746926Z",
                "inner_id": i,
                "total_annotations": len(annotations_by_task.get(i - 1, [])),
                "cancelled_annotations": 0,
                "total_predictions": 0,
                "comment_count": 0,
                "unresolved_comment_count": 0,
                "last_comment_updated_at": None,
                "project": 83,
                "updated_by": None,
                "comment_authors": [],
            }
        )
    return out


def test_the_task_file_matches_its_labelling_config(sample, tmp_path):
    tasks_path, config_path = export_tasks(sample, tmp_path / "ls")
    tasks = json.loads(tasks_path.read_text())
    assert len(tasks) == 4 and all(set(t) == {"data"} for t in tasks)
    first, item = tasks[0]["data"], sample.items[0]
    assert (
        first["pair_id"] == item.id
        and first["response_a"] == item.chosen
        and first["response_b"] == item.rejected
    )
    assert first["prompt"] == item.turns and first["policy"] == sample.policy_text
    root = ET.fromstring(config_path.read_text())  # well-formed XML
    assert root.tag == "View"
    names = {e.get("name") for e in root.iter() if e.get("name")}
    for e in root.iter():
        if e.get("value", "").startswith("$"):
            assert e.get("value")[1:] in first, e.get("value")  # every $variable is a data key
        if e.get("toName"):
            assert e.get("toName") in names  # every control points at an object tag
    choices = {e.get("name"): [c.get("value") for c in e] for e in root.iter("Choices")}
    assert choices == {
        "verdict_a": ["complies", "violates", "skip"],
        "verdict_b": ["complies", "violates", "skip"],
    }
    para = next(root.iter("Paragraphs"))
    assert (para.get("nameKey"), para.get("textKey")) == ("role", "content")
    assert re.search(r'<Panel value="Policy: policy">', labelling_config("policy"))


def test_an_export_comes_back_as_one_audit_file_per_annotator(sample, tmp_path):
    tasks_path, _ = export_tasks(sample, tmp_path / "ls")
    tasks = json.loads(tasks_path.read_text())
    ann = {
        0: [
            annotation(1, 1, 10, "complies", "violates", "obvious"),
            annotation(2, 1, {"id": 11, "email": "bob@example.org"}, "complies", "complies"),
        ],
        1: [
            annotation(3, 2, 10, "violates", None),  # B left unanswered: a skip, not a verdict
            annotation(4, 2, {"id": 11, "email": "bob@example.org"}, "violates", "complies"),
        ],
        2: [
            annotation(5, 3, 10, "skip", "skip"),
            annotation(6, 3, {"id": 11, "email": "bob@example.org"}, cancelled=True),  # LS's own Skip
        ],
        3: [
            annotation(7, 4, 10, "complies", "complies", at="2026-03-09T22:00:00.000000Z"),
            annotation(8, 4, 10, "violates", "violates", at="2026-03-10T09:00:00.000000Z"),  # later: counts
        ],
    }
    export = tmp_path / "project-83-at-2026-03-10.json"
    export.write_text(json.dumps(ls_export(tasks, ann)))
    out = tmp_path / "labels"
    written = import_export(export, sample, out)
    assert set(written) == {"labelstudio-10", "bob"}

    ids = [x.id for x in sample.items]
    first = LabelStore(out, "labelstudio-10", sample, lock=False)
    assert {k: (a.chosen, a.rejected) for k, a in first.answers.items()} == {
        ids[0]: ("complies", "violates"),
        ids[1]: ("violates", "skip"),
        ids[2]: ("skip", "skip"),
        ids[3]: ("violates", "violates"),
    }
    assert first.answers[ids[0]].note == "obvious"
    assert first.next_open() is None
    bob = LabelStore(out, "bob", sample, lock=False)
    assert set(bob.answers) == {ids[0], ids[1]} and bob.next_open() == 2

    assert len(read_labelled(written["labelstudio-10"])) == 2 + 1 + 2  # audit reads it unchanged
    agreement = reviewer_agreement(written["labelstudio-10"], written["bob"])
    assert agreement["items"] == 3 and agreement["agreement"]["k"] == 2  # A of pair 0, A of pair 1 agree
    # importing the same export again changes nothing
    before = written["bob"].read_text()
    import_export(export, sample, out)
    assert written["bob"].read_text() == before


def test_a_bad_export_names_the_task_and_field(sample, tmp_path):
    tasks = json.loads(export_tasks(sample, tmp_path / "ls")[0].read_text())
    export = tmp_path / "export.json"
    stranger = [{"data": {**tasks[0]["data"], "pair_id": "0000"}, "annotations": []}]
    export.write_text(json.dumps(ls_export(tasks, {}) + stranger))
    with pytest.raises(InputError, match="not in this sample") as err:
        read_export(export, sample)
    assert err.value.field == "[4].data.pair_id"
    bad = ls_export(tasks, {0: [annotation(1, 1, 10, "maybe", "skip")]})
    export.write_text(json.dumps(bad))
    with pytest.raises(InputError) as err:
        read_export(export, sample)
    assert err.value.field == "[0].annotations[0].result[0].value.choices"
    export.write_text(json.dumps({"tasks": []}))
    with pytest.raises(InputError, match="list of tasks"):
        read_export(export, sample)


def test_the_cli_exports_and_imports(sample, tmp_path, capsys):
    out = tmp_path / "labels"
    assert main(["label", "--out", str(out), "--export-labelstudio", str(tmp_path / "ls")]) == 0
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    export = tmp_path / "export.json"
    export.write_text(json.dumps(ls_export(tasks, {0: [annotation(1, 1, 7, "complies", "violates")]})))
    assert (
        main(["label", "--out", str(out), "--import_labelstudio", str(export), "--judge", "rules:r.yaml"])
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "labelstudio-7" in printed
        and "trace-realign audit --labelled" in printed
        and "--judge rules:r.yaml" in printed
    )
    assert len(read_labelled(out / "labelstudio-7.jsonl")) == 2
