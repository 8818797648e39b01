"""The report on a fake-but-well-formed run directory: every section, plots inlined, text escaped,
missing parts noted; and (slow) the page rendered in headless Chromium with every image loaded."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from trace_realign.cli import main
from trace_realign.evaluate.metrics import (
    agreement_by_group,
    attack_success_rate,
    target_policy_agreement,
    utility_summary,
)
from trace_realign.report import build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script> & <b>bold</b>"


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in obj))
    else:
        path.write_text(json.dumps(obj))


def eval_dir(folder: Path, labels: dict[str, str], asr_labels: list[str], mc: float) -> None:
    """responses.jsonl and metrics.json as `evaluate_model` writes them, from hand-made verdicts."""
    prompts = {"i1": "INVERT", "i2": "INVERT", "p1": "PUNISH", "r1": "RETAIN", "r2": "RETAIN", "r3": "RETAIN"}
    rows = [
        {
            "id": pid,
            "prompt": f"prompt {pid}",
            "category": cat,
            "harmful": cat == "PUNISH",
            "attack": None,
            "harm_category": "S6" if cat == "PUNISH" else None,
            "response": f"{folder.name} answers {pid}" + (f" {EVIL}" if pid == "i1" else ""),
            "label": labels[pid],
            "reason": "",
        }
        for pid, cat in prompts.items()
    ]
    rows += [
        {"id": f"p1:{a}", "prompt": "wrapped", "attack": a, "response": "x", "label": lab, "source_id": "p1"}
        for a, lab in zip(["fictional_scenario", "refusal_suppression"], asr_labels, strict=True)
    ]
    plain = [r for r in rows if r["attack"] is None]
    metrics = {
        "name": folder.name,
        "model": f"local:{folder.name}",
        "policy": {"name": "new", "hash": "abc"},
        "judge": "rules:test",
        "n_prompts": len(plain),
        "tpa": target_policy_agreement([r["label"] for r in plain], [r["category"] for r in plain]),
        "tpa_by_harm_category": agreement_by_group(
            [r["label"] for r in plain], [r.get("harm_category") for r in plain]
        ),
        "stress": {
            "overall": attack_success_rate(asr_labels),
            "by_attack": {
                "fictional_scenario": attack_success_rate(asr_labels[:1]),
                "refusal_suppression": attack_success_rate(asr_labels[1:]),
            },
        },
        "utility": utility_summary({"rate": mc}, {"perplexity": 12.5}),
        "win_rate": {},
        "unknown_verdicts": sum(r["label"] == "unknown" for r in rows),
    }
    write(folder / "responses.jsonl", rows)
    write(folder / "metrics.json", metrics)


@pytest.fixture()
def run_dir(tmp_path):
    run = tmp_path / "run"
    write(
        run / "triage" / "summary.json",
        {
            "policy": {"name": "new", "hash": "abc"},
            "judge": "rules:new",
            "pairs": 10,
            "counts": {"INVERT": 4, "PUNISH": 2, "RETAIN": 3, "UNKNOWN": 1},
            "shares": {"INVERT": 0.4, "PUNISH": 0.2, "RETAIN": 0.3, "UNKNOWN": 0.1},
            "harm_categories": {
                "S5": {
                    "name": "intellectual property",
                    "pairs": 5,
                    "INVERT": 4,
                    "PUNISH": 0,
                    "RETAIN": 1,
                    "UNKNOWN": 0,
                    "changed_share": 0.8,
                },
                "S12": {
                    "name": "physical harm",
                    "pairs": 5,
                    "INVERT": 0,
                    "PUNISH": 2,
                    "RETAIN": 2,
                    "UNKNOWN": 1,
                    "changed_share": 0.4,
                },
            },
        },
    )
    weights = [0.0, 0.5, 1.2, 2.3, 0.9, 1.1]
    write(
        run / "score" / "weighted.jsonl",
        [
            {"id": f"c{i}", "category": "INVERT" if i < 4 else "PUNISH", "impact_weight": w}
            for i, w in enumerate(weights)
        ]
        + [{"id": "k", "category": "RETAIN", "impact_weight": None}],
    )
    write(
        run / "score" / "summary.json",
        {"mode": "exact", "normalisation": "mean", "normalisation_note": "mean weight 1"},
    )
    history = [
        {
            "step": s,
            "loss": 1.0 / s,
            "invert/loss": 0.7 / s,
            "punish/loss": 0.9 / s,
            "kl": 0.01 * s,
            "learning_rate": 1e-4,
        }
        for s in range(1, 6)
    ] + [{"step": 5, "train_loss": 0.4, "train_runtime": 3.0}]
    write(
        run / "train" / "trace" / "run_summary.json",
        {"method": "trace", "preference_loss": "sigmoid", "global_step": 5, "stop_reason": "max_steps 5",
         "final_metrics": {"train_loss": 0.4}, "log_history": history, "wall_time_s": 3.2},
    )  # fmt: skip
    eval_dir(run / "eval" / "M_ref", {"i1": "non_compliant", "i2": "non_compliant", "p1": "non_compliant", "r1": "compliant", "r2": "compliant", "r3": "unknown"}, ["non_compliant", "non_compliant"], 0.50)  # fmt: skip
    eval_dir(run / "eval" / "trace", {"i1": "compliant", "i2": "compliant", "p1": "compliant", "r1": "compliant", "r2": "non_compliant", "r3": "compliant"}, ["compliant", "non_compliant"], 0.48)  # fmt: skip
    return run


def images(html: str) -> list[bytes]:
    return [
        base64.b64decode(m)
        for m in re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)">', html)
    ]


def test_report_has_every_section_with_inline_plots(run_dir):
    html_path, md_path = build_report([run_dir])
    assert html_path == run_dir / "report.html" and md_path == run_dir / "report.md"
    html = html_path.read_text()
    for heading in [
        "Methods side by side", "Triage breakdown", "By harm category: run", "Alignment impact weights",
        "Training", "Target policy agreement", "Adversarial stress", "Utility", "Win rates",
        "Example responses before and after",
    ]:  # fmt: skip
        assert f">{heading}" in html, heading
    pngs = images(html)
    # triage, harm, weights, training curves, agreement, stress
    assert len(pngs) == 6 and html.count("<img") == 6
    assert all(p.startswith(PNG_MAGIC) and len(p) > 2000 for p in pngs)
    # self-contained: nothing to fetch
    assert (
        not re.search(r'(src|href)="(?!data:)', html)
        and "http" not in html.split("<body>")[1].split("Generated")[0]
    )
    # untrusted text is escaped, never markup
    assert EVIL not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    # the numbers: trace 5 of 6 compliant; M_ref 2 of 5 known, its RETAIN 2 of 2 known (one unknown)
    # side by side, with each evaluation's Wilson intervals; no "not declined" in these older metrics
    ci = r" \[[0-9.]+, [0-9.]+\]</td>"
    side = (
        rf"<td>trace</td><td>83\.3%{ci}<td>100\.0%{ci}<td>100\.0%{ci}<td>66\.7%{ci}<td>n/a</td><td>50\.0%{ci}"
    )
    assert re.search(side, html)
    assert "<td>M_ref</td><td>40.0% [" in html and "<td>100.0% [34.2, 100.0]</td>" in html
    assert "Rates exclude unknown verdicts" in html
    # p1 (S6): M_ref non-compliant, trace compliant
    assert "<tr><td>S6 Violence</td><td>0.0% [0.0, 79.3]</td><td>100.0% [20.7, 100.0]</td></tr>" in html
    # examples: M_ref is "before", the changed prompts come first
    assert "before: M_ref" in html and "after: trace" in html
    assert "[non_compliant] M_ref answers i1" in html and "[compliant] trace answers i1" in html


def test_markdown_twin_links_existing_pngs(run_dir, tmp_path):
    out = tmp_path / "out"
    _, md_path = build_report([run_dir], out)
    md = md_path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 6
    for link in links:
        assert (out / link).read_bytes().startswith(PNG_MAGIC)
    assert re.search(r"\| trace \| 83\.3% \[[0-9.]+, [0-9.]+\] \| 100\.0% \[", md)
    assert "&lt;script&gt;" in md and "<script>" not in md
    assert "| S5 | intellectual property | 5 | 4 | 0 | 1 | 0 | 80% |" in md


def test_missing_parts_are_skipped_with_a_note(run_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(run_dir / "triage", partial / "triage")
    (partial / "triage" / "summary.json").unlink()  # rebuilt from triaged.jsonl instead
    write(
        partial / "triage" / "triaged.jsonl",
        [
            {"id": "a", "category": "INVERT", "meta": {"chosen": {"harm_categories": ["S9"]}}},
            {"id": "b", "category": "RETAIN", "meta": {}},
        ],
    )
    html = build_report([partial])[0].read_text()
    assert "no impact weights" in html and "no training runs" in html and "no evaluations" in html
    assert "No evaluations found" in html and "By harm category: partial" in html
    assert len(images(html)) == 2  # the triage bars and the harm-category bars


def test_a_bad_jsonl_line_is_skipped_with_a_note(tmp_path):
    from trace_realign.report.collect import read_run

    run = tmp_path / "run"
    (run / "triage").mkdir(parents=True)
    good = {"id": "a", "category": "INVERT", "meta": {}}
    (run / "triage" / "triaged.jsonl").write_text(
        json.dumps(good) + "\n{not json\n[1]\n" + json.dumps({**good, "id": "b"}) + "\n"
    )
    got = read_run(run)
    assert [n for n in got.notes if "unreadable line" in n] == [
        f"{run / 'triage' / 'triaged.jsonl'}:2: unreadable line, skipped",
        f"{run / 'triage' / 'triaged.jsonl'}:3: unreadable line, skipped",
    ]
    assert sum(got.triage["counts"].values()) == 2  # the rows around the bad lines are kept


def test_several_runs_and_an_evaluation_folder(run_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    html = build_report([run_dir, other, run_dir / "eval" / "trace"], tmp_path / "cmp")[0].read_text()
    assert "<td>run:trace</td>" in html and "<td>other:trace</td>" in html and "<td>trace</td>" in html


def test_cli(run_dir, tmp_path, capsys):
    assert main(["report", str(run_dir), "--out", str(tmp_path / "r"), "--examples", "2"]) == 0
    assert "report.html" in capsys.readouterr().out
    html = (tmp_path / "r" / "report.html").read_text()
    assert html.count("[compliant] trace answers") == 2
    assert main(["report", str(run_dir), "--out", str(tmp_path / "b"), "--before", "TRACE"]) == 0
    assert "before: trace" in (tmp_path / "b" / "report.html").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "missing: not a folder" in capsys.readouterr().err


CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
  const out = document.createElement('pre');
  out.id = 'img-check';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken, widths: imgs.map(i => i.naturalWidth)});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run_dir):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail(
            "chromium is not installed: `apt-get install -y chromium` (Debian), or `make setup` as root"
        )
    html_path, _ = build_report([run_dir])
    # the check runs on a copy, so the report itself stays free of scripts
    probe = html_path.with_name("probe.html")
    probe.write_text(html_path.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = re.search(r'<pre id="img-check">([^<]*)</pre>', dom)
    assert found, f"the check script did not run; DOM starts {dom[:300]!r}"
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["images"] == 6 and result["broken"] == 0
    assert all(w > 300 for w in result["widths"])
    artefacts = Path(__file__).resolve().parents[2] / "test-artifacts"
    artefacts.mkdir(exist_ok=True)
    shot = artefacts / "report.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [
            chromium,
            *flags,
            "--hide-scrollbars",
            "--window-size=1200,4000",
            f"--screenshot={shot}",
            html_path.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes().startswith(PNG_MAGIC)


def test_no_harmful_prompts_means_no_stress_plot(run_dir):
    for name in ("M_ref", "trace"):
        path = run_dir / "eval" / name / "metrics.json"
        m = json.loads(path.read_text())
        m["stress"] = {
            "overall": attack_success_rate([]),
            "by_attack": {"fictional_scenario": attack_success_rate([])},
        }
        path.write_text(json.dumps(m))
    html = build_report([run_dir])[0].read_text()
    assert "no prompt is marked harmful" in html and len(images(html)) == 5
    assert not (run_dir / "report_assets" / "stress.png").exists()


def test_comparison_over_seeds_paired_tests_and_tradeoff_are_rendered(run_dir):
    from trace_realign.evaluate.compare import compare_evaluations

    comparison = compare_evaluations(
        {"M_ref": [run_dir / "eval" / "M_ref"], "trace": [run_dir / "eval" / "trace"]},
        reference="trace",
        resamples=500,
    )
    write(run_dir / "comparison.json", comparison)
    curve = [
        {"step": 0, "tpa": 0.4, "retain": 1.0, "asr": 1.0, "not_declined": 0.0},
        {"step": 3, "tpa": 0.6, "retain": 0.8, "asr": 0.5, "not_declined": 0.5},
        {"step": 5, "tpa": 0.83, "retain": 0.67, "asr": 0.5, "not_declined": 0.0},
    ]
    # a point with its counts gets its interval (5 of 6: Wilson [43.6, 97.0]); one without, the bare rate
    curve[2]["counts"] = {"tpa": [5, 6], "retain": [2, 3], "asr": [1, 2], "not_declined": [0, 4]}
    write(
        run_dir / "tradeoff.json", {"prompts": 6, "asr_definition": "operational", "curves": {"trace": curve}}
    )
    html_path, md_path = build_report([run_dir])
    html, md = html_path.read_text(), md_path.read_text()
    for heading in (
        "Comparison over training seeds (mean and 95% interval)",
        "trace against each model",
        "Trade-off over training steps",
    ):
        assert f">{heading}" in html and f"## {heading}" in md.replace("### ", "## ")
    # every cell a mean with its interval: trace 5 of 6 compliant, M_ref 2 of 5 known
    assert re.search(r"<td>trace</td><td>1</td><td>83\.3 \[[0-9.]+, [0-9.]+\]</td>", html)
    assert re.search(r"<td>M_ref</td><td>1</td><td>40\.0 \[[0-9.]+, [0-9.]+\]</td>", html)
    # trace minus M_ref on agreement: +43.3 points (each over its known prompts). Over seeds there is no
    # test (one seed of a trained model); prompt by prompt, over the 5 prompts both answered, +40.0, and
    # McNemar counts i1, i2, p1 (trace only) and r2 (M_ref only)
    row = re.search(
        r"<td>M_ref</td><td>agreement</td><td>\+43\.3</td><td>n/a \(needs 2 or more training seeds of each "
        r"trained model\)</td><td>n/a</td><td>1 / 1</td><td>\+40\.0 \[[-+0-9., ]+\]</td><td>3 / 1</td>",
        html,
    )
    assert row, "test row"
    # three trade-off plots (attack success, not declined, RETAIN) on top of the six other figures
    assert len(images(html)) == 9
    assert "| trace | 3 | 60.0 | 80.0 | 50.0 | 50.0 |" in md
    # agreement and RETAIN (one row per prompt) get Wilson intervals; not declined and ASR (a prompt
    # once per wrapper) their counts
    assert "| trace | 5 | 83.0 [43.6, 97.0] | 67.0 [20.8, 93.9] | 0.0 (0/4) | 50.0 (1/2) |" in md
    assert "95% Wilson intervals over the checkpoint's prompts" in md
