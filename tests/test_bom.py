"""Inference BOM: CycloneDX 1.6 ML-BOM from real runs, signing, verification against tampering, rebuild, CLI exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from typer.testing import CliRunner

from conftest import DIGITS_CONTRACT, DIGITS_MODEL, run_cli, variant_ref
from edgeproof.bom import (
    NO_RECIPE,
    KeyFileError,
    StatedClause,
    build_bom,
    generate_keypair,
    read_bom,
    rebuild_variant,
    sign_bom,
    signature_path,
    verify_bom,
)
from edgeproof.cli import app
from edgeproof.contract import evaluate, load_contract
from edgeproof.data import calibration_set, load_dataset
from edgeproof.errors import ModelError, RecordError
from edgeproof.records import Verdict, load_record, save_record
from edgeproof.simulate.run import simulate_run
from edgeproof.variants import ExcludedNode, Recipe, build_variant


def _profile(model: Path, out: Path, home: Path) -> Path:
    result = run_cli(
        "profile",
        str(model),
        "--json",
        str(out),
        "--sessions",
        "1",
        "--samples",
        "50",
        "--time-budget",
        "5",
        env={"EDGEPROOF_HOME": str(home)},
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A real static INT8 variant of the digits model, profiled by the CLI, judged against the digits contract."""
    work = tmp_path_factory.mktemp("release")
    contract = load_contract(DIGITS_CONTRACT)
    dataset = load_dataset(str(contract.data.entry), contract.path.parent)
    calibration = calibration_set(dataset, contract.slice_specs(), ("nominal",))
    variant = build_variant(DIGITS_MODEL, Recipe(precision="int8-static", per_channel=True), calibration, work / "cache")
    measured = load_record(_profile(Path(variant.path), work / "raw.json", work / "home"))
    run = measured.model_copy(update={"variant": variant_ref(variant)})
    run_path = save_record(run, work / "run.json")
    verdict_path = save_record(evaluate(contract, run), work / "verdict.json")
    return {"work": work, "variant": variant, "run": run_path, "verdict": verdict_path, "contract": contract, "calibration": calibration}


@pytest.fixture(scope="module")
def bom_path(release):
    out = release["work"] / "bom.json"
    build_bom([release["run"]], out, [release["verdict"]], DIGITS_CONTRACT)
    return out


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keypair(tmp_path_factory.mktemp("keys") / "k")


# Written by edgeproof before the BOM facts were typed: a signed BOM of the digits model as given, a static INT8 one.
V1 = Path(__file__).parent / "data" / "release_v1"


def _props(items: list[dict]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in items}


def test_bom_validates_as_cyclonedx_1_6_and_holds_model_recipe_contract(bom_path, release):
    text = bom_path.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    doc = json.loads(text)
    assert doc["specVersion"] == "1.6"
    assert _props(doc["metadata"]["properties"])["edgeproof:bom.schema_validation"].startswith("valid:")
    model = doc["metadata"]["component"]
    assert model["type"] == "machine-learning-model"
    assert model["hashes"] == [{"alg": "SHA-256", "content": release["variant"].sha256}]
    card = _props(model["modelCard"]["properties"])
    assert card["edgeproof:recipe.precision"] == "int8-static"
    assert card["edgeproof:recipe.calibrator"] == "minmax"
    assert card["edgeproof:recipe.per_channel"] == "true"
    assert card["edgeproof:recipe.excluded_nodes"] == "none"
    assert card["edgeproof:recipe.calibration_id"] == release["variant"].recipe.calibration_id
    assert card["edgeproof:recipe.source_path"] == str(DIGITS_MODEL.resolve())
    contract_sha = hashlib.sha256(DIGITS_CONTRACT.read_bytes()).hexdigest()
    assert _props(doc["metadata"]["properties"])["edgeproof:contract.sha256"] == contract_sha
    by_ref = {c["bom-ref"]: c for c in doc["components"]}
    assert by_ref["contract"]["hashes"][0]["content"] == contract_sha
    assert by_ref["data:calibration"]["data"][0]["name"] == release["variant"].recipe.calibration_id
    # the fp32 model the variant came from is its pedigree
    assert model["pedigree"]["ancestors"][0]["hashes"][0]["content"] == release["variant"].recipe.source_sha256


