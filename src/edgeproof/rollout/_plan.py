"""A rollout plan (TOML): the signed release, the known-good pair to return to, waves with selectors, caps, soak and minimums, and the gates.

Loading checks the file's own shape (each problem one line naming ``file:line: field``); ``validate_plan``
checks it against the world at submit time: signatures, a fleet inventory, the strata each wave selects, and the
compatibility of both the release and the known-good pair (the rollback target) with each hardware class (board ×
firmware) the waves reach.

A release may carry a firmware image (``firmware_image`` with its ``firmware_sha256`` pinned in the plan): devices
write it into the inactive slot beside the model. Where the signed BOM states a SHA-256 for the board's firmware
component, the image must match it; the BOM builder records firmware versions only, so the plan's pin is what binds
the image otherwise.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeproof.contract._locate import key_lines, line_of
from edgeproof.errors import DataError
from edgeproof.fleet._alarms import ALARM_NAMES

if TYPE_CHECKING:
    from edgeproof.bom import BomFacts

WAVE_KINDS = ("internal", "canary", "regional", "global")
SELECTOR_LABELS = ("cohort", "region", "chip_revision")
POLICIES = ("stratum", "all")
FLEET_KINDS = ("simulated", "agents")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ReleaseRef:
    """A release as the plan names it: a signed BOM, its model and firmware (one coupled pair)."""

    name: str
    bom: Path
    model: Path
    firmware_version: str
    public_key: Path
    model_sha256: str = ""  # filled in by validation, from the verified signature
    bom_sha256: str = ""
    firmware_image: Path | None = None  # the firmware a device writes into its inactive slot, when the release carries one
    firmware_sha256: str = ""  # the image's sha256 as the plan pins it (checked against the file at submit)


@dataclass(frozen=True)
class Device:
    """A device of the fleet's inventory and the labels a selector matches."""

    device_id: str
    labels: dict[str, str]


@dataclass(frozen=True)
class Wave:
    """One wave: devices matching ``select`` (not yet updated), capped; judged after ``soak_h`` with ``min_devices`` per stratum."""

    name: str
    kind: str
    select: dict[str, tuple[str, ...]]
    max_devices: int | None
    max_pct: float
    soak_h: float
    min_devices: int
    line: int

    def matches(self, device: Device) -> bool:
        return all(device.labels.get(k, "") in values for k, values in self.select.items())


@dataclass(frozen=True)
class Gates:
    """The fleet alarms that gate each wave, the control cohort, and how long an undecided wave may hold."""

    alarms: tuple[str, ...] = ALARM_NAMES
    control: str = "control"
    contract: Path | None = None
    min_devices: int | None = None  # overrides the contract's [rollback] min_devices for the alarms
    looks: int = 8
    escalate_after_h: float = 24.0


@dataclass(frozen=True)
class Plan:
    path: Path
    sha256: str
    release: ReleaseRef
    known_good: ReleaseRef
    waves: tuple[Wave, ...]
    gates: Gates
    rollback_policy: str
    target: dict[str, Any] = field(default_factory=dict)


