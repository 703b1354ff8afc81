"""Build a CycloneDX 1.6 ML-BOM of a release through cyclonedx-python-lib, with a model card, and validate it."""

from __future__ import annotations

import json
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType, Pedigree
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion

import edgeproof
from edgeproof.bom import _schema as s
from edgeproof.bom._figures import Stated, run_figures
from edgeproof.bom._inputs import BomInputs, FileRef
from edgeproof.bom._read import StatedClause
from edgeproof.records import RunRecord, Verdict
from edgeproof.variants.recipe import Recipe


def build_document(inputs: BomInputs) -> dict[str, Any]:
    """The BOM of ``inputs`` as a CycloneDX 1.6 JSON document, validated against the strict 1.6 schema.

    cyclonedx-python-lib 11 has no model for ``modelCard`` or a component's ``data``; both are
    added to the library's JSON output, and the finished document is validated as a whole. The
    ``edgeproof:bom.schema_validation`` property says whether it was (the validator needs the
    library's optional ``json-validation`` dependencies).
    """
    bom = Bom()
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="edgeproof", version=edgeproof.__version__))
    for name, value in _metadata_properties(inputs).items():
        bom.metadata.properties.add(Property(name=s.NS + name, value=value))
    model = _model_component(inputs)
    bom.metadata.component = model
    datasets = _dataset_components(inputs)
    runtimes = _runtime_components(inputs.runs)
    model_needs = [component for component, _ in datasets.values()] + list(runtimes.values())
    if inputs.contract is not None:
        name = inputs.contract.path.name if inputs.contract.path else "contract"
        contract = _file_component(s.CONTRACT_REF, name, inputs.contract, ComponentType.FILE)
        bom.components.add(contract)
        model_needs.append(contract)
    for component in model_needs:
        bom.components.add(component)
    bom.register_dependency(model, model_needs)
    verdicts = {v.target: v for v in inputs.verdicts}
    runs = {r.target.id: r for r in inputs.runs}
    for target_id in sorted(set(runs) | set(verdicts)):
        run = runs.get(target_id)
        device = _target_component(target_id, run, verdicts.get(target_id))
        needs = [runtimes[run.env.onnxruntime]] if run is not None and run.kind == "measured" else []
        firmware = _firmware_component(target_id, run)
        if firmware is not None:
            bom.components.add(firmware)
            needs.append(firmware)
        bom.components.add(device)
        bom.register_dependency(device, needs)
    doc = json.loads(JsonV1Dot6(bom).output_as_string())
    doc["metadata"]["component"]["modelCard"] = _model_card(inputs, list(datasets))
    for component in doc["components"]:
        if component["bom-ref"] in datasets:
            component["data"] = [datasets[component["bom-ref"]][1]]
    _validate(doc)
    return doc


def _validate(doc: dict[str, Any]) -> None:
    """Validate against the strict CycloneDX 1.6 schema and say so in the BOM, or say why it could not be."""
    # Imported here: jsonschema's format checkers take about a second to import, which every other
    # command of the CLI would otherwise pay at start-up.
    from cyclonedx.exception import MissingOptionalDependencyException
    from cyclonedx.validation.json import JsonStrictValidator

    checked = next(p for p in doc["metadata"]["properties"] if p["name"] == s.NS + s.VALIDATION_PROPERTY)
    try:
        error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc))
    except MissingOptionalDependencyException:
        checked["value"] = s.unavailable("not schema-validated: install cyclonedx-python-lib[json-validation]")
        return
    if error is not None:
        # Everything in the document is ours; a schema error is a bug here, not a user mistake.
        raise AssertionError(f"built BOM does not validate against CycloneDX 1.6: {error}")


def _props(values: dict[str, str]) -> list[Property]:
    return [Property(name=s.NS + name, value=value) for name, value in values.items()]


def _sha256(sha: str) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=sha)]


def _metadata_properties(inputs: BomInputs) -> dict[str, str]:
    contract = inputs.contract
    return {
        "bom.schema": s.BOM_SCHEMA,
        "model.sha256": inputs.model.sha256,
        "model.path": str(inputs.model.path),
        "contract.sha256": contract.sha256 if contract else s.unavailable("no contract given and no verdict names one"),
        "contract.path": str(contract.path) if contract and contract.path else s.unavailable("contract file not given"),
        "runs": json.dumps(sorted(r.run_id for r in inputs.runs)),
        s.VALIDATION_PROPERTY: s.VALIDATED,
        **(inputs.lineage.properties() if inputs.lineage is not None else {}),
        **_pipeline_properties(inputs),
    }


