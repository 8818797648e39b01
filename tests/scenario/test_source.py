"""Scenario folders: the packaged ones load, the docs' minimal example is a working third scenario,
and a bad folder fails with one line naming the file and the field."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from trace_realign.errors import InputError
from trace_realign.scenario.generate import ScenarioConfig, build_scenario
from trace_realign.scenario.source import DATA_DIR, load_scenario, packaged_scenarios

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios.md"
QUICK = ScenarioConfig(n_pairs=24, n_validation=4, n_heldout=8)


@pytest.fixture()
def example(tmp_path) -> Path:
    """The minimal example of docs/scenarios.md, written out from the page's `file=NAME` blocks."""
    folder = tmp_path / "money"
    folder.mkdir()
    blocks = re.findall(r"```\w+ file=(\S+)\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 8
    for name, text in blocks:
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_the_packaged_scenarios_load_and_the_default_is_where_it_was():
    assert packaged_scenarios() == ["embedded", "values"]
    embedded, values = load_scenario(), load_scenario("values")
    assert embedded.is_default and embedded.folder == DATA_DIR and not values.is_default
    assert embedded.files["new_rules"] == DATA_DIR / "new_rules.yaml"
    assert values.files["new_rules"] == DATA_DIR / "values" / "new_rules.yaml"
    assert list(embedded.kinds) == list(values.kinds) == ["invert", "punish", "malicious", "neutral"]
    assert ScenarioConfig().fingerprint(values) != ScenarioConfig().fingerprint(embedded)
    with pytest.raises(InputError, match="field 'scenario': no such scenario: use one of embedded, values"):
        load_scenario("nope")


def test_the_docs_minimal_example_is_a_working_third_scenario(example):
    from trace_realign.evaluate.typed_judge import TypedJudge
    from trace_realign.judges.rules import RuleJudge
    from trace_realign.schema import Label

    source = load_scenario(example)
    assert source.name == "money" and not source.is_default
    scenario = build_scenario(QUICK, source)
    assert Counter(p.meta["kind"] for p in scenario.pairs) == {
        "invert": 8,
        "punish": 4,
        "malicious": 7,
        "neutral": 5,
    }
    judges = {w: RuleJudge.from_file(source.files[f"{w}_rules"]) for w in ("old", "new")}
    typed = TypedJudge.from_file(source.files["eval_judge"])
    for p in scenario.pairs:
        kind = source.kinds[p.meta["kind"]]
        c_w, c_l = (
            judges["new"].verdict(p.prompt, r).label is Label.COMPLIANT for r in (p.chosen, p.rejected)
        )
        assert {(False, True): "INVERT", (False, False): "PUNISH"}.get(
            (c_w, c_l), "RETAIN"
        ) == kind.triage.value
        assert judges["old"].verdict(p.prompt, p.chosen).label is Label.COMPLIANT
        assert judges["old"].verdict(p.prompt, p.rejected).label is Label.NON_COMPLIANT
        meta = {
            "harmful": kind.harmful,
            "context": p.meta["context"],
            "harm_category": p.meta["harm_category"],
        }
        for side, want in kind.truth.items():
            assert typed.verdict(meta, getattr(p, side)).label is want, (side, p.to_dict())
    # and the manifest is in its fingerprint: a change to a kind is a change to the data
    before = QUICK.fingerprint(source)
    manifest = example / "scenario.yaml"
    manifest.write_text(manifest.read_text().replace("description: money", "description: Money"))
    assert QUICK.fingerprint(load_scenario(example)) != before


BAD = [
    # (file, old text, new text, error: file and field)
    ("attack_rules.yaml", None, None, r"attack_rules.yaml: field 'files.attack_rules': file not found"),
    ("scenario.yaml", "styles:", "colours: 1\nstyles:", r"scenario.yaml: field 'colours': unknown key"),
    ("scenario.yaml", "rejected: explained}", "rejected: explain}", r"scenario.yaml: field 'kinds.invert.rejected'"),
    ("scenario.yaml", "templates: refusals}", "templates: refusal}", r"scenario.yaml: field 'styles.refusal.templates'"),
    ("scenario.yaml", "request: tip,", "request: tips,", r"scenario.yaml: field 'kinds.punish.request'"),
    ("catalog.yaml", "the risk is that {risk}", "the risk is {risks}", r"catalog.yaml: field 'explained_answers': .*\{risks\}"),
    ("catalog.yaml", "  topics: [index funds,", "  topic: [index funds,", r"catalog.yaml: field 'categories\[0\].topics'"),
    ("catalog.yaml", "exceptions: {investing: [saver]}", "exceptions: {investing: [savers]}",
     r"catalog.yaml: field 'exceptions.investing': context 'savers'"),
    ("catalog.yaml", "answer: 1}", "answer: 4}", r"catalog.yaml: field 'multiple_choice\[0\].answer'"),
    ("catalog.yaml", "malicious_cues:", "malicious_cue:", r"catalog.yaml: field 'malicious_cues': missing \(kind malicious"),
    ("new_rules.yaml", "'\\[REDACTED'", "'[REDACTED'", r"new_rules.yaml:3: field 'rules\[0\].response': bad regex"),
    ("eval_judge.yaml", "  sources: ", "  source: ", r"eval_judge.yaml: field 'elements'"),
    ("new_policy.md", "# New policy", "", None),  # still text: only an empty policy is refused
]  # fmt: skip


@pytest.mark.parametrize("name,old,new,error", BAD, ids=[f"{b[0]}:{b[3] or 'ok'}"[:60] for b in BAD])
def test_a_bad_folder_fails_naming_the_file_and_the_field(example, name, old, new, error):
    path = example / name
    if old is None:
        path.unlink()
    else:
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new, 1))
    if error is None:
        load_scenario(example)
        path.write_text("  \n")
        error = r"new_policy.md: field 'files.new_policy': the policy text is empty"
    with pytest.raises(InputError, match=error) as exc:
        load_scenario(example)
    assert str(exc.value).startswith(str(example / name)) and "\n" not in str(exc.value)


