"""`make demo`: the main job on the bundled digits example (and briefly the glyphs example), each step a real edgeproof command.

Each step runs in a process of its own, as a user's command would, but forked from this one after
the command line was imported once: a fresh interpreter per step spent 2–6 s of this 2-core host's
time importing onnx, scipy and the rest before doing anything (17 steps). Where ``fork`` is not
available each step is a new interpreter.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

from edgeproof.outcome import EXIT_FAIL, EXIT_PASS, EXIT_UNDECIDED

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "digits"
GLYPHS = ROOT / "examples" / "glyphs"
# A judging command's verdict, whichever it is, is a finding the demo reports and goes on from.
JUDGED = (EXIT_PASS, EXIT_FAIL, EXIT_UNDECIDED)


def steps(out: Path) -> list[tuple[str, list[str], tuple[int, ...]]]:
    """(title, argv, exit codes that let the demo go on). A verdict of 1 or 3 is a finding, not a crash.
    The signing key of an earlier demo run is kept (keygen never overwrites a key)."""
    model = str(EXAMPLE / "model.onnx")
    contract = str(EXAMPLE / "edgeproof.toml")
    chosen = str(out / "optimize" / "chosen-host.onnx")
    glyphs_model, glyphs_contract = str(GLYPHS / "model.onnx"), str(GLYPHS / "edgeproof.toml")
    return [
        ("Is this host fit to measure on?", ["doctor"], (0, 1)),
        (
            "Profile the fp32 model and check it against its contract",
            ["check", model, "--contract", contract, "--json", str(out / "host.run.json")],
            JUDGED,
        ),
        (
            "Search variants for the best contract-feasible candidate",
            ["optimize", model, "--contract", contract, "--out", str(out / "optimize"), "--json", str(out / "optimize" / "search.json")],
            JUDGED,
        ),
        ("Which boards can run it, and what falls back to the CPU (simulated)", ["compat", model, "--targets", "all"], (0,)),
        (
            "Simulate a 10-minute soak on a passively cooled board at 45 °C (simulated)",
            [
                "simulate",
                model,
                "--target",
                "raspberry-pi-5",
                "--soak",
                "10m",
                "--ambient",
                "45",
                "--json",
                str(out / "sim" / "raspberry-pi-5.soak.run.json"),
            ],
            (0,),
        ),
        (
            "Simulate the model on Jetson Orin Nano in its 7 W mode (simulated)",
            [
                "simulate",
                model,
                "--target",
                "jetson-orin-nano",
                "--power-mode",
                "7W",
                "--json",
                str(out / "sim" / "jetson-orin-nano.run.json"),
            ],
            (0,),
        ),
        (
            "Check the chosen variant against the contract on Jetson Orin Nano (simulated)",
            [
                "check",
                chosen,
                "--contract",
                contract,
                "--target",
                "jetson-orin-nano",
                "--json",
                str(out / "sim" / "jetson-orin-nano.check.json"),
            ],
            JUDGED,
        ),
        (
            "Gate the chosen variant against the fp32 baseline, interleaved",
            ["gate", "--contract", contract, "--measure", model, chosen, "--out", str(out / "gate")],
            JUDGED,
        ),
        *([] if (out / "keys" / "edgeproof-ed25519.pem").exists() else [("Make a signing key", ["keygen", "-o", str(out / "keys")], (0,))]),
        (
            "Build the inference bill of materials for the release",
            [
                "bom",
                "build",
                "--run",
                str(out / "gate" / "candidate.run.json"),
                "--verdict",
                str(out / "gate" / "gate.json"),
                "--contract",
                contract,
                "--model",
                chosen,
                "-o",
                str(out / "bom" / "release.bom.json"),
            ],
            (0,),
        ),
        (
            "Build the BOM of the fp32 baseline (the rollback path)",
            [
                "bom",
                "build",
                "--run",
                str(out / "gate" / "baseline.run.json"),
                "--contract",
                contract,
                "--model",
                model,
                "-o",
                str(out / "bom" / "baseline.bom.json"),
            ],
            (0,),
        ),
        (
            "Sign the release BOM",
            ["bom", "sign", str(out / "bom" / "release.bom.json"), "--key", str(out / "keys" / "edgeproof-ed25519.pem")],
            (0,),
        ),
        (
            "Verify the signature and the model it names",
            ["bom", "verify", str(out / "bom" / "release.bom.json"), "--pub", str(out / "keys" / "edgeproof-ed25519.pub.pem")],
            (0,),
        ),
        (
            "Write the change record for the release board",
            [
                "change-record",
                "--from",
                str(out / "bom" / "baseline.bom.json"),
                "--to",
                str(out / "bom" / "release.bom.json"),
                "--why",
                "ship the variant edgeproof optimize chose for the host under the contract's budgets and preferences (optimize/search.json)",
                "-o",
                str(out / "change-record"),
            ],
            (0,),
        ),
        (
            "Second example: free spatial dims, normalised inputs, two outputs, a [pipeline]: check it end to end by stage",
            ["check", glyphs_model, "--contract", glyphs_contract, "--sessions", "2", "--json", str(out / "glyphs" / "host.run.json")],
            JUDGED,
        ),
        (
            "Second example: a short search (slices made from raw frames by the built-in transforms)",
            [
                "optimize",
                glyphs_model,
                "--contract",
                glyphs_contract,
                "--max-candidates",
                "4",
                "--time-budget",
                "90",
                "--out",
                str(out / "glyphs" / "optimize"),
                "--json",
                str(out / "glyphs" / "optimize" / "search.json"),
            ],
            JUDGED,
        ),
        (
            "On the device: record a burst of the chosen variant under the telemetry recorder, fp32 answering below 0.9 confidence",
            [
                "telemetry",
                "burst",
                chosen,
                "--contract",
                contract,
                "--out",
                str(out / "telemetry" / "bench-0"),
                "--fallback",
                model,
                "--min-confidence",
                "0.9",
            ],
            (0,),
        ),
        (
            "The field: a simulated fleet of 3,000 devices where one chip revision silently falls back to the CPU (simulated)",
            ["fleet", "demo", "--out", str(out / "fleet")],
            (0,),
        ),
        # the report finds the fleet demo's store at OUT/fleet/fleet.duckdb and adds the fleet page
        ("Write the report, with the simulated fleet's page", ["report", str(out), "-o", str(out / "report.html")], (0,)),
    ]


def _forked(cmd: list[str]) -> int:
    """Run one command in a child forked from this process (the CLI already imported); its exit code."""
    from edgeproof.cli import app

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: run the command as `edgeproof ...` would, then leave without cleanup of the parent's state
        code = 1
        try:
            app(cmd, prog_name="edgeproof")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def run_step(cmd: list[str]) -> int:
    """One demo step: forked where the OS can, else a new interpreter."""
    if hasattr(os, "fork"):
        return _forked(cmd)
    return subprocess.run([sys.executable, "-m", "edgeproof.cli", *cmd]).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    findings = []
    for i, (title, cmd, ok_codes) in enumerate(steps(out), 1):
        print(f"\n== [{i}] {title}\n$ edgeproof {shlex.join(cmd)}", flush=True)
        step_started = time.monotonic()
        code = run_step(cmd)
        print(f"-- step {i} took {time.monotonic() - step_started:.1f} s", flush=True)
        if code not in ok_codes:
            print(f"\ndemo stopped: step {i} exited {code}", file=sys.stderr)
            return code or 1
        if code != 0:
            findings.append(
                f"step {i} ({cmd[0]}) exited {code}: a finding (an unfit host, a contract or gate failure, or a verdict that could not be decided), see above"
            )
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    for f in findings:
        print(f"note: {f}")
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