def _pipeline_properties(inputs: BomInputs) -> dict[str, str]:
    """The contract's ``[pipeline]`` recipe and hash (files it names included): what turns sensor data
    into the model's input is part of the release. Nothing when the contract has no pipeline."""
    from edgeproof.accuracy import contract_pipeline
    from edgeproof.contract import load_contract

    if inputs.contract is None or inputs.contract.path is None:
        return {}
    pipeline = contract_pipeline(load_contract(inputs.contract.path))
    if pipeline is None:
        return {}
    recipe = pipeline.recipe()
    return {
        "pipeline.sha256": pipeline.sha256,
        "pipeline.recipe": json.dumps(recipe["spec"], sort_keys=True),
        "pipeline.steps": pipeline.describe(),
    }


def _file_component(ref: str, name: str, file: FileRef, kind: ComponentType) -> Component:
    path = str(file.path) if file.path else s.unavailable("path not known")
    return Component(type=kind, name=name, bom_ref=ref, hashes=_sha256(file.sha256), properties=_props({"path": path}))


def _model_component(inputs: BomInputs) -> Component:
    run = inputs.runs[0]
    model = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=run.model.name,
        bom_ref=s.MODEL_REF,
        hashes=_sha256(inputs.model.sha256),
        properties=_props({"model.path": str(inputs.model.path), "model.size_bytes": str(inputs.model_size_bytes)}),
    )
    recipe = inputs.recipe
    if recipe is not None and recipe.source_sha256 and recipe.source_sha256 != inputs.model.sha256:
        source = inputs.source or FileRef(path=None, sha256=recipe.source_sha256)
        model.pedigree = Pedigree(
            ancestors=[_file_component(s.SOURCE_REF, f"{run.model.name} (fp32 source)", source, ComponentType.MACHINE_LEARNING_MODEL)]
        )
    return model


def _dataset_components(inputs: BomInputs) -> dict[str, tuple[Component, dict[str, Any]]]:
    """Calibration set of the recipe and evaluation sets of the runs, by bom-ref, each with its CycloneDX ``data``."""
    found: dict[str, tuple[Component, dict[str, Any]]] = {}
    recipe = inputs.recipe
    if recipe is not None and recipe.calibration_id:
        kinds = ",".join(recipe.calibration_kinds)
        found[s.CALIBRATION_REF] = _dataset(
            s.CALIBRATION_REF,
            recipe.calibration_id,
            "calibration",
            f"{recipe.calibration_rows} rows shaped like slice kinds {kinds}",
            {"dataset.kinds": kinds, "dataset.rows": str(recipe.calibration_rows)},
        )
    for run in inputs.runs:
        ev = run.evaluation
        ref = f"data:evaluation:{ev.dataset_id[:16]}" if ev is not None else ""
        if ev is None or ref in found:
            continue
        rows = json.dumps({sid: m.n for sid, m in ev.slices.items()}, sort_keys=True)
        found[ref] = _dataset(ref, ev.dataset_id, "evaluation", f"slices (rows) {rows}, metric {ev.metric}", {"dataset.slices": rows})
    return found


def _dataset(ref: str, dataset_id: str, role: str, detail: str, extra: dict[str, str]) -> tuple[Component, dict[str, Any]]:
    component = Component(
        type=ComponentType.DATA,
        name=f"{role} set {dataset_id[:12]}",
        bom_ref=ref,
        properties=_props({"dataset.id": dataset_id, "dataset.role": role, **extra}),
    )
    data = {
        "type": "dataset",
        "name": dataset_id,
        "description": f"{role} data, content ID {dataset_id} (edgeproof.data.ids.content_id): {detail}",
    }
    return component, data


def _runtime_components(runs: tuple[RunRecord, ...]) -> dict[str, Component]:
    """One ONNX Runtime component per version that ran a measured run, keyed by version."""
    found: dict[str, Component] = {}
    for run in runs:
        if run.kind != "measured":
            continue
        env = run.env
        found.setdefault(
            env.onnxruntime,
            Component(
                type=ComponentType.FRAMEWORK,
                name="onnxruntime",
                version=env.onnxruntime,
                bom_ref=f"runtime:onnxruntime@{env.onnxruntime}",
                properties=_props({"runtime.build": _build_info(run), "runtime.providers_available": ",".join(env.providers)}),
            ),
        )
    return found


def _build_info(run: RunRecord) -> str:
    why = "the run's environment fingerprint does not record the ONNX Runtime build"
    return run.env.extra.get("onnxruntime_build") or s.unavailable(why)


def _extra_matching(extra: dict[str, str], word: str) -> str | None:
    """Fingerprint extras whose key names ``word`` (``driver_nvidia``, ``compiler_onnxruntime_build``)
    and that were found, as ``key=value`` pairs; None when none was found."""
    found = [f"{k}={v}" for k, v in sorted(extra.items()) if word in k.lower() and not v.startswith("unavailable")]
    return "; ".join(found) or None


