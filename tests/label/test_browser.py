"""The review page in a real browser: headless Chromium (Debian's, driven by Playwright) labels three
pairs with the keyboard while the server is killed with SIGKILL mid-way and restarted; the labels file
must hold exactly the answers given, and `audit` on it must report the accuracy those answers imply."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trace_realign.cli import main

from .conftest import JUDGE, POLICY, SCRIPT

ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def start_server(argv: list[str]) -> tuple[subprocess.Popen, str]:
    """`trace-realign label ...` as its own process; returns it and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trace_realign.cli", "label", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("open http://"):
            return proc, line.split()[1]
    proc.kill()
    pytest.fail(f"the label server did not start: {proc.stderr.read()}")


def last_turn(item: dict) -> str:
    return item["prompt"] if isinstance(item["prompt"], str) else item["prompt"][-1]["content"]


def labels(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_label_three_pairs_by_keyboard_through_a_server_kill(triaged_file, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail(
            "chromium is not installed: `apt-get install -y chromium` (Debian), or `make test` as root"
        )
    from playwright.sync_api import expect, sync_playwright

    out = tmp_path / "labels"
    argv = ["--triaged", str(triaged_file), "--sample", "13", "--seed", "0", "--policy", str(POLICY),
            "--reviewer", "alice", "--out", str(out), "--judge", JUDGE]  # fmt: skip
    server, url = start_server([*argv, "--port", "0"])
    port = url.rsplit(":", 1)[1].strip("/")
    items = json.loads((out / "sample.json").read_text())["items"]
    judge = {row["id"]: row for row in map(json.loads, triaged_file.read_text().splitlines())}
    labels_file = out / "alice.jsonl"

    def key(side: str, verdict_bit: int) -> str:
        """The shortcut for complies (1) / violates (0) on response A (chosen) or B (rejected)."""
        return {"chosen": "12", "rejected": "qw"}[side][0 if verdict_bit == 1 else 1]

    # the answers: pair 1 agrees with the judge on A and not on B (a note too), pair 2 agrees on
    # both, pair 3 agrees on A and skips B: 5 labelled items, 4 the judge got right
    first, second, third = (judge[x["id"]] for x in items[:3])
    dialogs: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url)
            expect(page).to_have_url(f"{url}item/1")
            expect(page.locator("#progress")).to_contain_text("0 / 13")

            page.keyboard.press(key("chosen", first["c_w"]))
            page.keyboard.press(key("rejected", 1 - first["c_l"]))
            page.keyboard.press("m")
            page.keyboard.type("the refusal is the problem")
            page.keyboard.press("Escape")
            page.keyboard.press("Enter")
            expect(page).to_have_url(f"{url}item/2")
            assert [r["id"] for r in labels(labels_file)] == [items[0]["id"]]  # on disk before the next page

            page.keyboard.press(key("chosen", second["c_w"]))
            page.keyboard.press(key("rejected", second["c_l"]))
            page.keyboard.press("Enter")
            expect(page).to_have_url(f"{url}item/3")
            expect(page.locator("#progress")).to_contain_text("2 / 13")

            page.keyboard.press(key("chosen", 1 - third["c_w"]))  # being typed when the server dies
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=30)
            assert [r["id"] for r in labels(labels_file)] == [items[0]["id"], items[1]["id"]]

            server, url = start_server([*argv, "--port", port])  # the same command, the same port
            page.goto(url)
            expect(page).to_have_url(f"{url}item/3")  # resumes at the first unanswered pair
            expect(page.locator(".prompt")).to_contain_text(last_turn(items[2]))
            expect(page.locator('input[name="chosen"]:checked')).to_have_count(
                0
            )  # the lost answer is not there

            page.keyboard.press("p")  # back to pair 2: its answer is shown
            expect(page).to_have_url(f"{url}item/2")
            expect(page.locator('input[name="chosen"]:checked')).to_have_value(
                "complies" if second["c_w"] else "violates"
            )
            page.keyboard.press("n")
            expect(page).to_have_url(f"{url}item/3")
            page.keyboard.press(key("chosen", third["c_w"]))
            page.keyboard.press("e")
            page.keyboard.press("Enter")
            expect(page).to_have_url(f"{url}item/4")

            # markup in the data shows as text in the browser and runs nothing
            n = next(i for i, x in enumerate(items, start=1) if SCRIPT in x["chosen"] + x["rejected"])
            page.goto(f"{url}item/{n}")
            expect(page.locator("#response-rejected .text")).to_contain_text(SCRIPT)
            expect(page.locator(".prompt")).to_contain_text("<b>footer</b>")
            page.keyboard.press("1")
            page.keyboard.press("q")
            ARTEFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTEFACTS / "label_page.png"))
            browser.close()
        assert dialogs == []
    finally:
        server.send_signal(signal.SIGINT)
        printed, _ = server.communicate(timeout=30)
    assert server.returncode == 0
    assert "3 of 13 pairs answered" in printed and "trace-realign audit --labelled" in printed

    rows = labels(labels_file)
    assert [r["id"] for r in rows] == [x["id"] for x in items[:3]]
    verdict = {1: "compliant", 0: "non_compliant"}
    assert (rows[0]["chosen_label"], rows[0]["rejected_label"]) == (
        verdict[first["c_w"]],
        verdict[1 - first["c_l"]],
    )
    assert rows[0]["note"] == "the refusal is the problem"
    assert (rows[1]["chosen_label"], rows[1]["rejected_label"]) == (
        verdict[second["c_w"]],
        verdict[second["c_l"]],
    )
    assert (rows[2]["side"], rows[2]["label"], rows[2]["skipped"]) == (
        "chosen",
        verdict[third["c_w"]],
        "rejected",
    )

    report = tmp_path / "audit.json"
    code = main(["audit", "--labelled", str(labels_file), "--policy", str(POLICY), "--judge", JUDGE,
                 "--no-cache", "--no-progress", "--out", str(report)])  # fmt: skip
    assert code == 0
    accuracy = json.loads(report.read_text())["accuracy"]
    assert (accuracy["k"], accuracy["n"]) == (4, 5)
    assert os.path.getsize(ARTEFACTS / "label_page.png") > 10_000
