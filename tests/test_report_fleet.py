"""The report's fleet page and rollout section, and the change record's rollout section, over a simulated rollout where a
release falls back to the CPU on one chip revision: the alarm fires in that revision's strata, the rollout halts at the
canary and rolls those devices back, and every block says the fleet is simulated."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from edgeproof.change_record import load_change_record, write_change_record
from edgeproof.cli import app
from edgeproof.report import build_report
from edgeproof.rollout import run_simulated
from report_browser import CHROMIUM, colour_count, ink_share, offline_page, screenshot

# the signed releases and the plan of the rollout tests: one source for what a valid rollout is
from test_rollout import FALLBACK_A2, _controller, _plan, releases  # noqa: F401 (releases is a fixture)

FAULTY_CHIP = "A2"


@pytest.fixture(scope="module")
def rollout(releases, tmp_path_factory):  # noqa: F811
    """A folder as a release engineer leaves it: the two BOMs, and under rollout/ the journal and the fleet store of a
    simulated rollout of a release that falls back to the CPU on chip revision A2; the report built over it."""
    out = tmp_path_factory.mktemp("fleet-report")
    ctl, fleet, waves = _controller(_plan(releases, out, faults=FALLBACK_A2), out / "rollout")
    ctl.start(waves, actor="test")
    state = run_simulated(ctl, fleet, step_h=1.0, max_h=80)
    labels = {d.device_id: d.labels for d in fleet.inventory()}
    fleet.close()
    assert state.phase == "halted", "the rollout this file reports on must halt; see tests/test_rollout.py"
    html = build_report(out, out / "report.html").read_text()
    return {"out": out, "state": state, "plan": ctl.plan, "labels": labels, "html": html}


def _section(html: str, section_id: str) -> str:
    return html.split(f'<section id="{section_id}">', 1)[1].split("</section>", 1)[0]


def _cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).replace("\u200b", "").strip() for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", row, re.S)]


def _matrix(block: str) -> dict[str, dict[str, str]]:
    """The strata × alarms verdict table of one cohort block: {stratum: {alarm: verdict}}."""
    table = block.split('<table class="strata">', 1)[1].split("</table>", 1)[0]
    rows = [_cells(r) for r in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    header, body = rows[0], rows[1:]
    return {r[0]: dict(zip(header[1:], r[1:])) for r in body}


def test_the_fleet_page_shows_the_firing_alarm_in_the_faulty_strata_only_and_says_it_is_simulated(rollout):
    fleet = _section(rollout["html"], "fleet")
    assert "SIMULATED FLEET" in fleet and 'class="badge b-simulated' in fleet
    canary = fleet.split('<h3 id="fleet-canary">', 1)[1].split("<h3 ", 1)[0]
    matrix = _matrix(canary)
    assert matrix and all(set(verdicts.values()) <= {"Pass", "Fail", "Inconclusive", "NoData"} for verdicts in matrix.values())
    firing = {stratum for stratum, verdicts in matrix.items() if verdicts["fallback_rate"] == "Fail"}
    assert firing and all(s.startswith(f"{FAULTY_CHIP} ×") for s in firing)
    assert not [s for s, verdicts in matrix.items() if "Fail" in verdicts.values() and not s.startswith(FAULTY_CHIP)]
    # the strata the controller halted on are the ones the page shows firing
    halted = {s for d in rollout["state"].decisions if d["outcome"] == "fail" for s in d["strata"]}
    assert firing == halted
    # the firing alarm's evidence: both sides' devices and samples, the interval and the threshold with its source
    evidence = canary.split("Evidence of every alarm that fires", 1)[1].split("</table>", 1)[0]
    rows = [_cells(r) for r in re.findall(r"<tr>(.*?)</tr>", evidence, re.S)][1:]
    fallback = [r for r in rows if r[1] == "fallback_rate"]
    assert {r[0] for r in fallback} == firing and all(r[2] == "Fail" for r in fallback)
    assert all(re.search(r"cohort: \d+ devices[\d,]+ inferencescontrol: \d+ devices[\d,]+ inferences", r[5]) for r in fallback)
    assert all(re.search(r"\[[\d.]+%, [\d.]+%\] at", r[3]) and r[4] == "2.000%" for r in fallback)
    assert "[rollback].max_fallback_frac" in canary and "rollback-stratum" in canary  # threshold source, playbook step
    # the time series: fallback and energy drift by chip revision, every trace named simulated
    assert 'id="plot-fleet-fallback-0"' in fleet and 'id="plot-fleet-energy-0"' in fleet
    assert json.dumps(f"{FAULTY_CHIP} · canary [simulated]") in fleet  # a trace name, as the plot's JSON spells it


def test_the_rollout_section_shows_the_waves_the_halt_and_the_verified_rollback(rollout):
    section = _section(rollout["html"], "rollout")
    state, plan, labels = rollout["state"], rollout["plan"], rollout["labels"]
    assert "SIMULATED ROLLOUT" in section
    waves = section.split("<h3>Waves</h3>", 1)[1].split("</table>", 1)[0]
    rows = [_cells(r) for r in re.findall(r"<tr>(.*?)</tr>", waves, re.S)][1:]
    assert [(r[0], r[4]) for r in rows[:2]] == [("0 internal", "pass"), ("1 canary", "fail")]
    assert [r[1] for r in rows] == [str(len(w)) for w in state.wave_devices]
    assert all(r[4] == "not reached" for r in rows[2:])
    rollbacks = section.split("<h3>Halts and rollbacks</h3>", 1)[1].split("</table>", 1)[0]
    (row,) = [_cells(r) for r in re.findall(r"<tr>(.*?)</tr>", rollbacks, re.S)][1:]
    assert row[1] == "halted at wave 1" and all(s.startswith(f"{FAULTY_CHIP} ×") for s in row[2].split(", "))
    assert row[3].startswith(str(len(state.rolled_back)))
    assert {labels[d]["chip_revision"] for d in state.rolled_back} == {FAULTY_CHIP}
    assert row[4].startswith("verified") and plan.known_good.model_sha256[:12] in row[4]
    # the gate that failed, with its evidence per stratum
    fail = section.split("wave 1 canary:", 1)[1]
    assert "by controller" in fail and "fallback_rate" in fail and "[rollback].max_fallback_frac" in fail


def test_the_change_record_carries_the_rollout(rollout):
    out, state, plan = rollout["out"], rollout["state"], rollout["plan"]
    markdown, record, written = write_change_record(
        out / "baseline.bom.json", out / "candidate.bom.json", "test", out / "records" / "change-record", rollout=out / "rollout"
    )
    section = markdown.split("## Rollout", 1)[1]
    assert "simulated fleet" in section and "**halted**" in section
    assert "| 1 canary |" in section and "| fail |" in section
    assert f"{len(state.rolled_back)} devices sent the known-good pair; verified" in section
    assert "fallback_rate in A2 ×" in section
    back = load_change_record(written[1])
    assert back.rollout is not None and back.rollout.journal == "../rollout/journal.jsonl"
    (rb,) = back.rollout.rollbacks
    assert rb.verified and set(rb.devices) == state.rolled_back and rb.reported_model_sha256 == plan.known_good.model_sha256


def test_cli_takes_the_store_and_journal_from_elsewhere_and_refuses_what_is_not_there(rollout, tmp_path):
    out = rollout["out"]
    records = tmp_path / "records"
    records.mkdir()
    shutil.copy(out / "candidate.bom.json", records)
    cli = CliRunner()
    done = cli.invoke(app, ["report", str(records), "--fleet", str(out / "rollout" / "fleet.duckdb"), "--rollout", str(out / "rollout")])
    assert done.exit_code == 0, done.output
    html = (records / "report.html").read_text()
    assert '<section id="fleet">' in html and '<section id="rollout">' in html
    assert str(out / "rollout" / "fleet.duckdb") in _section(html, "sources")
    for args, message in (
        (["--fleet", str(tmp_path / "none.duckdb")], "no such fleet store"),
        (["--fleet", str(records / "candidate.bom.json")], "cannot open the fleet store read-only"),
        (["--rollout", str(records)], "no rollout journal"),
    ):
        done = cli.invoke(app, ["report", str(records), "-o", str(tmp_path / "bad.html"), *args])
        assert done.exit_code == 2 and message in done.output and "Traceback" not in done.output, done.output
        assert len(done.output.strip().splitlines()) == 1 and not (tmp_path / "bad.html").exists()
    # a folder without a store or a journal has neither section (nothing is invented)
    plain = build_report(records, tmp_path / "plain.html").read_text()
    assert '<section id="fleet">' not in plain and '<section id="rollout">' not in plain


def test_the_fleet_page_renders_in_headless_chromium(rollout, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (the Makefile's test target installs it: apt-get install -y chromium)")
    with offline_page(rollout["out"] / "report.html", tmp_path) as page:
        rect = json.loads(
            page.evaluate(
                "JSON.stringify((() => { const s = document.getElementById('fleet'), r = s.getBoundingClientRect();"
                " return {top: r.top + scrollY, left: r.left, width: r.width, height: r.height,"
                " plots: s.querySelectorAll('div.plot').length,"
                " drawn: [...s.querySelectorAll('div.plot')].filter(d => d.querySelector('svg.main-svg')).length}; })())"
            )
        )
        png = screenshot(page, 0, int(rect["top"]), 1280, min(int(rect["height"]), 2400))
        errors = [e for e in page.events if e.get("method") == "Runtime.exceptionThrown"]
    (tmp_path / "fleet-page.png").write_bytes(png)
    assert page.drawn and not errors
    assert rect["plots"] >= 2 and rect["drawn"] == rect["plots"]
    whole = {"left": 0, "top": 0, "width": 1280, "height": min(int(rect["height"]), 2400)}
    assert ink_share(png, whole) > 0.05
    assert colour_count(png, (0xF3, 0xE8, 0xFB), whole) > 2000  # the simulated banner's background
    assert colour_count(png, (0xFD, 0xEC, 0xEA), whole) > 50  # Fail chips