def _absent(extra: dict[str, str], word: str, fallback: str) -> str:
    """Why no ``word`` fact exists: the reasons the fingerprint gave, else ``fallback`` (older records)."""
    reasons = [
        v.removeprefix("unavailable:").strip() for k, v in sorted(extra.items()) if word in k.lower() and v.startswith("unavailable")
    ]
    return s.unavailable("; ".join(reasons) if reasons else fallback)


def runtime_properties(run: RunRecord) -> dict[str, str]:
    """Runtime, provider, compiler, driver, board and firmware versions a target ran with; unknown ones say why."""
    firmware = (run.target.firmware or {}).get("version")
    fw = str(firmware) if firmware is not None else s.unavailable("no firmware profile in the run record")
    if run.kind == "simulated":
        why = s.unavailable(f"simulated target, no runtime ran on the board (simulator host ran onnxruntime {run.env.onnxruntime})")
        return {
            "runtime.onnxruntime": why,
            "runtime.build": why,
            "runtime.execution_provider": why,
            "runtime.compiler": why,
            "runtime.driver": why,
            "firmware.version": fw,
        }
    env, provider = run.env, run.settings.provider
    on_cpu = " on the CPU" if provider == "CPUExecutionProvider" else ""
    extra = env.extra
    compiler = _extra_matching(extra, "compiler") or (
        f"onnxruntime build {extra['onnxruntime_build']}" if "onnxruntime_build" in extra else None
    )
    return {
        "runtime.onnxruntime": env.onnxruntime,
        "runtime.build": _build_info(run),
        "runtime.execution_provider": provider,
        "runtime.compiler": compiler or _absent(extra, "compiler", "no compiler version in the environment fingerprint"),
        "runtime.driver": _extra_matching(extra, "driver")
        or _absent(extra, "driver", f"no driver version in the environment fingerprint ({provider} runs{on_cpu})"),
        "platform.board": _extra_matching(extra, "board") or _absent(extra, "board", "no board model in the environment fingerprint"),
        "platform.kernel": extra.get("kernel_release") or env.os,
        "firmware.version": fw,
    }


def _firmware_component(target_id: str, run: RunRecord | None) -> Component | None:
    firmware = (run.target.firmware or {}) if run is not None else {}
    if firmware.get("version") is None:
        return None
    return Component(
        type=ComponentType.FIRMWARE,
        name=f"{target_id} firmware",
        version=str(firmware["version"]),
        bom_ref=f"firmware:{target_id}",
        properties=_props({"firmware.profile": json.dumps(firmware, sort_keys=True, default=str)}),
    )


def _target_component(target_id: str, run: RunRecord | None, verdict: Verdict | None) -> Component:
    props: dict[str, str] = {}
    if run is None:
        props["target.kind"] = s.unavailable("no run record for this target")
    else:
        props |= {
            "target.kind": run.target.kind,
            "target.profile_version": run.target.profile_version or s.NOT_APPLICABLE,
            "target.power_mode": run.target.power_mode or s.NOT_APPLICABLE,
            "run.id": run.run_id,
            "run.kind": run.kind,
            "run.created_at": run.created_at,
            "run.scenario": run.scenario.name if run.scenario.rate_hz is None else f"{run.scenario.name}:{run.scenario.rate_hz:g}",
            "run.settings": run.settings.model_dump_json(),
            "env": run.env.model_dump_json(),
            **runtime_properties(run),
        }
    props |= _gate_properties(verdict)
    return Component(type=ComponentType.DEVICE, name=target_id, bom_ref=s.target_ref(target_id), properties=_props(props))


def _gate_properties(verdict: Verdict | None) -> dict[str, str]:
    if verdict is None:
        return {"gate.verdict": "not gated: no verdict given for this target"}
    clauses = [c.model_dump(mode="json", include=set(StatedClause.model_fields)) for c in verdict.clauses]
    return {
        "gate.verdict": verdict.outcome,
        "gate.binding_clause": verdict.binding_clause or s.NOT_APPLICABLE,
        "gate.clauses": json.dumps(clauses, sort_keys=True),
        "gate.waivers_applied": json.dumps([w.model_dump(mode="json") for w in verdict.waivers_applied], sort_keys=True),
        "gate.regressions": json.dumps([r.model_dump(mode="json") for r in verdict.regressions], sort_keys=True),
    }