def test_the_mix_must_name_the_scenarios_kinds(example):
    with pytest.raises(InputError, match="field 'kinds': the mix names the kinds a, b"):
        build_scenario(ScenarioConfig(mix={"a": 0.5, "b": 0.5}), load_scenario(example))


def test_a_settings_line_names_a_file_of_the_folder_and_shapes_no_pair(example):
    before = QUICK.fingerprint(load_scenario(example))
    manifest = example / "scenario.yaml"
    text = manifest.read_text()
    manifest.write_text(text + "settings: tuned.yaml\n")
    with pytest.raises(InputError, match=r"tuned.yaml: field 'settings': file not found") as exc:
        load_scenario(example)
    assert "\n" not in str(exc.value)
    (example / "tuned.yaml").write_text("sizes: {quick: {train_steps: 3}}\n")
    source = load_scenario(example)
    assert source.settings == example / "tuned.yaml"
    assert QUICK.fingerprint(source) == before  # the line is not hashed: no pair, no M_ref rebuilt
    assert load_scenario().settings is None
    # only the top-level line is left out: a change anywhere else is a change to the data
    manifest.write_text(text.replace("styles:", "styles:\n  # settings: x", 1) + "settings: tuned.yaml\n")
    assert QUICK.fingerprint(load_scenario(example)) != before


@pytest.mark.parametrize("value", ["3", "''", "../outside.yaml", "[tuned.yaml]"])
def test_a_settings_line_must_name_a_file_inside_the_folder(example, value):
    (example.parent / "outside.yaml").write_text("sizes: {}\n")
    manifest = example / "scenario.yaml"
    manifest.write_text(manifest.read_text() + f"settings: {value}\n")
    with pytest.raises(InputError, match=r"scenario.yaml: field 'settings': expected the name of a file"):
        load_scenario(example)


def test_the_values_settings_line_left_its_fingerprint_as_it_was():
    # the fingerprint of the values runs made before the manifest named its settings (issue 23)
    assert ScenarioConfig().fingerprint(load_scenario("values")) == "f84a22ec753f7032"
