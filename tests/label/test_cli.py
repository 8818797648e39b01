"""`trace-realign label` on bad input: one clear line and exit 2, before any page is served."""

from __future__ import annotations

import socket

from trace_realign.cli import main

from .conftest import POLICY


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("trace-realign label: error: ")
    return err[0]


def test_a_sample_larger_than_the_data_is_exit_2(triaged_file, tmp_path, capsys):
    argv = ["label", "--triaged", str(triaged_file), "--sample", "500", "--policy", str(POLICY)]
    assert main([*argv, "--reviewer", "alice", "--out", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert "field 'sample'" in line and "500" in line and "13 distinct pairs" in line


def test_a_malformed_disagreements_file_is_exit_2(tmp_path, capsys):
    bad = tmp_path / "disagreements.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "chosen": "c", "rejected": "r"}\n')
    argv = ["label", "--disagreements", str(bad), "--policy", str(POLICY), "--reviewer", "alice"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert f"{bad}:1: field 'category'" in line and "two judges" in line


def test_a_port_in_use_is_exit_2(triaged_file, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        argv = ["label", "--triaged", str(triaged_file), "--sample", "3", "--policy", str(POLICY)]
        code = main([*argv, "--reviewer", "alice", "--out", str(tmp_path), "--port", str(port)])
    assert code == 2
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0] and "another --port" in err[0]
    assert (tmp_path / "sample.json").exists()  # drawn before the port check: the rerun reuses it


def test_no_reviewer_and_no_terminal_is_exit_2(triaged_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    argv = ["label", "--triaged", str(triaged_file), "--sample", "3", "--policy", str(POLICY)]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert "pass --reviewer NAME" in one_error_line(capsys)
    assert main([*argv, "--out", str(tmp_path), "--reviewer", "../x"]) == 2
    assert "reviewer name" in one_error_line(capsys)
    assert main(["label", "--out", str(tmp_path / "empty"), "--reviewer", "alice"]) == 2
    assert "no sample" in one_error_line(capsys)
    assert main([*argv, "--out", str(tmp_path), "--reviewer", "alice", "--port", "70000"]) == 2
    assert "0-65535" in one_error_line(capsys)