class _Reader:
    """Typed field access over the parsed TOML, every refusal naming file:line and the field."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = key_lines(text)

    def fail(self, where: tuple[str | int, ...], what: str) -> DataError:
        line = line_of(self.lines, where)
        dotted = ".".join(f"[{p}]" if isinstance(p, int) else p for p in where).replace(".[", "[")
        return DataError(f"{self.path}:{line or 1}: {dotted}: {what}")

    def get(self, table: dict[str, Any], where: tuple[str | int, ...], kind: type | tuple[type, ...], default: Any = ...) -> Any:
        key = where[-1]
        assert isinstance(key, str)
        if key not in table:
            if default is ...:
                raise self.fail(where[:-1] or where, f"missing {key!r}")
            return default
        value = table[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(where, f"must be {names}, got {value!r}")
        return value

    def path_of(self, table: dict[str, Any], where: tuple[str | int, ...]) -> Path:
        p = Path(self.get(table, where, str))
        return p if p.is_absolute() else self.path.parent / p


def _release(r: _Reader, data: dict[str, Any], key: str) -> ReleaseRef:
    t = r.get(data, (key,), dict)
    image = r.path_of(t, (key, "firmware_image")) if "firmware_image" in t else None
    image_sha = r.get(t, (key, "firmware_sha256"), str, "")
    if image is not None and not image_sha:
        raise r.fail((key, "firmware_image"), "needs firmware_sha256 beside it: the plan pins the image a device is sent")
    if image_sha and image is None:
        raise r.fail((key, "firmware_sha256"), "pins no image: name it with firmware_image")
    if image_sha and not _SHA256.match(image_sha):
        raise r.fail((key, "firmware_sha256"), f"must be 64 lowercase hex digits, got {image_sha!r}")
    return ReleaseRef(
        name=r.get(t, (key, "name"), str),
        bom=r.path_of(t, (key, "bom")),
        model=r.path_of(t, (key, "model")),
        firmware_version=r.get(t, (key, "firmware_version"), str),
        public_key=r.path_of(t, (key, "public_key")),
        firmware_image=image,
        firmware_sha256=image_sha,
    )


def _wave(r: _Reader, t: dict[str, Any], i: int) -> Wave:
    where: tuple[str | int, ...] = ("wave", i)
    kind = r.get(t, (*where, "kind"), str)
    if kind not in WAVE_KINDS:
        raise r.fail((*where, "kind"), f"must be one of {', '.join(WAVE_KINDS)}, got {kind!r}")
    select_t = r.get(t, (*where, "select"), dict, {})
    select: dict[str, tuple[str, ...]] = {}
    for label, values in select_t.items():
        if label not in SELECTOR_LABELS:
            raise r.fail((*where, "select", label), f"selector label must be one of {', '.join(SELECTOR_LABELS)}")
        vals = [values] if isinstance(values, str) else values
        if not isinstance(vals, list) or not vals or not all(isinstance(v, str) for v in vals):
            raise r.fail((*where, "select", label), "must be a label value or a non-empty list of them")
        select[label] = tuple(vals)
    max_devices = r.get(t, (*where, "max_devices"), int, None)
    max_pct = float(r.get(t, (*where, "max_pct"), (int, float), 100.0))
    soak_h = float(r.get(t, (*where, "soak_h"), (int, float)))
    min_devices = r.get(t, (*where, "min_devices"), int, 1)
    if max_devices is not None and max_devices < 1:
        raise r.fail((*where, "max_devices"), f"must be at least 1, got {max_devices}")
    if not 0 < max_pct <= 100:
        raise r.fail((*where, "max_pct"), f"must be in (0, 100], got {max_pct:g}")
    if soak_h < 0:
        raise r.fail((*where, "soak_h"), f"must be >= 0, got {soak_h:g}")
    if min_devices < 1:
        raise r.fail((*where, "min_devices"), f"must be at least 1, got {min_devices}")
    name = r.get(t, (*where, "name"), str, kind)
    return Wave(name, kind, select, max_devices, max_pct, soak_h, min_devices, line_of(r.lines, where) or 1)


def load_plan(path: str | Path) -> Plan:
    """Read and shape-check a plan file; a mistake is one DataError line ``file:line: field: what``."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid TOML: {exc}") from None
    r = _Reader(path, raw.decode())
    release, known_good = _release(r, data, "release"), _release(r, data, "known_good")
    if release.name == known_good.name:
        raise r.fail(("known_good", "name"), f"must differ from the release's name {release.name!r}")
    waves_t = r.get(data, ("wave",), list)
    if not waves_t:
        raise r.fail(("wave",), "a plan needs at least one [[wave]]")
    waves = tuple(_wave(r, t, i) for i, t in enumerate(waves_t))
    order = [WAVE_KINDS.index(w.kind) for w in waves]
    for i in range(1, len(waves)):
        if order[i] < order[i - 1]:
            raise r.fail(("wave", i, "kind"), f"{waves[i].kind!r} after {waves[i - 1].kind!r}: waves go {' → '.join(WAVE_KINDS)}")
    names = Counter(w.name for w in waves)
    for i, w in enumerate(waves):
        if names[w.name] > 1:
            raise r.fail(("wave", i, "name"), f"wave name {w.name!r} is used twice")
    g = r.get(data, ("gates",), dict, {})
    alarms = tuple(r.get(g, ("gates", "alarms"), list, list(ALARM_NAMES)))
    for j, a in enumerate(alarms):
        if a not in ALARM_NAMES:
            raise r.fail(("gates", "alarms", j), f"unknown alarm {a!r}; known: {', '.join(ALARM_NAMES)}")
    contract = r.path_of(g, ("gates", "contract")) if "contract" in g else None
    gates = Gates(
        alarms=alarms,
        control=r.get(g, ("gates", "control"), str, "control"),
        contract=contract,
        min_devices=r.get(g, ("gates", "min_devices"), int, None),
        looks=r.get(g, ("gates", "looks"), int, 8),
        escalate_after_h=float(r.get(g, ("gates", "escalate_after_h"), (int, float), 24.0)),
    )
    policy = r.get(r.get(data, ("policy",), dict, {}), ("policy", "rollback"), str, "stratum")
    if policy not in POLICIES:
        raise r.fail(("policy", "rollback"), f"must be one of {', '.join(POLICIES)}, got {policy!r}")
    target = r.get(data, ("target",), dict, {})
    kind = r.get(target, ("target", "kind"), str, "simulated")
    if kind not in FLEET_KINDS:
        raise r.fail(("target", "kind"), f"must be one of {', '.join(FLEET_KINDS)}, got {kind!r}")
    if kind == "agents":
        target = {**target, "boards": str(r.path_of(target, ("target", "boards")))}
        only = r.get(target, ("target", "devices"), list, [])
        if not all(isinstance(d, str) and d for d in only):
            raise r.fail(("target", "devices"), "must be a list of device ids of the boards inventory")
    return Plan(path, hashlib.sha256(raw).hexdigest(), release, known_good, waves, gates, policy, target)


