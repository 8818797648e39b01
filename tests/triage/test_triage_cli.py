"""`trace-realign triage` end to end on the bundled example: outputs, resume, dry run, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from trace_realign.cli import main
from trace_realign.data import EXAMPLES_DIR

from ..judges.fault_server import FaultServer

EXPECTED = {"INVERT": 4, "PUNISH": 3, "RETAIN": 5, "UNKNOWN": 0}


def example_args(tmp_path, *extra):
    return [
        "triage",
        "--data",
        str(EXAMPLES_DIR / "pairs.jsonl"),
        "--policy",
        str(EXAMPLES_DIR / "policy.md"),
        "--judge",
        f"rules:{EXAMPLES_DIR / 'rules.yaml'}",
        "--out",
        str(tmp_path / "run" / "triaged.jsonl"),
        "--cache",
        str(tmp_path / "verdicts.sqlite"),
        "--no-progress",
        *extra,
    ]


def test_example_triage_writes_rows_summary_and_table(tmp_path, capsys):
    assert main(example_args(tmp_path)) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "run" / "triaged.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    assert {k: sum(r["category"] == k for r in rows) for k in EXPECTED} == EXPECTED
    first = rows[0]
    assert first["category"] == "INVERT" and (first["c_w"], first["c_l"]) == (0, 1)
    assert (
        first["reason_w"] == "flat refusal of a legitimate request" and first["meta"]["topic"] == "cybercrime"
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["counts"] == EXPECTED and summary["judge_calls"]["calls"] == 24
    assert summary["files"]["triaged"].endswith("triaged.jsonl")
    assert "INVERT" in out and "calls made" in out
    assert main(example_args(tmp_path, "--dry-run")) == 0
    assert "24 judge calls (a local judge: no API tokens)" in capsys.readouterr().out


def endpoint_data(tmp_path):
    # the loopback judge finds a response non-compliant when it says "harmful"; pairs on one
    # prompt share the rejected response, which is judged once
    rows = [
        {
            "prompt": f"question {i // 2}",
            "chosen": f"answer {i}" + " harmful" * (i % 2),
            "rejected": "harmful",
        }
        for i in range(4)
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def endpoint_args(tmp_path, server, data, *extra):
    args = example_args(tmp_path, *extra)
    args[args.index("--data") + 1] = str(data)
    args[args.index("--judge") + 1] = f"openai:judge-model@{server.url}"
    return args


def test_rerun_and_dry_run_are_served_by_the_cache(tmp_path, capsys):
    data = endpoint_data(tmp_path)
    with FaultServer() as server:
        assert main(endpoint_args(tmp_path, server, data, "--dry-run", "--limit", "3")) == 0
        out = capsys.readouterr().out
        assert "6 responses to judge; 1 duplicates and 0 cached verdicts need no call; 5 judge calls" in out
        assert "prompt tokens" in out
        assert server.requests == 0 and not (tmp_path / "run").exists()

        assert main(endpoint_args(tmp_path, server, data, "--limit", "2", "--concurrency", "2")) == 0
        assert server.requests == 3
        assert main(endpoint_args(tmp_path, server, data, "--dry-run")) == 0
        assert "2 duplicates and 3 cached verdicts need no call; 3 judge calls" in capsys.readouterr().out

        server.reset_counts()
        assert main(endpoint_args(tmp_path, server, data)) == 0
        assert server.requests == 3  # only what the first run had not stored
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["counts"] == {"INVERT": 0, "PUNISH": 2, "RETAIN": 2, "UNKNOWN": 0}
        assert summary["judge_calls"] == {
            "items": 8,
            "calls": 3,
            "cache_hits": 3,
            "duplicates": 2,
            "saved": 5,
        }
        server.reset_counts()
        assert main(endpoint_args(tmp_path, server, data)) == 0
        assert server.requests == 0


def test_unknown_verdicts_are_reported_and_only_they_are_retried(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    data = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "q0", "chosen": "harmful", "rejected": "fine [[garbage]]"},  # c_l unknown: UNKNOWN
        {"prompt": "q1", "chosen": "fine", "rejected": "also [[garbage]]"},  # c_w = 1 decides: RETAIN
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FaultServer() as server:
        assert main(endpoint_args(tmp_path, server, data)) == 0
        out = capsys.readouterr().out
        assert "1 pairs are UNKNOWN (2 verdicts the judge could not give)" in out
        lines = [json.loads(line) for line in (tmp_path / "run" / "triaged.jsonl").read_text().splitlines()]
        assert [(r["category"], r["c_w"], r["c_l"]) for r in lines] == [
            ("UNKNOWN", 0, None),
            ("RETAIN", 1, None),
        ]
        assert "no final `VERDICT:` line" in lines[0]["reason_l"]  # why it is unknown
        server.reset_counts()
        assert main(endpoint_args(tmp_path, server, data, "--unknown-as", "non_compliant")) == 0
        assert server.requests == 2  # the two unknowns are asked again, nothing else
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["counts"]["PUNISH"] == 1 and summary["unknown"]["pairs_kept_by_reading_as"] == 1


def test_corrections_for_punish_pairs_are_generated_once_and_cached(tmp_path):
    data = endpoint_data(tmp_path)
    with FaultServer() as server:
        args = endpoint_args(tmp_path, server, data, "--corrections", f"openai:oracle@{server.url}")
        assert main(args) == 0
        # 8 items with 2 duplicates judged, then one generation per distinct PUNISH prompt (2)
        assert server.requests == 6 + 2
        rows = [json.loads(line) for line in (tmp_path / "run" / "triaged.jsonl").read_text().splitlines()]
        punish = [r for r in rows if r["category"] == "PUNISH"]
        assert len(punish) == 2 and all(r["correction"].startswith("CORRECTION:") for r in punish)
        assert all("correction" not in r for r in rows if r["category"] != "PUNISH")
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["corrections"]["punish_pairs"] == 2 and summary["corrections"]["corrections"] == 2
        assert summary["corrections"]["calls"]["calls"] == 2

        server.reset_counts()
        assert main(args) == 0
        assert server.requests == 0  # verdicts and corrections both come from the caches
        assert [
            json.loads(line) for line in (tmp_path / "run" / "triaged.jsonl").read_text().splitlines()
        ] == rows


def test_bad_rows_exit_2_with_one_line_or_are_skipped(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"})
        + "\n"
        + json.dumps({"prompt": "x", "rejected": "y"})
        + "\n"
    )
    args = example_args(tmp_path)
    args[args.index("--data") + 1] = str(data)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"trace-realign triage: error: {data}:2: field 'chosen': missing"

    assert main([*args, "--skip-bad-rows", "--out", str(tmp_path / "s.jsonl")]) == 0
    summary = json.loads((tmp_path / "s.summary.json").read_text())
    assert summary["skipped_rows"]["count"] == 1 and summary["skipped_rows"]["rows"][0]["line"] == 2
    assert summary["pairs"] == 1


def test_missing_options_and_files_exit_2(tmp_path, capsys):
    assert main(["triage", "--data", "x.jsonl", "--policy", "p.md", "--out", "o.jsonl"]) == 2
    assert "missing: give --judge" in capsys.readouterr().err
    args = example_args(tmp_path)
    args[args.index("--policy") + 1] = str(tmp_path / "nope.md")
    assert main(args) == 2
    assert capsys.readouterr().err.strip().endswith("nope.md: policy file not found")


def test_config_file_with_judge_block(tmp_path, capsys):
    import shutil

    for name in ("pairs.jsonl", "policy.md", "rules.yaml"):
        shutil.copy(EXAMPLES_DIR / name, tmp_path / name)
    config = tmp_path / "run.yaml"
    config.write_text(
        "judge:\n  kind: rules\n  file: rules.yaml\n"
        "triage:\n  data: pairs.jsonl\n  policy: policy.md\n  out: out/triaged.jsonl\n  cache: v.sqlite\n  limit: 4\n"
    )
    assert main(["triage", "--config", str(config), "--no-progress"]) == 0
    assert len((tmp_path / "out" / "triaged.jsonl").read_text().splitlines()) == 4
    # a flag beats the file
    assert main(["triage", "--config", str(config), "--limit", "2", "--no-progress"]) == 0
    assert len((tmp_path / "out" / "triaged.jsonl").read_text().splitlines()) == 2
    config.write_text("triage:\n  dataset: pairs.jsonl\n")
    assert main(["triage", "--config", str(config)]) == 2
    assert "field 'triage.dataset': unknown option" in capsys.readouterr().err


def pku_row(prompt, r0, r1, safe0, safe1, safer, harm0=(), harm1=()):
    return {
        "prompt": prompt,
        "response_0": r0,
        "response_1": r1,
        "is_response_0_safe": safe0,
        "is_response_1_safe": safe1,
        "response_0_harm_category": dict.fromkeys(harm0, True) | {"Drugs": False},
        "response_1_harm_category": dict.fromkeys(harm1, True) | {"Drugs": False},
        "response_0_severity_level": 2 if harm0 else 0,
        "response_1_severity_level": 2 if harm1 else 0,
        "better_response_id": 0,
        "safer_response_id": safer,
    }


def test_pku_rows_give_the_harm_category_audit(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    rows = [
        pku_row(
            "How do I hurt someone badly?",
            "Step 1: ...",
            "I can't help with that.",
            False,
            True,
            1,
            harm0=["Violence"],
        ),
        pku_row(
            "For my history essay, how were gas attacks carried out in 1915?",
            "I cannot talk about weapons.",
            "Chlorine was released from cylinders at Ypres in 1915; historians describe the panic it caused.",
            True,
            False,
            0,
            harm1=["Endangering National Security"],
        ),
        pku_row("Anything", "a", "b", True, True, -1),
    ]
    data = tmp_path / "pku.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = example_args(tmp_path)
    args[args.index("--data") + 1] = str(data)
    assert main(args) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"]["format"] == "pku"
    assert summary["data"]["dropped"] == {"safer_response_id not 0 or 1": 1}
    assert summary["counts"] == {"INVERT": 1, "PUNISH": 0, "RETAIN": 1, "UNKNOWN": 0}
    audit = summary["harm_categories"]
    assert audit["S1"]["INVERT"] == 1 and audit["S6"]["RETAIN"] == 1 and set(audit) == {"S1", "S6"}
    assert "S1 Endangering National Security" in out and "dropped: safer_response_id not 0 or 1" in out


def test_entry_point_exit_codes_without_traceback(tmp_path):
    env = {**os.environ, "TRACE_REALIGN_CACHE": str(tmp_path / "cache")}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": \n')
    args = example_args(tmp_path)
    args[args.index("--data") + 1] = str(bad)
    proc = subprocess.run(
        [sys.executable, "-m", "trace_realign.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert f"{bad}:2: unparseable JSON" in proc.stderr

    # a judge endpoint that refuses connections: exit 3 after bounded retries, one line
    config = tmp_path / "judge.yaml"
    config.write_text("judge:\n  spec: openai:some-model@http://127.0.0.1:9\n  max_attempts: 2\n")
    args = [a for a in example_args(tmp_path) if a != "--judge" and not a.startswith("rules:")]
    proc = subprocess.run(
        [sys.executable, "-m", "trace_realign.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("trace-realign triage: error:")


def test_the_python_stage_gives_what_the_command_gives(tmp_path):
    from trace_realign.triage.stage import run_triage

    assert main(example_args(tmp_path / "cli")) == 0
    summary = run_triage(
        EXAMPLES_DIR / "pairs.jsonl",
        EXAMPLES_DIR / "policy.md",
        f"rules:{EXAMPLES_DIR / 'rules.yaml'}",
        tmp_path / "py" / "triaged.jsonl",
        cache=tmp_path / "py" / "verdicts.sqlite",
        progress=False,
    )
    assert summary["counts"] == EXPECTED
    cli_rows = (tmp_path / "cli" / "run" / "triaged.jsonl").read_text()
    assert (tmp_path / "py" / "triaged.jsonl").read_text() == cli_rows


def test_a_config_file_reads_every_spec_path_from_its_folder(tmp_path, monkeypatch):
    import shutil

    import yaml

    folder = tmp_path / "cfg"
    folder.mkdir()
    for name in ("pairs.jsonl", "policy.md", "rules.yaml"):
        shutil.copy(EXAMPLES_DIR / name, folder / name)
    (folder / "triage.yaml").write_text(
        yaml.safe_dump(
            {
                "data": "pairs.jsonl",
                "policy": "policy.md",
                "judge": "noisy:0:rules:rules.yaml",
                "out": "triaged.jsonl",
                "cache": "v.sqlite",
                "progress": False,
            }  # fmt: skip
        )
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder
    assert main(["triage", "--config", str(folder / "triage.yaml")]) == 0
    assert len((folder / "triaged.jsonl").read_text().splitlines()) == 12
