"""Interleaved A/B measurement: two models timed in alternating blocks so machine drift cannot favour one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeproof.errors import DataError
from edgeproof.measure import energy, thermal
from edgeproof.measure.runner import (
    EnergyTally,
    Prepared,
    ProfileOptions,
    Progress,
    finish_record,
    now_iso,
)
from edgeproof.measure.scenarios import back_to_back
from edgeproof.measure.session import open_session, run_checked
from edgeproof.records import HostFitness, InterleaveLayout, RunRecord, RuntimeSettings, ScenarioResult, SessionSamples


@dataclass
class InterleaveOptions:
    """Pairs of fresh sessions (one per arm), each timed in ``blocks`` alternating blocks.

    ``pairs`` always run; while ``decided`` (given to the measuring call) says the verdict is still
    open, ``step`` more pairs run at a time, up to ``max_pairs``."""

    pairs: int = 10
    blocks: int = 20
    block_size: int = 20
    warmup: int = 30
    seed: int = 0
    max_pairs: int = 30
    step: int = 5


# Given each arm's sessions so far, whether the comparison is settled (no more pairs needed).
Decided = Callable[[list[list[float]], list[list[float]]], bool]
# One runtime setting for both arms, or one per arm (a variant at 1 thread against fp32 at 2).
ArmSettings = RuntimeSettings | tuple[RuntimeSettings, RuntimeSettings]


def per_arm(settings: ArmSettings) -> tuple[RuntimeSettings, RuntimeSettings]:
    """Each arm's runtime settings."""
    return settings if isinstance(settings, tuple) else (settings, settings)


def interleaved_sessions(
    paths: tuple[Path, Path],
    feeds: tuple[list, list],
    settings: ArmSettings,
    ab: InterleaveOptions,
    tallies: tuple[EnergyTally, EnergyTally] | None = None,
    progress: Progress | None = None,
) -> tuple[list[SessionSamples], list[SessionSamples]]:
    """Time A and B interleaved: for each pair, open both sessions in random order, then alternate
    blocks, the leading arm alternating block to block. Returns each arm's sessions.

    Both sessions run with spinning off: between its blocks an idle session's worker threads would
    otherwise spin on the cores the other arm is being timed on. On this 2-core host that tripled the
    variance of a 2-thread pair's ratio (per-pair sd of the log ratio 0.36 → 0.21, digits fp32 vs
    INT8, 20 pairs each, alternated); 1-thread sessions have no worker threads to spin."""
    report = progress or (lambda msg, frac: None)
    rng = np.random.default_rng(ab.seed)
    sessions: tuple[list[SessionSamples], list[SessionSamples]] = ([], [])
    for pair in range(ab.pairs):
        report(f"pair {pair + 1}/{ab.pairs}", 0.85 * pair / ab.pairs)
        order = [0, 1] if rng.random() < 0.5 else [1, 0]
        opened: dict[int, ort.InferenceSession] = {}
        for arm in order:
            opened[arm] = open_session(paths[arm], per_arm(settings)[arm], spinning=False)
            run_checked(opened[arm], feeds[arm][0], str(paths[arm]))
        sess = [opened[0], opened[1]]
        warm = [back_to_back(sess[arm].run, feeds[arm], ab.warmup) for arm in (0, 1)]
        samples: list[list[float]] = [[], []]
        for block in range(ab.blocks):
            lead = order[block % 2]
            for arm in (lead, 1 - lead):
                if tallies:
                    tallies[arm].begin(f"p{pair}b{block}a{arm}")
                samples[arm].extend(back_to_back(sess[arm].run, feeds[arm], ab.block_size))
                if tallies:
                    tallies[arm].end(f"p{pair}b{block}a{arm}")
        for arm in (0, 1):
            sessions[arm].append(SessionSamples(warmup_ms=warm[arm], samples_ms=samples[arm], started_at=now_iso()))
        del sess
    return sessions