def select_waves(plan: Plan, inventory: Sequence[Device]) -> list[list[Device]]:
    """The devices each wave sends to: those matching its selector not taken by an earlier wave, in a stable
    hashed order (so a capped wave spreads over strata), until its absolute cap or the fleet share ``max_pct`` (cumulative)."""
    order = sorted(inventory, key=lambda d: hashlib.sha256(d.device_id.encode()).digest())
    taken: set[str] = set()
    out: list[list[Device]] = []
    for wave in plan.waves:
        budget = int(len(inventory) * wave.max_pct / 100.0 + 1e-9) - len(taken)
        if wave.max_devices is not None:
            budget = min(budget, wave.max_devices)
        chosen: list[Device] = []
        for d in order:
            if len(chosen) >= budget:
                break
            if d.device_id not in taken and wave.matches(d):
                chosen.append(d)
        taken.update(d.device_id for d in chosen)
        out.append(chosen)
    return out


def effective_minimum(plan: Plan, i: int) -> int:
    """Devices a stratum of wave ``i`` needs: its own minimum, and for a judged wave (all but the last) the gates' too, or it could never pass."""
    wave = plan.waves[i]
    return wave.min_devices if i == len(plan.waves) - 1 else max(wave.min_devices, plan.gates.min_devices or 0)


def stratum_of(labels: dict[str, str]) -> str:
    """The stratum a wave's minimum counts in: chip revision × region (a release fixes model and firmware)."""
    return f"{labels.get('chip_revision', '?')} × {labels.get('region', '?')}"