def test_bom_states_runtime_firmware_and_gate_per_target_without_inventing(bom_path, release):
    doc = json.loads(bom_path.read_text())
    host = _props({c["bom-ref"]: c for c in doc["components"]}["target:host"]["properties"])
    assert host["edgeproof:runtime.onnxruntime"] == ort.__version__
    assert host["edgeproof:runtime.execution_provider"] == "CPUExecutionProvider"
    assert host["edgeproof:runtime.build"] == ort.get_build_info().removeprefix("ORT Build Info: ")
    assert host["edgeproof:runtime.driver"].startswith("unavailable:")
    assert host["edgeproof:firmware.version"].startswith("unavailable:")
    verdict = load_record(release["verdict"], type(evaluate(release["contract"], load_record(release["run"]))))
    assert host["edgeproof:gate.verdict"] == verdict.outcome
    clauses = {c["clause"]: c["status"] for c in json.loads(host["edgeproof:gate.clauses"])}
    assert clauses == {c.clause: c.status for c in verdict.clauses}


def test_a_gate_json_with_a_verdict_per_target_is_read_as_those_verdicts(release, tmp_path):
    from edgeproof.gate_output import to_json

    verdict = load_record(release["verdict"], type(evaluate(release["contract"], load_record(release["run"]))))
    gate_json = tmp_path / "gate.json"
    gate_json.write_text(to_json([verdict]))
    facts = build_bom([release["run"]], tmp_path / "bom.json", [gate_json], DIGITS_CONTRACT)
    assert facts.targets["host"].props["gate.verdict"] == verdict.outcome
    gate_json.write_text(json.dumps({"passed": True, "verdicts": [{"schema_version": "edgeproof.verdict/0"}]}))
    with pytest.raises(RecordError, match=r"gate.json: verdicts.0: not an edgeproof.verdict/"):
        build_bom([release["run"]], tmp_path / "bom2.json", [gate_json], DIGITS_CONTRACT)
    assert not (tmp_path / "bom2.json").exists()


def test_simulated_board_states_firmware_and_says_it_was_never_measured(release, tmp_path):
    variant = release["variant"]
    simulated = simulate_run(variant.path, "raspberry-pi-5", sessions=2, samples_per_session=50)
    simulated = simulated.model_copy(update={"variant": variant_ref(variant)})
    board_run = save_record(simulated, tmp_path / "rpi5.json")
    facts = build_bom([release["run"], board_run], tmp_path / "bom.json", [release["verdict"]], DIGITS_CONTRACT)
    board = facts.targets["raspberry-pi-5"]
    assert board.kind == "simulated"
    assert board.props["firmware.version"] == simulated.target.firmware["version"]
    assert board.props["runtime.onnxruntime"].startswith("unavailable:simulated target")
    assert board.props["gate.verdict"].startswith("not gated")
    assert board.figures["p95_ms"].figure.provenance.startswith("simulated:raspberry-pi-5@")
    assert board.figures["energy_mj_per_inference"].figure.provenance == simulated.energy_mj_per_inference.provenance
    assert any(c.startswith("raspberry-pi-5: simulated (simulated:raspberry-pi-5@") for c in facts.caveats)
    firmware = {c["bom-ref"]: c for c in facts.doc["components"]}["firmware:raspberry-pi-5"]
    assert firmware["type"] == "firmware" and firmware["version"] == simulated.target.firmware["version"]
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str((tmp_path / "bom.json").read_text()) is None


def test_float_kept_nodes_are_listed_with_their_reasons(release, tmp_path):
    kept = ExcludedNode(name="/conv1/conv/Conv", reason="accuracy", note="first conv sees raw pixels")
    recipe = Recipe(precision="int8-static", per_channel=True, excluded_nodes=(kept,))
    variant = build_variant(DIGITS_MODEL, recipe, release["calibration"], tmp_path / "cache")
    simulated = simulate_run(variant.path, "raspberry-pi-5", sessions=2, samples_per_session=50)
    run = save_record(simulated.model_copy(update={"variant": variant_ref(variant)}), tmp_path / "run.json")
    facts = build_bom([run], tmp_path / "bom.json")
    assert json.loads(facts.recipe_props["recipe.excluded_nodes"]) == [kept.model_dump()]
    assert facts.recipe_props["recipe.label"].endswith("+1 float")
    tradeoffs = facts.doc["metadata"]["component"]["modelCard"]["considerations"]["performanceTradeoffs"]
    assert "node /conv1/conv/Conv kept in float (accuracy: first conv sees raw pixels)" in tradeoffs
    assert facts.contract_sha256.startswith("unavailable:")