def recipe_properties(recipe: Recipe | None, source: FileRef | None) -> dict[str, str]:
    """The quantization recipe field by field (``n/a`` where a field does not apply to its precision)."""
    if recipe is None:
        return {"recipe": "none: the model was measured as given, not built from a recipe"}

    def text(value: Any) -> str:
        if value is None or value == () or value == "":
            return s.NOT_APPLICABLE
        if isinstance(value, tuple):
            return ",".join(str(v) for v in value)
        return str(value).lower() if isinstance(value, bool) else str(value)

    excluded = [n.model_dump() for n in recipe.excluded_nodes]
    return {
        "recipe": json.dumps(recipe.model_dump(mode="json"), sort_keys=True),
        "recipe.label": recipe.label(),
        "recipe.precision": recipe.precision,
        "recipe.format": text(recipe.format),
        "recipe.per_channel": text(recipe.per_channel),
        "recipe.calibrator": text(recipe.calibrator),
        "recipe.activation_type": text(recipe.activation_type),
        "recipe.weight_type": text(recipe.weight_type),
        "recipe.excluded_nodes": json.dumps(excluded) if excluded else "none",
        "recipe.calibration_id": text(recipe.calibration_id),
        "recipe.calibration_kinds": text(recipe.calibration_kinds),
        "recipe.calibration_rows": text(recipe.calibration_rows),
        "recipe.source_sha256": text(recipe.source_sha256),
        "recipe.source_path": str(source.path) if source and source.path else s.unavailable("fp32 source model file not found"),
        "recipe.steps": text(recipe.steps),
    }


def _model_card(inputs: BomInputs, dataset_refs: list[str]) -> dict[str, Any]:
    figures = {run.target.id: run_figures(run) for run in inputs.runs}
    properties = recipe_properties(inputs.recipe, inputs.source)
    metrics: list[dict[str, Any]] = []
    for target_id in sorted(figures):
        for key, stated in figures[target_id].items():
            properties[s.figure_property(target_id, key)] = json.dumps(stated.as_json(), sort_keys=True)
            metrics.append(_metric(target_id, key, stated))
    card: dict[str, Any] = {
        "bom-ref": s.MODEL_CARD_REF,
        "quantitativeAnalysis": {"performanceMetrics": metrics},
        "properties": [{"name": s.NS + k, "value": v} for k, v in properties.items()],
    }
    if dataset_refs:
        card["modelParameters"] = {"datasets": [{"ref": ref} for ref in dataset_refs]}
    considerations = {"technicalLimitations": _caveats(inputs, figures), "performanceTradeoffs": _tradeoffs(inputs.recipe)}
    considerations = {k: v for k, v in considerations.items() if v}
    if considerations:
        card["considerations"] = considerations
    return card


def _metric(target_id: str, key: str, stated: Stated) -> dict[str, Any]:
    """One performance metric; the type names the figure and its provenance, the slice names target (and data slice)."""
    fig = stated.figure
    slice_name = target_id
    name = key
    if key.startswith("slices."):
        _, data_slice, name = key.split(".", 2)
        slice_name = f"{target_id}/{data_slice}"
    metric: dict[str, Any] = {
        "type": f"{name} [{fig.unit}; {fig.provenance}]",
        "value": "unavailable" if fig.value is None else repr(fig.value),
        "slice": slice_name,
    }
    if fig.interval is not None:
        metric["confidenceInterval"] = {"lowerBound": repr(fig.interval[0]), "upperBound": repr(fig.interval[1])}
    return metric


def _caveats(inputs: BomInputs, figures: dict[str, dict[str, Stated]]) -> list[str]:
    """What a reader must not assume: simulated targets, unavailable figures, unverified or waived clauses."""
    caveats: list[str] = []
    verdicts = {v.target: v for v in inputs.verdicts}
    for run in sorted(inputs.runs, key=lambda r: r.target.id):
        tid = run.target.id
        if run.kind == "simulated":
            caveats.append(f"{tid}: simulated ({run.latency_provenance}), never measured on the board")
            if run.evaluation is not None:
                caveats.append(f"{tid}: accuracy measured with ONNX Runtime on the host, not on the board")
        if run.fitness is not None and not run.fitness.fit:
            failed = ", ".join(c.name for c in run.fitness.checks if not c.ok)
            caveats.append(f"{tid}: the measuring host failed its fitness checks ({failed})")
        for warning in run.latency.warnings:
            caveats.append(f"{tid}: latency: {warning}")
        for key, stated in figures[tid].items():
            if stated.figure.value is None:
                caveats.append(f"{tid}: {key} unavailable ({stated.figure.provenance.split(':', 1)[1]})")
        if tid not in verdicts:
            caveats.append(f"{tid}: not gated (no verdict given)")
    for tid, verdict in sorted(verdicts.items()):
        for clause in verdict.clauses:
            if clause.status in ("unverified", "waived"):
                caveats.append(f"{tid}: clause {clause.clause} {clause.status}" + (f" ({clause.note})" if clause.note else ""))
    return caveats


def _tradeoffs(recipe: Recipe | None) -> list[str]:
    if recipe is None:
        return []
    lines = [f"variant {recipe.label()}"]
    for node in recipe.excluded_nodes:
        lines.append(f"node {node.name} kept in float ({node.reason}{': ' + node.note if node.note else ''})")
    return lines