def validate_plan(plan: Plan, inventory: Sequence[Device]) -> tuple[Plan, list[list[Device]]]:
    """Check the plan at submit: both releases' signatures verify, every wave selects devices and meets its minimum per
    stratum, the waves reach the whole fleet, and the BOMs of the release and of the known-good pair (the rollback
    target) each pass on every (board, firmware) they would run on; a firmware image matches its pin and its BOM.
    Returns the plan with verified digests and each wave's devices."""
    from dataclasses import replace

    from edgeproof.bom import load_signature, read_bom, signature_path, verify_bom

    verified: dict[str, ReleaseRef] = {}
    boms: dict[str, BomFacts] = {}
    for key, ref in (("release", plan.release), ("known_good", plan.known_good)):
        where = f"{plan.path}:{_line(plan, (key, 'bom'))}: {key}.bom"
        if not signature_path(ref.bom).exists():
            raise DataError(f"{where}: {ref.bom} is not signed (no {signature_path(ref.bom).name}); sign it with `edgeproof bom sign`")
        result = verify_bom(ref.bom, ref.public_key, ref.model)
        if not result.ok:
            raise DataError(f"{where}: signature does not verify: {result.message}")
        sig = load_signature(signature_path(ref.bom))
        boms[key] = read_bom(ref.bom)
        if boms[key].sha256 != sig.bom_sha256:  # what is judged below must be what was verified
            raise DataError(f"{where}: {ref.bom} changed while it was being checked; submit the plan again")
        verified[key] = replace(ref, model_sha256=sig.model_sha256, bom_sha256=sig.bom_sha256)
        _check_firmware_image(plan, key, ref, boms[key])
    plan = replace(plan, release=verified["release"], known_good=verified["known_good"])
    waves = select_waves(plan, inventory)
    for i, (wave, devices) in enumerate(zip(plan.waves, waves)):
        if not any(wave.matches(d) for d in inventory):
            sel = ", ".join(f"{k} in {list(v)}" for k, v in wave.select.items())
            raise DataError(f"{plan.path}:{wave.line}: wave[{i}].select: matches no device of the {len(inventory)} in the fleet ({sel})")
        minimum = effective_minimum(plan, i)
        counts = Counter(stratum_of(d.labels) for d in devices)
        small = sorted((n, s) for s, n in counts.items() if n < minimum)
        if not devices or small:
            n, s = small[0] if small else (0, "all strata")
            raise DataError(
                f"{plan.path}:{wave.line}: wave[{i}].min_devices: stratum {s} has {n} device(s) in wave {wave.name!r}, "
                f"fewer than its minimum {minimum} ({len(small)} strata short)"
            )
        if i < len(plan.waves) - 1:
            _check_control(plan, i, inventory, waves[: i + 1], minimum)
    reached = sum(len(w) for w in waves)
    if reached < len(inventory):
        last = plan.waves[-1]
        raise DataError(
            f"{plan.path}:{last.line}: wave[{len(plan.waves) - 1}]: the waves reach {reached} of {len(inventory)} devices "
            f"({100.0 * reached / max(1, len(inventory)):.1f}%), not 100%"
        )
    reached_devices = [d for w in waves for d in w]
    _check_compatible(plan, "release", boms["release"], reached_devices)
    _check_compatible(plan, "known_good", boms["known_good"], reached_devices)
    return plan, waves


def hardware_classes(release: ReleaseRef, devices: Sequence[Device]) -> Counter[tuple[str, str]]:
    """(board, firmware) of each device once it runs the release, counted: the board from its inventory label, the
    firmware the release's own (model and firmware go to a device as one coupled pair)."""
    missing = next((d for d in devices if not d.labels.get("board")), None)
    if missing is not None:
        raise DataError(f"fleet inventory: device {missing.device_id} has no board label; a release's compatibility cannot be checked")
    return Counter((d.labels["board"], release.firmware_version) for d in devices)