def test_read_back_recipe_and_clauses_are_the_records_that_went_in(bom_path, release):
    facts = read_bom(bom_path)
    verdict = load_record(release["verdict"], Verdict)
    assert facts.recipe == release["variant"].recipe and facts.recipe_label == release["variant"].recipe.label()
    host = facts.targets["host"]
    assert [c.clause for c in host.clauses] == [c.clause for c in verdict.clauses]
    assert host.clauses[0] == StatedClause.model_validate(verdict.clauses[0].model_dump(include=set(StatedClause.model_fields)))
    assert host.verdict == verdict.outcome and host.gated and host.run_kind == "measured"
    assert facts.sha256 == hashlib.sha256(bom_path.read_bytes()).hexdigest()


def test_boms_written_before_the_facts_were_typed_still_read_and_verify():
    """BOMs built and signed by the version before typed BOM facts: `bom verify` still passes, the facts read typed."""
    public = V1 / "edgeproof-ed25519.pub.pem"
    code, out, err = _invoke("bom", "verify", str(V1 / "a.bom.json"), "--pub", str(public), "--model", str(DIGITS_MODEL))
    assert code == 0 and "signature OK" in out, err
    given, int8 = read_bom(V1 / "a.bom.json"), read_bom(V1 / "b.bom.json")
    assert given.recipe is None and given.recipe_label == NO_RECIPE
    assert int8.recipe is not None and int8.recipe.precision == "int8-static" and int8.recipe.per_channel
    regressions = int8.targets["host"].regressions
    assert [r.clause for r in regressions][:3] == ["regression.p50", "regression.p95", "regression.p99"]
    assert all(isinstance(c, StatedClause) for c in int8.targets["host"].clauses)
    assert given.targets["host"].verdict == "pass" and int8.targets["host"].binding_clause == "model.inputs"


