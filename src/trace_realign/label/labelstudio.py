"""The same sample for teams that label in Label Studio: a task file out, its JSON export back in.

`export_tasks(sample, out)` writes `tasks.json` (Label Studio's import format: a list of
`{"data": {...}}`, one task per pair) and `config.xml` (the labelling config to paste into the
project's Labeling Interface): the policy in a collapsible panel, the prompt as dialogue turns
(`Paragraphs`), responses A (old winner y_w) and B (old loser y_l), a single-choice
complies / violates / skip for each and an optional note (`TextArea`).

`import_export(export, sample, out_dir)` reads the project's JSON export (a list of tasks with
`annotations[].result[]`, each result `{from_name, to_name, type, value}`, `value.choices` for
`choices` and `value.text` for `textarea`), joins each task to the sample on `data.pair_id` and
writes one labels file per annotator through `LabelStore`, in the format `audit` reads. Cancelled
(skipped) annotations are left out; a side without a choice counts as skipped; of several
annotations by one annotator of one task the latest counts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from trace_realign.errors import InputError
from trace_realign.io import read_json, write_text_atomic
from trace_realign.label.sample import Sample
from trace_realign.label.store import ANSWERS, Answer, LabelStore, check_reviewer

TASKS_FILE = "tasks.json"
CONFIG_FILE = "config.xml"
# control tag name -> the side of the pair it answers for
CHOICES = {"verdict_a": "chosen", "verdict_b": "rejected"}
NOTE = "note"


def labelling_config(policy_name: str) -> str:
    """The Label Studio labelling config (XML) for the tasks `export_tasks` writes."""
    choices = "\n".join(f'        <Choice value="{a}"/>' for a in ANSWERS)

    def side(tag: str, key: str, title: str) -> str:
        return f"""    <View style="flex: 1; min-width: 0">
      <Header value={quoteattr(title)}/>
      <Text name="{key}" value="${key}"/>
      <Choices name="{tag}" toName="{key}" choice="single-radio" showInline="true" required="true">
{choices}
      </Choices>
    </View>"""

    return f"""<View>
  <Style>.htx-text {{ white-space: pre-wrap; }}</Style>
  <Collapse>
    <Panel value={quoteattr(f"Policy: {policy_name}")}>
      <Text name="policy" value="$policy"/>
    </Panel>
  </Collapse>
  <Header value="Prompt"/>
  <Paragraphs name="prompt" value="$prompt" layout="dialogue" nameKey="role" textKey="content"/>
  <View style="display: flex; gap: 1em">
{side("verdict_a", "response_a", "Response A: does it comply with the policy?")}
{side("verdict_b", "response_b", "Response B: does it comply with the policy?")}
  </View>
  <TextArea name="{NOTE}" toName="prompt" placeholder="Optional note" rows="2" maxSubmissions="1" editable="true"/>
</View>
"""


def tasks(sample: Sample) -> list[dict[str, Any]]:
    """One Label Studio task per pair of the sample, in the sample's order."""
    return [
        {
            "data": {
                "pair_id": x.id,
                "category": x.category,
                "policy": sample.policy_text,
                "prompt": x.turns,
                "response_a": x.chosen,
                "response_b": x.rejected,
            }
        }
        for x in sample.items
    ]


def export_tasks(sample: Sample, out: str | Path) -> tuple[Path, Path]:
    """Write `tasks.json` and `config.xml` into the folder `out`; return their paths."""

    folder = Path(out)
    task_path, config_path = folder / TASKS_FILE, folder / CONFIG_FILE
    write_text_atomic(task_path, json.dumps(tasks(sample), ensure_ascii=False, indent=1) + "\n")
    write_text_atomic(config_path, labelling_config(sample.policy_name))
    return task_path, config_path


# ------------------------------------------------------------------------------ the export back in


def annotator_name(annotation: dict[str, Any]) -> str:
    """A file-safe reviewer name for the annotator: the e-mail's local part when the export has it,
    else `labelstudio-<user id>`."""

    who = annotation.get("completed_by")
    email = who.get("email") if isinstance(who, dict) else None
    if isinstance(email, str) and email:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", email.split("@")[0]).strip("._-")
        if name:
            return check_reviewer(name[:64])
    uid = who.get("id") if isinstance(who, dict) else who
    return check_reviewer(f"labelstudio-{uid if uid is not None else 'unknown'}")


def _answer(annotation: dict[str, Any], where: str, path: str) -> Answer:
    sides = {"chosen": "skip", "rejected": "skip"}
    notes: list[str] = []
    results = annotation.get("result")
    if not isinstance(results, list):
        raise InputError("expected a list of results", path=path, field=f"{where}.result")
    for k, r in enumerate(results):
        if not isinstance(r, dict):
            raise InputError("expected a result object", path=path, field=f"{where}.result[{k}]")
        value = r.get("value") if isinstance(r.get("value"), dict) else {}
        name = r.get("from_name")
        if r.get("type") == "choices" and name in CHOICES:
            chosen = value.get("choices")
            if not isinstance(chosen, list) or len(chosen) != 1 or chosen[0] not in ANSWERS:
                raise InputError(
                    f"expected one of {', '.join(ANSWERS)}, got {chosen!r}",
                    path=path,
                    field=f"{where}.result[{k}].value.choices",
                )
            sides[CHOICES[name]] = chosen[0]
        elif r.get("type") == "textarea" and name == NOTE:
            text = value.get("text")
            notes += [
                t for t in (text if isinstance(text, list) else [text]) if isinstance(t, str) and t.strip()
            ]
    at = str(annotation.get("updated_at") or annotation.get("created_at") or "")
    return Answer(sides["chosen"], sides["rejected"], "\n".join(notes).strip(), at)


def read_export(export: str | Path, sample: Sample) -> dict[str, dict[str, Answer]]:
    """The answers in a Label Studio JSON export, by annotator and pair id (see the module doc)."""

    path = str(export)
    doc = read_json(export)
    if not isinstance(doc, list):
        raise InputError("expected Label Studio's JSON export: a list of tasks", path=path)
    ids = {x.id for x in sample.items}
    out: dict[str, dict[str, Answer]] = {}
    for t, task in enumerate(doc):
        data = task.get("data") if isinstance(task, dict) else None
        pid = data.get("pair_id") if isinstance(data, dict) else None
        if pid not in ids:
            what = "missing" if pid is None else f"pair {pid} is not in this sample"
            raise InputError(what, path=path, field=f"[{t}].data.pair_id")
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise InputError("expected a list", path=path, field=f"[{t}].annotations")
        for a, annotation in enumerate(annotations):
            if not isinstance(annotation, dict):
                raise InputError("expected an annotation object", path=path, field=f"[{t}].annotations[{a}]")
            if annotation.get("was_cancelled"):
                continue
            answer = _answer(annotation, f"[{t}].annotations[{a}]", path)
            mine = out.setdefault(annotator_name(annotation), {})
            if pid not in mine or answer.at >= mine[pid].at:
                mine[pid] = answer
    return out


def import_export(export: str | Path, sample: Sample, out_dir: str | Path) -> dict[str, Path]:
    """Write each annotator's answers from a Label Studio export to `out_dir/<annotator>.jsonl`
    (joining those already there: the later answer to a pair wins); return the files by annotator."""
    written = {}
    for reviewer, answers in read_export(export, sample).items():
        store = LabelStore(out_dir, reviewer, sample)
        try:
            newer = {
                k: a for k, a in answers.items() if k not in store.answers or a.at >= store.answers[k].at
            }
            if newer:
                store.record(newer)
        finally:
            store.close()
        written[reviewer] = store.path
    return written
