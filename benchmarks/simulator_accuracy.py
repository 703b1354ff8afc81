"""Simulator accuracy on this host: the host profile's predicted latency vs measured p50.

Every digits variant (fp32, fp16, int8-static) × intra-op threads (1, 2). The host profile is
calibrated fresh from microbenchmarks (not from the digits model), then each case is predicted and
measured with the host runner (3 fresh sessions, median of session medians). Target: MAPE <= 15%.
The 1-minute load average is kept per case (a busy machine slows 2-thread runs most), and the
profile's calibration conditions beside the load during validation: calibrated and validated back
to back, both see the same machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _common import DIGITS_MODEL, write_result
from edgeproof.model import sha256_file
from edgeproof.simulate.hostprofile import calibrate, save_profile
from edgeproof.simulate.validate import digits_variants, validate_host


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="edgeproof-simacc-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        profile = calibrate(progress=lambda msg, frac: print(f"  calibrate: {msg}", flush=True))
        profile_path = save_profile(profile, work / "host-profile.json")
        variants = digits_variants(work / "variants", DIGITS_MODEL)
        report = validate_host(variants, (1, 2), profile_path, progress=lambda msg, frac: print(f"  measure: {msg}", flush=True))
        report["variants_sha256"] = {name: sha256_file(p) for name, p in variants.items()}
    for c in report["cases"]:
        print(
            f"{c['variant']:12s} threads={c['threads']}  predicted {c['predicted_ms']:.3f} ms  measured {c['measured_p50_ms']:.3f} ms  error {c['error']:+.1%}  (load {c['load_avg_1m']:.2f})"
        )
    for note in report["notes"]:
        print(f"note: {note}")
    for warning in report["drift"]:
        print(f"warning: {warning}")
    verdict = "meets" if report["meets_target"] else "misses"
    assert profile.conditions is not None
    print(
        f"MAPE {report['mape']:.1%} — {verdict} the {report['target_mape']:.0%} target; calibrated in {profile.calibration_s:.0f} s under "
        f"{profile.conditions.describe()}, validated at 1-minute load average {report['load_avg_1m']:.2f}"
    )
    report["calibration_s"] = profile.calibration_s
    report["total_s"] = round(time.monotonic() - started, 1)
    report["load_avg_at_end"] = list(os.getloadavg())
    write_result("simulator_accuracy", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