def test_every_figure_carries_its_provenance_and_unavailable_is_never_zero(bom_path, release):
    run = load_record(release["run"])
    facts = read_bom(bom_path)
    figures = facts.targets["host"].figures
    assert figures["p95_ms"].figure.value == pytest.approx(run.latency.p95_ms)
    assert figures["p95_ms"].figure.interval == pytest.approx((run.latency.ci["p95"].low, run.latency.ci["p95"].high))
    assert figures["p95_ms"].figure.provenance == run.latency_provenance
    assert figures["energy_mj_per_inference"].figure.provenance == run.energy_mj_per_inference.provenance
    if not run.energy_mj_per_inference.available:
        assert figures["energy_mj_per_inference"].figure.value is None
    metrics = facts.doc["metadata"]["component"]["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]
    p95 = next(m for m in metrics if m["type"].startswith("p95_ms"))
    assert run.latency_provenance in p95["type"] and p95["slice"] == "host"
    assert float(p95["confidenceInterval"]["upperBound"]) == pytest.approx(run.latency.ci["p95"].high)
    for metric in metrics:
        assert "[" in metric["type"] and any(k in metric["type"] for k in ("measured:", "simulated:", "estimated:", "unavailable:"))


def test_signed_bom_verifies(bom_path, keys):
    private, public = keys
    sig = sign_bom(bom_path, private)
    assert sig == signature_path(bom_path)
    result = verify_bom(bom_path, public)
    assert result.ok, result.message


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_byte_changed_in_bom_or_model_fails_verify(release, keys, tmp_path):
    private, public = keys
    model = tmp_path / "model.onnx"
    shutil.copyfile(release["variant"].path, model)
    bom = tmp_path / "bom.json"
    build_bom([release["run"]], bom, [release["verdict"]], DIGITS_CONTRACT, model)
    sign_bom(bom, private)
    assert verify_bom(bom, public).ok

    original = bom.read_bytes()
    sha_at = original.index(release["variant"].sha256.encode())
    name_at = original.index(b'"name":"edgeproof:')
    for offset in (sha_at, sha_at + 63, name_at + 3, len(original) // 2):
        _flip(bom, offset)
        result = verify_bom(bom, public)
        assert not result.ok and "changed since it was signed" in result.message
        bom.write_bytes(original)
    # a flip that breaks the JSON is caught by the digest before anything parses it
    _flip(bom, 0)
    result = verify_bom(bom, public)
    assert not result.ok and "changed since it was signed" in result.message
    bom.write_bytes(original)
    assert verify_bom(bom, public).ok

    _flip(model, model.stat().st_size // 2)
    result = verify_bom(bom, public)
    assert not result.ok and "model changed since it was signed" in result.message
    # the model's old bytes elsewhere still verify through --model
    assert verify_bom(bom, public, model_path=release["variant"].path).ok


def test_wrong_key_and_altered_signature_fail(bom_path, keys, tmp_path):
    private, public = keys
    sign_bom(bom_path, private)
    _, other_public = generate_keypair(tmp_path / "other")
    result = verify_bom(bom_path, other_public)
    assert not result.ok and "signed by another key" in result.message

    sig_file = signature_path(bom_path)
    sig = json.loads(sig_file.read_text())
    forged = tmp_path / "forged.sig"
    forged.write_text(json.dumps({**sig, "model_sha256": "0" * 64}))
    result = verify_bom(bom_path, public, sig_path=forged)
    assert not result.ok and "signature file was altered" in result.message


def test_sign_refuses_a_reformatted_bom_and_a_changed_model(bom_path, keys, tmp_path):
    private, _ = keys
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(bom_path.read_text()), indent=2))
    with pytest.raises(RecordError, match="canonical form"):
        sign_bom(pretty, private)
    with pytest.raises(ModelError, match="is not the model"):
        sign_bom(bom_path, private, model_path=DIGITS_MODEL)


def test_keygen_writes_private_key_0600_and_never_overwrites(tmp_path):
    private, public = generate_keypair(tmp_path / "keys")
    assert os.stat(private).st_mode & 0o777 == 0o600
    assert b"BEGIN PUBLIC KEY" in public.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        generate_keypair(tmp_path / "keys")


def test_build_refuses_inputs_that_disagree(release, tmp_path):
    with pytest.raises(ModelError, match="is not the model the runs measured"):
        build_bom([release["run"]], tmp_path / "b.json", model_path=DIGITS_MODEL)
    verdict = json.loads(Path(release["verdict"]).read_text())
    other = tmp_path / "verdict.json"
    other.write_text(json.dumps({**verdict, "contract_sha256": "f" * 64}))
    with pytest.raises(RecordError, match="not the given contract"):
        build_bom([release["run"]], tmp_path / "b.json", [other], DIGITS_CONTRACT)
    fp32 = save_record(simulate_run(DIGITS_MODEL, "raspberry-pi-5", sessions=2, samples_per_session=50), tmp_path / "fp32.json")
    with pytest.raises(RecordError, match="a BOM describes one model"):
        build_bom([release["run"], fp32], tmp_path / "b.json")
    assert not (tmp_path / "b.json").exists()


def test_rebuild_reproduces_the_int8_variant(bom_path, tmp_path):
    result = rebuild_variant(bom_path, out=tmp_path / "rebuilt.onnx")
    assert not result.identity
    assert result.reproduced, result.message
    assert result.rebuilt_sha256 == result.expected_sha256 == hashlib.sha256((tmp_path / "rebuilt.onnx").read_bytes()).hexdigest()
    code, out, _ = _invoke("bom", "rebuild", str(bom_path))
    assert code == 0 and "reproduced: same sha256" in out


def test_rebuild_of_an_fp32_reference_is_the_identity(release, tmp_path):
    variant = build_variant(DIGITS_MODEL, Recipe(precision="fp32"), cache_dir=tmp_path / "cache")
    run = load_record(release["run"])
    ref = run.model_copy(
        update={
            "variant": variant_ref(variant),
            "model": run.model.model_copy(update={"sha256": variant.sha256, "path": variant.path, "size_bytes": variant.size_bytes}),
        }
    )
    bom = tmp_path / "fp32.json"
    build_bom([save_record(ref, tmp_path / "fp32-run.json")], bom)
    result = rebuild_variant(bom)
    assert result.identity and result.reproduced
    assert "fp32 reference: rebuild is the identity" in result.message


def test_rebuild_refuses_a_source_model_the_recipe_was_not_built_from(bom_path, release):
    with pytest.raises(ModelError, match="is not the source the recipe was built from"):
        rebuild_variant(bom_path, source=release["variant"].path)


# --- command line -------------------------------------------------------------------------------


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _invoke(*args: str) -> tuple[int, str, str]:
    """The typer app in-process (fast); the subprocess test below covers the real entry point."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_cli_build_sign_verify_tampered_exit_1(release, tmp_path):
    bom, keydir = tmp_path / "bom.json", tmp_path / "keys"
    built = run_cli(
        "bom",
        "build",
        "--run",
        str(release["run"]),
        "--verdict",
        str(release["verdict"]),
        "--contract",
        str(DIGITS_CONTRACT),
        "-o",
        str(bom),
    )
    assert built.returncode == 0, built.stderr
    assert _invoke("keygen", "-o", str(keydir))[0] == 0
    private, public = keydir / "edgeproof-ed25519.pem", keydir / "edgeproof-ed25519.pub.pem"
    assert _invoke("bom", "sign", str(bom), "--key", str(private))[0] == 0
    code, out, _ = _invoke("bom", "verify", str(bom), "--pub", str(public))
    assert code == 0 and "signature OK" in out

    _flip(bom, bom.read_bytes().index(release["variant"].sha256.encode()) + 10)
    tampered = run_cli("bom", "verify", str(bom), "--pub", str(public))
    assert tampered.returncode == 1
    assert "changed since it was signed" in _one_line(tampered.stderr)


def test_cli_unusable_input_is_one_line_exit_2(bom_path, keys, tmp_path):
    private, public = keys
    sign_bom(bom_path, private)
    code, _, err = _invoke("bom", "verify", str(tmp_path / "nope.json"), "--pub", str(public))
    assert code == 2 and "no such file" in _one_line(err)
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello\n")
    code, _, err = _invoke("bom", "verify", str(bom_path), "--pub", str(not_a_key))
    assert code == 2 and "not a PEM public key" in _one_line(err)
    rsa_pem = tmp_path / "rsa.pem"
    rsa_pem.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    code, _, err = _invoke("bom", "sign", str(bom_path), "--key", str(rsa_pem))
    assert code == 2 and "not an Ed25519 private key" in _one_line(err)
    code, _, err = _invoke("keygen", "-o", str(private.parent))
    assert code == 2 and "already exists" in _one_line(err)
    # another file offered under the signature is not bad input but a failed verification
    code, out, err = _invoke("bom", "verify", str(DIGITS_CONTRACT), "--pub", str(public), "--sig", str(signature_path(bom_path)))
    assert code == 1 and "changed since it was signed" in out + err
    code, _, err = _invoke("bom", "verify", str(bom_path), "--pub", str(public), "--sig", str(DIGITS_CONTRACT))
    assert code == 2 and "not JSON" in _one_line(err)


def test_cli_bad_run_records_are_one_line_exit_2(release, tmp_path):
    good = json.loads(Path(release["run"]).read_text())
    cases = {
        "old-schema.json": (json.dumps({**good, "schema_version": "edgeproof.run/0"}), "schema_version"),
        "missing-key.json": (json.dumps({k: v for k, v in good.items() if k != "latency"}), "latency"),
        "not-json.json": ("this is not JSON {", "not JSON"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        code, _, err = _invoke("bom", "build", "--run", str(path), "-o", str(tmp_path / "out.json"))
        assert code == 2, (name, err)
        line = _one_line(err)
        assert name in line and expected in line
    assert not (tmp_path / "out.json").exists()
