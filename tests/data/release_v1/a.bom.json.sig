{
  "algorithm": "Ed25519",
  "bom_sha256": "0f314a970e4b7235263cff86bb7d2b2772f718b2324901ee9550cf3c5e5a3072",
  "canonical_form": "JSON, keys sorted, separators ',' ':', UTF-8, no trailing newline",
  "format": "edgeproof.bom-signature/1",
  "key_id": "13d8d74f169633fe",
  "model_path": "/work/main/examples/digits/model.onnx",
  "model_sha256": "263ed867cfaae0f9e54a23c8c2a0b411890b4c221be26b9ef0d69f45b68f542a",
  "public_key": "yji43S5xLIsNo9auBp6Ia++jvLTdrpQosckpJluNNWw=",
  "signature": "fEuhmcttDKkcncY4e5Ku7b50BO0MGJ4LD2Fm4Kk3h4OBp3gzTyT8hM6LcySG3aBmoEqUYTv8H4lKo0jSwGWjDg==",
  "signed_at": "2026-12-02T04:39:25+00:00"
}
