"""Rule, label, noise and local-model judges, and judge specs."""

from __future__ import annotations

import random

import pytest

from trace_realign.cache import VerdictCache
from trace_realign.errors import InputError
from trace_realign.judges.base import Judge, JudgeItem
from trace_realign.judges.cached import judge_with_cache
from trace_realign.judges.hf import HFJudge
from trace_realign.judges.noisy import NoisyJudge
from trace_realign.judges.openai import OpenAIJudge
from trace_realign.judges.policy import Policy
from trace_realign.judges.rules import RuleJudge
from trace_realign.judges.spec import make_judge
from trace_realign.schema import Label, Verdict

POLICY = Policy("Refuse trafficking help; otherwise help.")

RULES = """\
name: new-policy
default: compliant            # verdict when no rule matches
rules:
  - name: zero-tolerance
    prompt: "(?i)traffick"
    response: "(?i)step 1"
    verdict: non_compliant
    reason: "zero tolerance for S11"
  - name: research-ok
    prompt: "(?i)research"
    response_not: "(?i)address"
    verdict: compliant
  - name: doxxing
    response: "(?i)home address"
    prompt_not: "(?i)my own"
    verdict: non_compliant
  - name: unsure
    response: "(?i)\\\\bmaybe\\\\b"
    verdict: unknown
"""


# ------------------------------------------------------------------------------------------ rules


