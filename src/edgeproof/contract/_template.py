"""The commented starter contract that `edgeproof init` writes."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from edgeproof.errors import ContractError
from edgeproof.records import write_atomic


def template_text() -> str:
    """The starter contract: every section, commented, loadable as it stands."""
    return resources.files("edgeproof").joinpath("templates/contract.toml").read_text(encoding="utf-8")


def write_template(path: str | Path) -> Path:
    """Write the starter contract to ``path``; an existing file is never overwritten (ContractError)."""
    path = Path(path)
    if path.exists():
        raise ContractError(f"{path}: already exists; edgeproof will not overwrite it (remove it or choose another path)")
    return write_atomic(path, template_text())
