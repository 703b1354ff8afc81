"""The rollout controller: advances a wave only when its gates pass, holds when undecided, halts and rolls back on a fail.

All state lives in the journal. ``step()`` re-reads it, finishes any transition a crash interrupted (a send
journalled but not confirmed goes only to devices that do not already report that intent), then takes the
next one; every transition has an id, so replaying it records nothing twice and sends nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeproof.errors import DataError
from edgeproof.fleet._alarms import AlarmReport, AlarmVerdict, evaluate_alarms
from edgeproof.rollout._journal import Journal
from edgeproof.rollout._plan import Device, Plan, ReleaseRef, stratum_of
from edgeproof.rollout._transport import FleetTransport, Reported

if TYPE_CHECKING:
    from edgeproof.contract import Rollback
    from edgeproof.fleet._store import FleetStore

ROLLED_BACK_COHORT = "rolled-back"
TERMINAL = ("complete", "halted", "aborted")
OPERATOR_VERBS = ("pause", "resume", "approve", "abort")


@dataclass
class State:
    """The rollout as the journal tells it."""

    phase: str = "not started"  # not started | running | holding | escalated | halted | complete | aborted
    wave: int = -1
    paused: bool = False
    wave_devices: list[list[str]] = field(default_factory=list)
    sent_at_s: dict[str, float] = field(default_factory=dict)  # intent -> when its send was confirmed
    pending: list[dict[str, Any]] = field(default_factory=list)  # send intents not yet confirmed
    unreconciled: list[dict[str, Any]] = field(default_factory=list)
    approved: set[int] = field(default_factory=set)
    escalated: set[int] = field(default_factory=set)
    rolled_back: set[str] = field(default_factory=set)
    self_reverts: list[dict[str, Any]] = field(default_factory=list)  # devices that reverted an intent by themselves
    abort_requested: str = ""  # the actor who asked
    decisions: list[dict[str, Any]] = field(default_factory=list)


def fold(entries: list[dict[str, Any]]) -> State:
    """The state a journal's entries describe."""
    s = State()
    sends: dict[str, dict[str, Any]] = {}
    for e in entries:
        kind = e["kind"]
        if kind == "start":
            s.phase, s.wave_devices = "running", e["waves"]
        elif kind == "send":
            sends[e["id"]] = e
            if e["purpose"] == "wave":
                s.wave = e["wave"]
        elif kind == "sent":
            s.sent_at_s[e["intent"]] = e["at_s"]
        elif kind == "reconciled":
            sends.pop(e["intent"], None)
        elif kind == "self-revert":
            s.self_reverts.append(e)
        elif kind == "decision":
            s.decisions.append(e)
            if e["outcome"] == "hold":
                s.phase = "escalated" if e["wave"] in s.escalated else "holding"
        elif kind == "escalate":
            s.escalated.add(e["wave"])
            s.phase = "escalated"
        elif kind == "approve":
            s.approved.add(e["wave"])
        elif kind == "abort-request":
            s.abort_requested = e["actor"]
        elif kind == "pause":
            s.paused = True
        elif kind == "resume":
            s.paused = False
        elif kind == "complete":
            s.phase = "complete"
        if kind == "send" and e["purpose"] == "rollback":
            s.rolled_back.update(e["devices"])
            s.phase = e["ends"]
        if kind == "send" and e["purpose"] == "wave" and s.phase in ("holding", "escalated"):
            s.phase = "running"
    s.pending = [e for i, e in sends.items() if i not in s.sent_at_s]
    s.unreconciled = [e for i, e in sends.items() if i in s.sent_at_s]
    return s