def _check_compatible(plan: Plan, key: str, bom: BomFacts, devices: Sequence[Device]) -> None:
    """Every hardware class the waves reach needs a passing gate verdict for that board and firmware in the signed BOM of
    ``key`` (the release, or the known-good pair: a rollback sends it to the same devices)."""
    ref: ReleaseRef = getattr(plan, key)
    stated = {t.id: (t.verdict, t.props.get("firmware.version", "not stated")) for t in bom.targets.values()}
    classes = hardware_classes(ref, devices)
    missing = sorted(c for c in classes if stated.get(c[0]) != ("pass", c[1]))
    if missing:
        board, firmware = missing[0]
        verdict, on = stated.get(board, ("", ""))
        has = f"its {board} target: verdict {verdict!r}, firmware {on!r}" if board in stated else f"it has no {board} target"
        raise DataError(
            f"{plan.path}:{_line(plan, (key, 'bom'))}: {key}.bom: {ref.bom} carries no passing verdict for "
            f"board {board} with firmware {firmware} ({classes[missing[0]]} devices of the waves; {has}); "
            f"{len(missing)} of {len(classes)} hardware classes uncovered"
        )


def firmware_hashes(bom: BomFacts) -> dict[str, str]:
    """The SHA-256 each firmware component of a BOM states (``firmware:<target>`` → hex), where it states one."""
    out: dict[str, str] = {}
    for c in bom.doc.get("components", []):
        if not isinstance(c, dict) or c.get("type") != "firmware" or not str(c.get("bom-ref", "")).startswith("firmware:"):
            continue
        for h in c.get("hashes") or []:
            if isinstance(h, dict) and h.get("alg") == "SHA-256" and isinstance(h.get("content"), str):
                out[c["bom-ref"].removeprefix("firmware:")] = h["content"].lower()
    return out


def _check_firmware_image(plan: Plan, key: str, ref: ReleaseRef, bom: BomFacts) -> None:
    """A firmware image hashes to the sha256 the plan pins, and to the one its signed BOM states where it states one."""
    if ref.firmware_image is None:
        return
    where = f"{plan.path}:{_line(plan, (key, 'firmware_image'))}: {key}.firmware_image"
    try:
        got = hashlib.sha256(ref.firmware_image.read_bytes()).hexdigest()
    except OSError as exc:
        raise DataError(f"{where}: {ref.firmware_image}: cannot read ({exc.strerror or exc})") from None
    if got != ref.firmware_sha256:
        raise DataError(f"{where}: {ref.firmware_image.name} hashes to {got[:12]}…, the plan pins {ref.firmware_sha256[:12]}…")
    stated = {t: h for t, h in firmware_hashes(bom).items() if h != got}
    if stated:
        target, h = sorted(stated.items())[0]
        raise DataError(f"{where}: {ref.firmware_image.name} hashes to {got[:12]}…, its signed BOM states {h[:12]}… for firmware:{target}")


def _check_control(plan: Plan, i: int, inventory: Sequence[Device], so_far: list[list[Device]], minimum: int) -> None:
    """A judged wave must leave a control cohort in each of its strata: the gates compare against it."""
    taken = {d.device_id for w in so_far for d in w}
    control = Counter(stratum_of(d.labels) for d in inventory if d.device_id not in taken)
    short = sorted((control[s], s) for s in {stratum_of(d.labels) for d in so_far[-1]} if control[s] < minimum)
    if short:
        n, s = short[0]
        wave = plan.waves[i]
        raise DataError(
            f"{plan.path}:{wave.line}: wave[{i}]: leaves {n} control device(s) in stratum {s} (minimum {minimum}); "
            f"its gates would have nothing to compare against ({len(short)} strata short)"
        )


def _line(plan: Plan, where: tuple[str | int, ...]) -> int:
    return line_of(key_lines(plan.path.read_text()), where) or 1
