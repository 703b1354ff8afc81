"""HTML report: built by the CLI from a folder of real runs, opened in headless Chromium with the network off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import DIGITS_CONTRACT, run_cli
from edgeproof.cli import app
from edgeproof.errors import RecordError
from edgeproof.report import build_report, collect
from edgeproof.report._decision import MAX_SHOWN, primary_search
from report_browser import CHROMIUM, SCREEN, colour_count, colour_stats, decode_png, ink_share, open_offline

CHOSEN_GOLD = (0xD6, 0x9E, 0x2E)  # the pick's star (edgeproof.report._decision.ROLE_STYLE)

SECTION_IDS = (
    "decision",
    "verdicts",
    "latency",
    "pareto",
    "accuracy",
    "placement",
    "thermal",
    "telemetry",
    "gate",
    "bom",
    "change-record",
    "sources",
)


def _parallel(home: Path, *commands: tuple[tuple[str, ...], tuple[int, ...]]) -> None:
    """Run CLI commands side by side (they do not depend on each other); each must exit with one of its codes."""
    env = {**os.environ, "EDGEPROOF_HOME": str(home)}
    procs = [
        (
            args,
            ok,
            subprocess.Popen(
                [sys.executable, "-m", "edgeproof.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            ),
        )
        for args, ok in commands
    ]
    for args, ok, proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode in ok, f"edgeproof {' '.join(args)} exited {proc.returncode}: {err[-2000:]}"


# The test contract: fp32 only (optimize then builds one variant, not seven) and latency budgets roomy enough that a
# busy shared host does not make the gate refuse its own baseline; timings are not what this file tests.
_TEST_CONTRACT_LINES = {"precisions =": 'precisions = ["fp32"]', "p95_ms =": 'p95_ms = "50 ms"', "p99_ms =": 'p99_ms = "100 ms"'}


def _test_contract(folder: Path) -> Path:
    """A copy of the digits contract with its model and data beside it, changed as ``_TEST_CONTRACT_LINES`` says."""
    folder.mkdir(parents=True)
    for name in ("model.onnx", "dataset.py"):
        shutil.copy(DIGITS_CONTRACT.parent / name, folder / name)
    lines = DIGITS_CONTRACT.read_text().splitlines()
    for prefix, line in _TEST_CONTRACT_LINES.items():
        hits = [i for i, text in enumerate(lines) if text.startswith(prefix)]
        assert len(hits) == 1, f"the digits contract no longer has one line starting {prefix!r}"
        lines[hits[0]] = line
    path = folder / "edgeproof.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A folder like `make demo` leaves: profile, check, optimize, simulate (with a soak), gate, BOMs, signature, change record."""
    work = tmp_path_factory.mktemp("report")
    out, home, keys = work / "out", work / "home", work / "keys"
    contract = _test_contract(work / "contract")
    model, toml = str(contract.parent / "model.onnx"), str(contract)
    quick = ("--sessions", "2", "--samples", "60", "--time-budget", "5")
    # check, optimize and gate exit 1 on a contract failure, 3 when they cannot decide: a finding, not a crash
    done, finding = (0,), (0, 1, 3)
    # Measurements run one at a time (a gate refuses a baseline that misses its own contract on a crowded CPU).
    _parallel(home, (("profile", model, "--json", str(out / "host.profile.json"), *quick), done))
    _parallel(home, (("check", model, "--contract", toml, "--json", str(out / "host.run.json"), *quick), finding))
    _parallel(home, (("gate", "--contract", toml, "--measure", model, model, "--pairs", "2", "--out", str(out / "gate")), finding))
    _parallel(
        home,
        (
            (
                "optimize",
                model,
                "--contract",
                toml,
                "--threads",
                "1",
                "--opt-levels",
                "all",
                "--targets",
                "host,coral-usb-rpi5",
                "--sessions",
                "1",
                "--samples",
                "40",
                "--time-budget",
                "60",
                "--out",
                str(out / "optimize"),
            ),
            finding,
        ),
    )
    release, baseline = out / "bom" / "release.bom.json", out / "bom" / "baseline.bom.json"
    # The rest only reads files and simulates, so it may share the cores.
    _parallel(
        home,
        (
            (
                "simulate",
                model,
                "--target",
                "raspberry-pi-5",
                "--soak",
                "5m",
                "--ambient",
                "45",
                "--json",
                str(out / "sim" / "rpi5.soak.run.json"),
            ),
            done,
        ),
        (("simulate", model, "--target", "coral-usb-rpi5", "--precision", "int8", "--json", str(out / "sim" / "coral.run.json")), done),
        (("keygen", "-o", str(keys)), done),
        (
            (
                "telemetry",
                "burst",
                model,
                "--contract",
                toml,
                "--out",
                str(out / "telemetry" / "bench-0"),
                "--fallback",
                model,
                "--rows",
                "10",
            ),
            done,
        ),
        (
            (
                "bom",
                "build",
                "--run",
                str(out / "gate" / "candidate.run.json"),
                "--verdict",
                str(out / "host.run.verdict.json"),
                "--contract",
                toml,
                "--model",
                model,
                "-o",
                str(release),
            ),
            done,
        ),
        (
            ("bom", "build", "--run", str(out / "gate" / "baseline.run.json"), "--contract", toml, "--model", model, "-o", str(baseline)),
            done,
        ),
    )
    _parallel(
        home,
        (("bom", "sign", str(release), "--key", str(next(k for k in keys.glob("*.pem") if not k.name.endswith(".pub.pem")))), done),
        (
            (
                "change-record",
                "--from",
                str(baseline),
                "--to",
                str(release),
                "--why",
                "same model re-measured <script>alert(1)</script>",
                "-o",
                str(out / "change-record"),
            ),
            done,
        ),
    )
    result = run_cli("report", str(out), "-o", str(work / "report.html"), env={"EDGEPROOF_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    return {"out": out, "html": work / "report.html", "stdout": result.stdout, "work": work}


# --- tests ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_writes_one_self_contained_file_and_prints_its_path(demo):
    html = demo["html"].read_text()
    assert str(demo["html"].resolve()) in demo["stdout"].replace("\n", "")
    assert html.count("plotly.js v") == 1 and "Plotly.newPlot" in html
    # plotly.js itself mentions URLs (its logo link, map attributions); the page around it must fetch nothing
    start = html.index("plotly.js v")
    ours = html[:start] + html[html.index("</script>", start) :]
    for marker in ('src="http', "src='http", 'href="http', "@import", "url(http", "fonts.googleapis"):
        assert marker not in ours, marker
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.slow
def test_report_reads_every_record_kind_by_content(demo):
    inputs = collect(demo["out"])
    kinds = {kind for _, kind in inputs.read}
    assert kinds == {"run record", "contract verdict", "gate result", "search result", "CycloneDX BOM", "BOM signature", "change record"}
    assert not inputs.skipped, inputs.skipped
    html = demo["html"].read_text()
    # the soak is simulated, so its section and figures say so; the host has no power meter, so energy reads unavailable
    thermal = html.split('<section id="thermal">', 1)[1].split("</section>", 1)[0]
    assert "b-simulated" in thermal and "[simulated]" in thermal and "throttle trip" in thermal
    verdicts = html.split('<section id="verdicts">', 1)[1].split("</section>", 1)[0]
    energy_row = verdicts.split("budgets.energy_mj_per_inference", 1)[1].split("</tr>", 1)[0]
    assert "unavailable" in energy_row and "0 mJ" not in energy_row


@pytest.fixture(scope="module")
def seen(demo):
    """The demo report as headless Chromium shows it, network off: DOM facts, layout, screenshots (see ``open_offline``)."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (the Makefile's test target installs it: apt-get install -y chromium)")
    return open_offline(demo["html"], demo["work"])


@pytest.mark.slow
def test_report_renders_in_headless_chromium_offline(seen, demo):
    assert seen["errors"] == [], seen["errors"]
    assert all(url.startswith(("file:", "data:", "about:", "blob:")) for url in seen["requests"]), seen["requests"]
    assert seen["scripts_with_src"] == 0
    assert list(seen["sections"]) == list(SECTION_IDS)
    assert not any(seen["absent"].values()), seen["absent"]
    assert seen["drawn"] and seen["plots"] >= 8 and seen["svgs"] >= seen["plots"] and seen["plotly_plots"] == seen["plots"]
    assert seen["banner"].startswith("Release gate: ")
    assert seen["simulated_badges"] >= 5
    colours, ink = colour_stats(seen["png"])
    (demo["work"] / "report-top.png").write_bytes(seen["png"])
    assert colours > 50 and ink > 0.05, (colours, ink)


@pytest.mark.slow
def test_first_screen_shows_the_decision_not_every_candidate(seen, demo):
    """Looked at as pixels: a 1280×900 first screen holds the pick against fp32 and the front (table and plot) and the
    verdict per target; every plot a reader sees without opening a disclosure keeps a short legend."""
    shot = demo["work"] / "report-first-screen.png"
    shot.write_bytes(seen["first_screen"])
    width, height, _, _ = decode_png(seen["first_screen"])
    assert (width, height) == SCREEN
    rects = seen["rects"]
    assert all(rects[k] is not None for k in ("decision", "pick", "pick_table", "pick_plot", "verdicts", "toc")), rects
    bottom = {k: r["top"] + r["height"] for k, r in rects.items() if r is not None}
    assert rects["decision"]["top"] < 250 and bottom["pick_table"] <= height and bottom["pick_plot"] <= height, rects
    assert rects["verdicts"]["top"] + 60 <= height, "the first verdict row is below the first screen"
    assert rects["toc"]["top"] > rects["decision"]["top"], "the table of contents comes after the decision"
    # not blank: the page has drawn something, and the pick's table and plot are ink on the screen, not empty boxes
    colours, ink = colour_stats(seen["first_screen"])
    assert colours > 50 and ink > 0.05, (colours, ink)
    assert ink_share(seen["first_screen"], rects["pick_table"]) > 0.04, shot
    assert ink_share(seen["first_screen"], rects["pick_plot"]) > 0.02, shot
    search = primary_search(collect(demo["out"]))
    assert search is not None
    if any(o.selection.chosen is not None for o in search.item.outcomes):
        # the pick is drawn as the gold star and tagged in the table: its colour is on the first screen
        assert colour_count(seen["first_screen"], CHOSEN_GOLD, rects["pick_plot"]) > 20, shot
        assert "Chosen on " in seen["text"]
    else:
        assert "Could not decide on" in seen["text"] or "No candidate meets" in seen["text"]
    # every plot a reader sees without opening a disclosure: at most MAX_SHOWN lines, plus the contract's budget line
    open_plots = {pid: legend for pid, legend in seen["legends"].items() if not legend["closed"]}
    assert open_plots and all(legend["entries"] <= MAX_SHOWN + 1 for legend in open_plots.values()), open_plots
    assert any(legend["section"] == "accuracy" for legend in open_plots.values()), "the accuracy heatmap is not on the page"


@pytest.mark.slow
def test_absent_sections_say_so(tmp_path, demo):
    """A folder with a single profile run: every other section states it is absent, nothing is invented."""
    (tmp_path / "out").mkdir()
    shutil.copy(demo["out"] / "host.profile.json", tmp_path / "out" / "run.json")
    path = build_report(tmp_path / "out", tmp_path / "r.html")
    html = path.read_text()
    for section, words in (
        ("pareto", "No optimize run in this folder"),
        ("thermal", "No soak ran in this folder"),
        ("gate", "No gate ran in this folder"),
        ("verdicts", "No contract verdict in this folder"),
        ("bom", "No BOM in this folder"),
        ("change-record", "No change record in this folder"),
        ("accuracy", "No evaluation in this folder"),
        ("decision", "No search and no verdict in this folder"),
    ):
        body = html.split(f'<section id="{section}">', 1)[1].split("</section>", 1)[0]
        assert words in body and "Plotly.newPlot" not in body, section
    # one measured run on the CPU, nothing fell back: the placement is one sentence, not a chart
    assert 'id="plot-latency-cdf"' in html and 'id="plot-placement"' not in html
    placement = html.split('<section id="placement">', 1)[1].split("</section>", 1)[0]
    assert "placed every node on their primary provider" in placement and "nothing fell back" in placement
    assert "No verdict in this folder" in html


def test_bad_folder_is_one_line_exit_2(tmp_path):
    (tmp_path / "junk.json").write_text('{"schema_version": "edgeproof.run/1", "kind": "measured"}')
    (tmp_path / "notes.json").write_text("[1, 2]")
    with pytest.raises(RecordError, match="no edgeproof records found"):
        build_report(tmp_path, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such folder" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_unreadable_record_is_listed_not_fatal(tmp_path, demo):
    out = tmp_path / "out"
    shutil.copytree(demo["out"] / "gate", out)
    (out / "broken.run.json").write_text('{"schema_version": "edgeproof.run/1", "kind": "measured"}')
    html = build_report(out, tmp_path / "r.html").read_text()
    sources = html.split('<section id="sources">', 1)[1]
    assert "broken.run.json" in sources and "Not read" in sources


@pytest.mark.slow
def test_bom_changed_after_signing_is_flagged(tmp_path, demo):
    out = tmp_path / "out"
    shutil.copytree(demo["out"] / "bom", out)
    bom = out / "release.bom.json"
    doc = json.loads(bom.read_text())
    doc["metadata"]["component"]["name"] += "-edited"
    bom.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    section = build_report(out, tmp_path / "r.html").read_text().split('<section id="bom">', 1)[1].split("</section>", 1)[0]
    assert "the BOM changed after it was signed" in section
    assert section.count("the signature's digest is this BOM's bytes") == 0


def test_release_written_by_version_1_renders(tmp_path):
    """BOMs, a signature and a change record written before they were typed: the release sections still show them."""
    shutil.copytree(Path(__file__).parent / "data" / "release_v1", tmp_path / "out")
    inputs = collect(tmp_path / "out")
    assert not inputs.skipped, inputs.skipped
    assert {kind for _, kind in inputs.read} == {"CycloneDX BOM", "BOM signature", "change record"}
    html = build_report(tmp_path / "out", tmp_path / "r.html").read_text()
    bom = html.split('<section id="bom">', 1)[1].split("</section>", 1)[0]
    assert bom.count("the signature's digest is this BOM's bytes") == 1 and "Recipe: no recipe (the model as given)" in bom
    change = html.split('<section id="change-record">', 1)[1].split("</section>", 1)[0]
    assert "int8 to meet the energy budget" in change and "no recipe (the model as given)" in change
    assert "Rollback path" in change and "a.bom.json.sig" in change
    assert change.count('<span class="over">yes</span>') == 5  # the five figures the /1 record bolded