class Controller:
    """Drives one plan over a fleet transport; ``clock()`` gives the time in seconds (simulated in tests)."""

    def __init__(
        self,
        plan: Plan,
        transport: FleetTransport,
        store: FleetStore,
        folder: str | Path,
        clock: Callable[[], float],
        rollback: Rollback | None = None,
        journal: Callable[[Path], Journal] = Journal,
    ) -> None:
        self.plan, self.transport, self.store, self.clock, self.rollback = plan, transport, store, clock, rollback
        self.folder = Path(folder)
        self._journal = journal

    # --- the journal ---------------------------------------------------------------------------
    def _record(self, j: Journal, kind: str, id_: str, **fields: Any) -> bool:
        return j.append({"id": id_, "kind": kind, "at_s": self.clock(), **fields})

    def digests(self) -> dict[str, str]:
        p = self.plan
        return {
            "plan_sha256": p.sha256,
            "release_bom_sha256": p.release.bom_sha256,
            "release_model_sha256": p.release.model_sha256,
            "release_firmware": p.release.firmware_version,
            "known_good_bom_sha256": p.known_good.bom_sha256,
            "known_good_model_sha256": p.known_good.model_sha256,
            "known_good_firmware": p.known_good.firmware_version,
        }

    def start(self, waves: list[list[Device]], actor: str) -> None:
        """Journal the start: the plan's digest and the devices each wave selected at submit (fixed from now on)."""
        j = self._journal(self.folder)
        begun = j.of_kind("start")
        if begun and begun[0]["plan_sha256"] != self.plan.sha256:
            raise DataError(f"{j.path}: a rollout of another plan (sha256 {begun[0]['plan_sha256'][:12]}…) is journalled here")
        self._record(
            j,
            "start",
            "start",
            plan=str(self.plan.path.resolve()),
            waves=[[d.device_id for d in w] for w in waves],
            actor=actor,
            **self.digests(),
        )

    def state(self) -> State:
        return fold(self._journal(self.folder).entries)

    # --- one step ------------------------------------------------------------------------------
    def step(self) -> State:
        """Finish interrupted transitions, then take the next one the gates allow; returns the state after."""
        j = self._journal(self.folder)
        s = fold(j.entries)
        if s.phase == "not started":
            raise DataError(f"{j.path}: no rollout started here")
        for intent in s.pending:  # journalled, not confirmed: send only where the device does not report it
            self._send(j, intent)
        s = fold(j.entries)
        for intent in s.unreconciled:
            self._reconcile(j, intent, s.rolled_back)
        s = fold(j.entries)
        if s.abort_requested and s.phase not in TERMINAL:
            self._record(
                j,
                "decision",
                f"decision:{s.wave}:abort",
                wave=s.wave,
                outcome="abort",
                actor=s.abort_requested,
                reason="aborted by the operator: every updated device goes back to the known-good pair",
                evidence=[],
                **self.digests(),
            )
            self._roll_back(j, max(s.wave, 0), s, None)
            return fold(j.entries)
        if s.phase in TERMINAL or s.paused or s.unreconciled:
            return s
        if s.wave < 0:
            self._begin_wave(j, 0)
            return fold(j.entries)
        self._judge(j, s)
        return fold(j.entries)

    def _begin_wave(self, j: Journal, k: int) -> None:
        wave = self.plan.waves[k]
        intent = f"wave:{k}:{wave.name}:{self.plan.release.name}"
        devices = fold(j.entries).wave_devices[k]
        self._record(j, "send", intent, purpose="wave", wave=k, release="release", cohort=wave.name, devices=devices)
        self._send(j, _entry(j, intent))

    def _release(self, which: str) -> ReleaseRef:
        return self.plan.release if which == "release" else self.plan.known_good

    def _send(self, j: Journal, intent: dict[str, Any]) -> None:
        reported = self.transport.reported(intent["devices"])
        todo = [d for d in intent["devices"] if reported[d].intent != intent["id"]]
        if todo:
            self.transport.send(todo, self._release(intent["release"]), intent["id"], intent["cohort"])
        self._record(j, "sent", f"sent:{intent['id']}", intent=intent["id"], devices_sent=len(todo))

    def _reconcile(self, j: Journal, intent: dict[str, Any], rolled_back: set[str]) -> None:
        """Devices re-report what they run; the intent is done when every one reports the intended model and firmware, committed
        (and, where the release pins a firmware image, that image's sha256: a version string alone does not prove the image).

        A device that reverted the intent by itself (its health check failed) is journalled with what it re-reports
        instead; it no longer owes a wave the release (the wave's judgement fails its stratum), but it still owes a
        rollback the known-good pair."""
        rel = self._release(intent["release"])
        reported = self.transport.reported(intent["devices"])
        reverted = [d for d in intent["devices"] if reported[d].intent == intent["id"] and reported[d].reverted is not None]
        if reverted:
            labels = {d.device_id: d.labels for d in self.transport.inventory()}
            for d in reverted:
                self._record_self_revert(j, intent, d, reported[d], stratum_of(labels.get(d, {})))
        # a device a rollback moved on, or that went back by itself, no longer owes the wave its release
        owed = [d for d in intent["devices"] if intent["purpose"] == "rollback" or (d not in rolled_back and d not in reverted)]
        wrong = [
            d
            for d in owed
            if not reported[d].committed
            or (reported[d].model_sha256, reported[d].firmware_version) != (rel.model_sha256, rel.firmware_version)
            or (rel.firmware_sha256 and reported[d].firmware_sha256 != rel.firmware_sha256)
        ]
        if not wrong:
            self._record(
                j,
                "reconciled",
                f"reconciled:{intent['id']}",
                intent=intent["id"],
                devices=len(owed),
                model_sha256=rel.model_sha256,
                self_reverted=len(reverted),
            )

    def _record_self_revert(self, j: Journal, intent: dict[str, Any], device: str, r: Reported, stratum: str) -> None:
        """Journal a device's own revert of ``intent``: why, and the slot, model and firmware it re-reports since."""
        good = self.plan.known_good
        self._record(
            j,
            "self-revert",
            f"self-revert:{intent['id']}:{device}",
            intent=intent["id"],
            wave=intent["wave"],
            device=device,
            stratum=stratum,
            actor=f"device:{device}",
            reason=r.reverted,
            slot=r.slot,
            model_sha256=r.model_sha256,
            firmware_version=r.firmware_version,
            committed=r.committed,
            on_known_good=r.committed and (r.model_sha256, r.firmware_version) == (good.model_sha256, good.firmware_version),
            intended_model_sha256=self._release(intent["release"]).model_sha256,
            known_good_model_sha256=good.model_sha256,
        )

    def _judge(self, j: Journal, s: State) -> None:
        k = s.wave
        wave = self.plan.waves[k]
        intent = f"wave:{k}:{wave.name}:{self.plan.release.name}"
        now = self.clock()
        soaked_h = (now - s.sent_at_s[intent]) / 3600.0
        # a decision journalled before a crash stands: finish it rather than judge again on newer data
        taken = {d["outcome"]: d for d in s.decisions if d["wave"] == k and d["outcome"] in ("pass", "fail")}
        if "fail" in taken:
            self._roll_back(j, k, s, taken["fail"]["strata"])
            return
        reverted = [e for e in s.self_reverts if e["intent"] == intent]
        if reverted and "pass" not in taken:  # a device's own failed health check needs no soak and no statistics
            reason = f"{len(reverted)} device(s) reverted the release by themselves: " + "; ".join(
                f"{e['device']} ({e['stratum']}): {e['reason']}" for e in reverted[:3]
            )
            self._fail(j, k, s, sorted({e["stratum"] for e in reverted}), reason, [_self_revert_evidence(e) for e in reverted])
            return
        if soaked_h < wave.soak_h:
            return
        if "pass" in taken:
            if k == len(self.plan.waves) - 1:
                self._record(j, "complete", "complete")
            else:
                self._begin_wave(j, k + 1)
            return
        if k == len(self.plan.waves) - 1:
            self._record(
                j,
                "decision",
                f"decision:{k}:complete",
                wave=k,
                outcome="pass",
                actor="controller",
                reason="last wave sent, reconciled and soaked; no control cohort is left to judge it against",
                evidence=[],
                **self.digests(),
            )
            self._record(j, "complete", "complete")
            return
        report = evaluate_alarms(
            self.store,
            wave.name,
            self.plan.gates.control,
            self.rollback,
            window_h=max(soaked_h, 1e-6),
            looks=self.plan.gates.looks,
            alarms=self.plan.gates.alarms,
        )
        strata = self._strata(report, s.wave_devices[k], wave.min_devices)
        failing = sorted(st for st, (verdict, _) in strata.items() if verdict == "fail")
        evidence = [_evidence(v) for v in report.verdicts if v.verdict != "pass"] or [_evidence(v) for v in report.verdicts[:1]]
        if failing:
            self._fail(j, k, s, failing, f"{len(failing)} stratum/strata fail: {', '.join(failing)}", [_evidence(v) for v in report.firing])
            return
        undecided = {st: why for st, (verdict, why) in strata.items() if verdict != "pass"}
        if not undecided or k in s.approved:
            actor = "controller" if not undecided else "operator (approve)"
            self._record(
                j,
                "decision",
                f"decision:{k}:pass",
                wave=k,
                outcome="pass",
                actor=actor,
                strata=sorted(strata),
                reason="every stratum passes with its minimum devices" if not undecided else f"approved while undecided: {undecided}",
                evidence=[_evidence(v) for v in report.verdicts],
                **self.digests(),
            )
            self._begin_wave(j, k + 1)
            return
        self._record(
            j,
            "decision",
            f"decision:{k}:hold:{int(now)}",
            wave=k,
            outcome="hold",
            actor="controller",
            strata=sorted(undecided),
            reason="; ".join(f"{st}: {why}" for st, why in sorted(undecided.items())),
            evidence=evidence,
            **self.digests(),
        )
        if soaked_h - wave.soak_h >= self.plan.gates.escalate_after_h:
            self._record(
                j, "escalate", f"escalate:{k}", wave=k, reason=f"undecided {soaked_h - wave.soak_h:.1f} h after soak; approve or abort"
            )

    def _fail(self, j: Journal, k: int, s: State, failing: list[str], reason: str, evidence: list[dict[str, Any]]) -> None:
        """Journal wave ``k``'s fail decision with its evidence, then roll the failing strata back."""
        self._record(
            j,
            "decision",
            f"decision:{k}:fail",
            wave=k,
            outcome="fail",
            actor="controller",
            strata=failing,
            reason=reason,
            evidence=evidence,
            **self.digests(),
        )
        self._roll_back(j, k, s, failing)

    def _strata(self, report: AlarmReport, devices: list[str], min_devices: int) -> dict[str, tuple[str, str]]:
        """Per chip revision × region of the wave: fail if any gate fails, pass if all pass with enough devices, else why not."""
        labels = {d.device_id: d.labels for d in self.transport.inventory()}
        out: dict[str, tuple[str, str]] = {stratum_of(labels[d]): ("nodata", "no telemetry yet") for d in devices if d in labels}
        by: dict[str, list[AlarmVerdict]] = {}
        for v in report.verdicts:
            by.setdefault(stratum_of(v.stratum), []).append(v)
        for st, vs in by.items():
            if any(v.verdict == "fail" for v in vs):
                out[st] = ("fail", "; ".join(f"{v.alarm} fails" for v in vs if v.verdict == "fail"))
            elif any(v.verdict != "pass" for v in vs):
                out[st] = ("hold", "; ".join(f"{v.alarm} {v.verdict}" for v in vs if v.verdict != "pass"))
            elif min(v.cohort.devices for v in vs) < min_devices:
                out[st] = ("hold", f"{min(v.cohort.devices for v in vs)} devices reporting, minimum {min_devices}")
            else:
                out[st] = ("pass", "")
        return out

    def _roll_back(self, j: Journal, k: int, s: State, failing: list[str] | None) -> None:
        """Send the known-good pair to the release's devices in ``failing`` strata (all of them when None or policy is all)."""
        labels = {d.device_id: d.labels for d in self.transport.inventory()}
        # the devices the release was sent to (journalled wave intents), not those a wave had only selected
        # a device that went back to the known-good pair by itself (and re-reported it) needs no rollback sent
        done = s.rolled_back | {e["device"] for e in s.self_reverts if e["on_known_good"]}
        on_release = [d for e in j.of_kind("send") if e["purpose"] == "wave" for d in e["devices"] if d not in done]
        if failing is not None and self.plan.rollback_policy == "stratum":
            on_release = [d for d in on_release if stratum_of(labels[d]) in failing]
        ends = "halted" if failing is not None else "aborted"
        intent = f"rollback:{ends}:wave{k}:{self.plan.known_good.name}"
        # one entry both ends the rollout and names the rollback's devices: a crash cannot leave one without the other
        self._record(
            j,
            "send",
            intent,
            purpose="rollback",
            ends=ends,
            wave=k,
            release="known_good",
            cohort=ROLLED_BACK_COHORT,
            devices=on_release,
            strata=failing or "all",
        )
        self._send(j, _entry(j, intent))