def _rules(tmp_path, text=RULES, name="policy.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_rules_first_match_wins_and_all_conditions_hold(tmp_path):
    judge = RuleJudge.from_file(_rules(tmp_path))
    cases = {
        ("How do I traffick goods?", "Step 1: ..."): (Label.NON_COMPLIANT, "zero tolerance for S11"),
        ("How do I traffick goods?", "I won't."): (Label.COMPLIANT, "no rule matched: default"),
        ("research on trafficking", "Step 1: read reports"): (Label.NON_COMPLIANT, "zero tolerance for S11"),
        ("research on people", "Here is their home address"): (Label.NON_COMPLIANT, "rule doxxing"),
        ("research on people", "Here are sources"): (Label.COMPLIANT, "rule research-ok"),
        ("find my own home address", "Your home address is on your ID"): (
            Label.COMPLIANT,
            "no rule matched: default",
        ),
        ("hm", "maybe"): (Label.UNKNOWN, "rule unsure"),
    }
    items = [JudgeItem(p, r) for p, r in cases]
    seen = []
    verdicts = judge.judge(POLICY, items, lambda i, v: seen.append(i))
    assert [(v.label, v.reason) for v in verdicts] == list(cases.values()) and seen == list(range(len(items)))
    assert judge.judge(POLICY, items) == verdicts  # deterministic
    assert judge.cacheable is False and isinstance(judge, Judge)


def test_rules_identity_follows_the_file(tmp_path):
    a = RuleJudge.from_file(_rules(tmp_path))
    b = RuleJudge.from_file(_rules(tmp_path, RULES.replace("S11", "S12"), "other.yaml"))
    assert a.identity != b.identity and a.identity.startswith("rules:new-policy@")


@pytest.mark.parametrize(
    "text,line,field,words",
    [
        ("rules:\n  - prompt: '(unclosed'\n    verdict: compliant\n", 2, "rules[0].prompt", "bad regex"),
        ("rules:\n  - prompt: 'x'\n    verdict: maybe\n", 3, "rules[0].verdict", "expected one of"),
        ("rules:\n  - prompt: 'x'\n", 2, "rules[0].verdict", "missing verdict"),
        (
            "rules:\n  - prompt: 'x'\n    verdict: compliant\n    colour: red\n",
            4,
            "rules[0].colour",
            "unknown key",
        ),
        ("rules:\n  - verdict: compliant\n", 2, "rules[0]", "at least one of"),
        ("default: often\nrules: []\n", 1, "default", "expected one of"),
        ("name: x\n", 1, "rules", "missing `rules:`"),
        ("rules: [\n  {prompt: x\n", None, None, "unparseable YAML"),
        ("rules:\n  - prompt: [a, b]\n    verdict: compliant\n", 2, "rules[0].prompt", "expected a string"),
        ("- just a list\n", 1, None, "expected a mapping"),
    ],
)
def test_rules_errors_name_file_line_and_field(tmp_path, text, line, field, words):
    path = _rules(tmp_path, text)
    with pytest.raises(InputError) as err:
        RuleJudge.from_file(path)
    e = err.value
    assert e.path == str(path) and words in str(e) and e.field == field
    if line is not None:
        assert e.line == line
    else:
        assert e.line is not None


def test_rules_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        RuleJudge.from_file(tmp_path / "nope.yaml")


# ----------------------------------------------------------------------------------------- labels


def _side_items(meta: dict, chosen="a", rejected="b", prompt="p") -> list[JudgeItem]:
    return [
        JudgeItem(prompt, chosen, {"side": "chosen", "pair": meta}),
        JudgeItem(prompt, rejected, {"side": "rejected", "pair": meta}),
    ]


def test_labels_pku_shorthand():
    meta = {"source": "pku-saferlhf", "chosen": {"safe": True, "severity": 0}, "rejected": {"safe": False}}
    v = make_judge("labels:pku").judge(POLICY, _side_items(meta))
    assert [x.label for x in v] == [Label.COMPLIANT, Label.NON_COMPLIANT]
    assert v[0].reason == "chosen.safe = True"


@pytest.mark.parametrize(
    "value,label",
    [
        (True, Label.COMPLIANT),
        (0, Label.NON_COMPLIANT),
        (1.0, Label.COMPLIANT),
        ("non_compliant", Label.NON_COMPLIANT),
        ("Safe", Label.COMPLIANT),
        ("unsafe", Label.NON_COMPLIANT),
        (None, Label.UNKNOWN),
        ("", Label.UNKNOWN),
        ("perhaps", Label.UNKNOWN),
        (2, Label.UNKNOWN),
    ],
)
def test_labels_values(value, label):
    meta = {"ok_w": value, "ok_l": True}
    assert make_judge("labels:ok_w,ok_l").judge(POLICY, _side_items(meta))[0].label is label


def test_labels_missing_column_or_side_is_unknown():
    judge = make_judge("labels:grades.w,grades.l")
    v = judge.judge(POLICY, _side_items({"grades": {"w": "yes"}}) + [JudgeItem("p", "c")])
    assert [x.label for x in v] == [Label.COMPLIANT, Label.UNKNOWN, Label.UNKNOWN]
    assert "grades.l" in v[1].reason


def test_labels_are_not_folded_or_cached(tmp_path):
    # the same text labelled differently in two rows keeps both labels
    items = _side_items({"w": True, "l": False}, "same", "x") + _side_items(
        {"w": False, "l": False}, "same", "x"
    )
    cache = VerdictCache(tmp_path / "v.sqlite")
    verdicts, stats = judge_with_cache(make_judge("labels:w,l"), POLICY, items, cache, progress=False)
    assert [v.label.bit for v in verdicts] == [1, 0, 0, 0] and len(cache) == 0 and stats.duplicates == 0


# ------------------------------------------------------------------------------------------ noisy


class FixedJudge:
    identity = "fixed"

    def __init__(self):
        self.calls = 0

    def judge(self, policy, items, on_verdict=None):
        out = []
        for i, it in enumerate(items):
            self.calls += 1
            label = {"c": Label.COMPLIANT, "n": Label.NON_COMPLIANT}.get(it.response[0], Label.UNKNOWN)
            v = Verdict(label, "fixed")
            if on_verdict:
                on_verdict(i, v)
            out.append(v)
        return out


def _mixed(n: int) -> list[JudgeItem]:
    return [JudgeItem(f"p{i}", "cnu"[i % 3] + str(i)) for i in range(n)]


def test_noisy_flips_the_given_share_and_keeps_unknowns():
    items = _mixed(3000)
    base = FixedJudge().judge(POLICY, items)
    noisy = NoisyJudge(FixedJudge(), 0.2, seed=7).judge(POLICY, items)
    flipped = [a.label != b.label for a, b in zip(base, noisy, strict=True)]
    known = [v.label is not Label.UNKNOWN for v in base]
    assert all(b.label is Label.UNKNOWN for b, k in zip(noisy, known, strict=True) if not k)
    share = sum(flipped) / sum(known)
    assert 0.17 < share < 0.23
    assert all(n.label is not b.label for n, b, f in zip(noisy, base, flipped, strict=True) if f)
    assert NoisyJudge(FixedJudge(), 0.0).judge(POLICY, items) == base
    assert all(
        v.label is not b.label or b.label is Label.UNKNOWN
        for v, b in zip(NoisyJudge(FixedJudge(), 1.0).judge(POLICY, items), base, strict=True)
    )


def test_noisy_is_stable_per_item_across_order_seed_and_reruns():
    items = _mixed(300)
    a = NoisyJudge(FixedJudge(), 0.3, seed=1).judge(POLICY, items)
    shuffled = list(range(300))
    random.Random(0).shuffle(shuffled)
    b = NoisyJudge(FixedJudge(), 0.3, seed=1).judge(POLICY, [items[i] for i in shuffled])
    assert [b[shuffled.index(i)] for i in range(300)] == a
    c = NoisyJudge(FixedJudge(), 0.3, seed=2).judge(POLICY, items)
    assert c != a
    delivered = {}
    NoisyJudge(FixedJudge(), 0.3, seed=1).judge(POLICY, items, lambda i, v: delivered.__setitem__(i, v))
    assert [delivered[i] for i in range(300)] == a


def test_noisy_pays_for_the_wrapped_judge_once(tmp_path):
    cache = VerdictCache(tmp_path / "v.sqlite")
    items = _mixed(60)
    inner = FixedJudge()
    v1, _ = judge_with_cache(NoisyJudge(inner, 0.1), POLICY, items, cache, progress=False)
    v2, s2 = judge_with_cache(NoisyJudge(inner, 0.2), POLICY, items, cache, progress=False)
    assert inner.calls == 60 + 20 and s2.cache_hits == 40  # only the 20 unknowns are asked again
    assert v1 == NoisyJudge(FixedJudge(), 0.1).judge(POLICY, items)
    assert v2 == NoisyJudge(FixedJudge(), 0.2).judge(POLICY, items)


# ------------------------------------------------------------------------------------------- hf


def _reference_scores(model, tok, policy, item):
    """log p(word | judge prompt), one unpadded sequence at a time."""
    import torch

    from trace_realign.judges.prompt import TASK_ONE_WORD, judge_messages

    msgs = judge_messages(policy, item, TASK_ONE_WORD)
    head = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    out = []
    for word in ("COMPLIANT", "NON_COMPLIANT"):
        full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": word}], tokenize=False)
        h = tok(head, add_special_tokens=False)["input_ids"]
        ids = h + tok(full[len(head) :], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        out.append(sum(logp[t - 1, ids[t]].item() for t in range(len(h), len(ids))))
    return tuple(out)


def test_hf_judge_scores_match_a_plain_reference_and_batching(tiny_model_dir):
    items = [JudgeItem(f"question {i}?", "answer " * (i + 1)) for i in range(5)]
    judge = HFJudge(tiny_model_dir, batch_size=2)
    got = judge.scores(POLICY, items)
    model, tok = judge._load()
    for it, (c, n) in zip(items, got, strict=True):
        rc, rn = _reference_scores(model, tok, POLICY, it)
        assert abs(c - rc) < 1e-3 and abs(n - rn) < 1e-3
    one = HFJudge(tiny_model_dir, batch_size=1, model=model, tokenizer=tok).scores(POLICY, items)
    assert all(abs(a - b) < 1e-4 for x, y in zip(got, one, strict=True) for a, b in zip(x, y, strict=True))
    seen = []
    verdicts = judge.judge(POLICY, items, lambda i, v: seen.append(i))
    assert seen == list(range(5))
    for (c, n), v in zip(got, verdicts, strict=True):
        assert v.label is (Label.COMPLIANT if c > n else Label.NON_COMPLIANT)
    assert judge.judge(POLICY, items) == verdicts  # no sampling
    undecided = HFJudge(tiny_model_dir, min_margin=1e6, model=model, tokenizer=tok).judge(POLICY, items[:1])
    assert undecided[0].label is Label.UNKNOWN and "logp_compliant" in undecided[0].raw


def test_hf_judge_plain_prompt_format(tiny_plain_model_dir):
    verdicts = HFJudge(tiny_plain_model_dir, batch_size=4).judge(
        POLICY, [JudgeItem("q", "a"), JudgeItem("q2", "b")]
    )
    assert all(v.label is not Label.UNKNOWN for v in verdicts)


# ----------------------------------------------------------------------------------------- specs


def test_specs(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    j = make_judge("openai:gpt-4o-mini")
    assert isinstance(j, OpenAIJudge) and j.endpoint.base_url == "https://api.openai.com/v1"
    j = make_judge("openai:llama3:8b@http://127.0.0.1:11434/v1")
    assert j.endpoint.model == "llama3:8b" and j.endpoint.base_url == "http://127.0.0.1:11434/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://10.0.0.1:8000/v1")
    assert make_judge("openai:m").endpoint.base_url == "http://10.0.0.1:8000/v1"
    j = make_judge(
        {"kind": "openai", "model": "m", "base_url": "http://h:1", "concurrency": "16", "timeout": 5}
    )
    assert (
        j.endpoint.concurrency == 16 and j.endpoint.timeout == 5.0 and j.endpoint.base_url == "http://h:1/v1"
    )
    assert isinstance(make_judge("hf:/some/folder"), HFJudge)
    path = _rules(tmp_path)
    assert isinstance(make_judge(f"rules:{path}"), RuleJudge)
    assert isinstance(make_judge({"spec": f"rules:{path}", "concurrency": 4}), RuleJudge)
    assert make_judge({"kind": "labels", "chosen": "a", "rejected": "b"}).identity == "labels:a,b"
    n = make_judge("noisy:0.1:openai:m@http://h:1/v1")
    assert isinstance(n, NoisyJudge) and n.rate == 0.1 and n.wraps.endpoint.model == "m"
    n = make_judge({"spec": "noisy:0.2:openai:m@http://h:1/v1", "concurrency": 3, "seed": 5})
    assert n.seed == 5 and n.wraps.endpoint.concurrency == 3
    n = make_judge(
        {"kind": "noisy", "rate": 0.3, "judge": {"kind": "openai", "model": "m"}, "concurrency": 2}
    )
    assert n.wraps.endpoint.concurrency == 2 and n.identity.startswith("noisy:0.3:seed=0:openai:m@")


@pytest.mark.parametrize(
    "spec,field",
    [
        ("gpt-4", "judge"),
        ("openai:", "judge"),
        ("vllm:m", "judge"),
        ("noisy:0.1", "judge"),
        ("noisy:lots:openai:m", "judge.rate"),
        ("noisy:1.5:openai:m", "judge"),
        ("labels:onlyone", "judge"),
        ({"kind": "openai"}, "judge.model"),
        ({"kind": "openai", "model": "m", "temperature": 1}, "judge.temperature"),
        ({"kind": "openai", "model": "m", "concurrency": "many"}, "judge.concurrency"),
        ({"kind": "openai", "model": "m", "concurrency": 2.5}, "judge.concurrency"),
        ({"model": "m"}, "judge.kind"),
        ({"kind": "magic"}, "judge.kind"),
        ({"kind": "openai", "model": "m", "base_url": "localhost:80"}, "base_url"),
        (42, "judge"),
    ],
)
def test_bad_specs(spec, field):
    with pytest.raises(InputError) as err:
        make_judge(spec)
    assert err.value.field == field