def interleaved_sessions_until(
    paths: tuple[Path, Path],
    feeds: tuple[list, list],
    settings: ArmSettings,
    ab: InterleaveOptions,
    decided: Decided | None = None,
    tallies: tuple[EnergyTally, EnergyTally] | None = None,
    progress: Progress | None = None,
) -> tuple[list[SessionSamples], list[SessionSamples]]:
    """``ab.pairs`` interleaved pairs, then ``ab.step`` more at a time while ``decided`` says the
    comparison is still open, up to ``ab.max_pairs``. Extending only an undecided comparison keeps
    the false-positive rate of a settled one (an A/A pair is settled at once) and buys power where a
    true change sits near the tolerance."""
    a, b = interleaved_sessions(paths, feeds, settings, ab, tallies, progress)
    while decided is not None and len(a) < ab.max_pairs and not decided([s.samples_ms for s in a], [s.samples_ms for s in b]):
        more = replace(ab, pairs=min(ab.step, ab.max_pairs - len(a)), seed=ab.seed + 7919 * len(a))
        ma, mb = interleaved_sessions(paths, feeds, settings, more, tallies, progress)
        a, b = a + ma, b + mb
    return a, b


def interleaved_ab(
    model_a: str | Path,
    model_b: str | Path,
    settings: RuntimeSettings | None = None,
    options: ProfileOptions | None = None,
    ab: InterleaveOptions | None = None,
    progress: Progress | None = None,
    decided: Decided | None = None,
) -> tuple[RunRecord, RunRecord]:
    """Measure A (baseline) and B (candidate) interleaved on this host: a host runner opened, used
    once and closed (``edgeproof.runners``)."""
    from edgeproof.runners import HostRunner

    options = options or ProfileOptions()
    with HostRunner(check_fitness=options.check_fitness, strict=options.strict) as runner:
        a, b = runner.prepare(model_a, options), runner.prepare(model_b, options)
        return runner.run_ab(a, b, settings or RuntimeSettings(), options, ab or InterleaveOptions(), decided, progress)


def measure_ab_prepared(
    preps: tuple[Prepared, Prepared],
    settings: ArmSettings,
    options: ProfileOptions,
    ab: InterleaveOptions,
    meter: energy.EnergyMeter | None,
    fitness: HostFitness | None,
    report: Progress,
    decided: Decided | None = None,
) -> tuple[RunRecord, RunRecord]:
    """Measure A (baseline) and B (candidate) interleaved and return both records. They name each
    other in ``interleave`` so the gate can pair their blocks. With ``decided``, pairs are added
    while it says the comparison is open (see ``interleaved_sessions_until``)."""
    if any(p.scenario.name != "single-stream" for p in preps):
        raise DataError("interleaved A/B measurement times single-stream inference only")
    with thermal.ThermalSampler() as temps:
        tallies = (EnergyTally(meter), EnergyTally(meter))
        sessions = interleaved_sessions_until(
            (preps[0].path, preps[1].path), (preps[0].feeds, preps[1].feeds), settings, ab, decided, tallies, report
        )
        peak = temps.peak_c
    records = []
    for arm in (0, 1):
        scen = ScenarioResult(name="single-stream", engine="builtin", batch_size=1)
        layout = InterleaveLayout(arm="AB"[arm], block_size=ab.block_size, blocks=ab.blocks, pairs=len(sessions[arm]), seed=ab.seed)
        records.append(
            finish_record(preps[arm], per_arm(settings)[arm], options, sessions[arm], scen, tallies[arm], peak, fitness, report, layout)
        )
    return pair_records(records[0], records[1])


def pair_records(a: RunRecord, b: RunRecord) -> tuple[RunRecord, RunRecord]:
    """The two arms of one interleaved run, each naming the other as its partner."""
    assert a.interleave is not None and b.interleave is not None
    return (
        a.model_copy(update={"interleave": a.interleave.model_copy(update={"partner_run_id": b.run_id})}),
        b.model_copy(update={"interleave": b.interleave.model_copy(update={"partner_run_id": a.run_id})}),
    )