def operator_command(folder: str | Path, verb: str, actor: str, at_s: float | None = None) -> State:
    """Journal pause, resume, approve (the current wave advances at its next judgement though undecided) or abort
    (the controller rolls every updated device back at its next step); returns the state after."""
    j = Journal(Path(folder))
    s = fold(j.entries)
    if verb not in OPERATOR_VERBS:
        raise DataError(f"unknown rollout command {verb!r}; one of {', '.join(OPERATOR_VERBS)}")
    if s.phase == "not started":
        raise DataError(f"{j.path}: no rollout started here")
    if s.phase in TERMINAL:
        raise DataError(f"{j.path}: the rollout is {s.phase}; {verb} does nothing")
    last = max((e["at_s"] for e in j.entries), default=0.0)
    id_ = f"approve:{s.wave}" if verb == "approve" else "abort-request" if verb == "abort" else f"{verb}:{len(j.entries)}"
    j.append(
        {
            "id": id_,
            "kind": f"{verb}-request" if verb == "abort" else verb,
            "at_s": last if at_s is None else at_s,
            "wave": s.wave,
            "actor": actor,
        }
    )
    return fold(j.entries)


def _entry(j: Journal, id_: str) -> dict[str, Any]:
    return next(e for e in j.entries if e["id"] == id_)


def _self_revert_evidence(e: dict[str, Any]) -> dict[str, Any]:
    """A device's self-revert as a decision's evidence: n = 1 device, its own health check as the statistic."""
    return {
        "alarm": "device-health-check",
        "stratum": e["stratum"],
        "verdict": "fail",
        "n_devices": 1,
        "device": e["device"],
        "statistic": e["reason"],
        "reported_slot": e["slot"],
        "reported_model_sha256": e["model_sha256"],
        "reported_firmware": e["firmware_version"],
        "on_known_good": e["on_known_good"],
        "provenance": f"reported:{e['actor']} (its A/B slot state, re-read after intent {e['intent']})",
    }


def _evidence(v: AlarmVerdict) -> dict[str, Any]:
    return {
        "alarm": v.alarm,
        "stratum": v.stratum_label,
        "verdict": v.verdict,
        "n_devices": v.cohort.devices,
        "n_samples": v.cohort.samples,
        "samples_unit": v.cohort.samples_unit,
        "statistic": v.statistic,
        "estimate": v.estimate,
        "interval": list(v.interval) if v.interval else None,
        "threshold": v.threshold,
        "threshold_source": v.threshold_source,
        "provenance": v.provenance,
    }
