"""The board catalog: TOML files, one per board, validated, every number traced to a source."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edgeproof.errors import TargetError
from edgeproof.targets.spec import Target

CATALOG_DIR = Path(__file__).parent / "catalog"

M = TypeVar("M", bound=BaseModel)

# Keys that describe rather than quantify; they need no source.
_DESCRIPTIVE = {"id", "name", "version", "description", "simulated", "file", "board", "default_power_mode", "kind", "cooling", "storage"}


def _numeric_paths(data: Any, prefix: str = "") -> Iterable[str]:
    """Dotted paths of every number and op list in a TOML table (what must carry a source)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "sources" or key in _DESCRIPTIVE:
                continue
            yield from _numeric_paths(value, f"{prefix}{key}.")
    elif isinstance(data, list) or (isinstance(data, (int, float)) and not isinstance(data, bool)):
        yield prefix.rstrip(".")


def _covered(path: str, sources: dict[str, str]) -> bool:
    parts = path.split(".")
    return any(".".join(parts[:i]) in sources for i in range(1, len(parts) + 1))


def _check_sources(path: Path, raw: dict[str, Any]) -> None:
    sources = raw["sources"]
    for key, text in sources.items():
        text = str(text).strip()
        if not (text.startswith(("assumed:", "derived:")) or "http" in text):
            raise TargetError(f"{path}: sources.{key}: give a URL, 'derived: <how>' or 'assumed: <why>' (got {text!r})")
    for field in _numeric_paths(raw):
        if not _covered(field, sources):
            raise TargetError(f"{path}: sources: no source for {field} (cite a datasheet URL or write 'assumed: <why>')")


def _first_error(path: Path, exc: ValidationError) -> TargetError:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    return TargetError(f"{path}: {where}: {msg}")


def parse_toml_model(path: Path, cls: type[M], require_sources: bool = True) -> M:
    """Read ``path`` as TOML into ``cls``; every failure is one TargetError naming file and field."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise TargetError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{path}: not valid TOML ({exc})") from None
    if require_sources and not isinstance(raw.get("sources"), dict):
        raise TargetError(f"{path}: sources: missing [sources] table (every number needs a citation or 'assumed: <why>')")
    try:
        model = cls.model_validate({**raw, "file": str(path)})
    except ValidationError as exc:
        raise _first_error(path, exc) from None
    if require_sources:
        _check_sources(path, raw)
    return model


def load_target_file(path: str | Path) -> Target:
    """Load one board TOML (validated, sources checked)."""
    return parse_toml_model(Path(path), Target)


def load_catalog(extra_dirs: Iterable[str | Path] = ()) -> dict[str, Target]:
    """Every board in the packaged catalog plus ``extra_dirs``, keyed by id."""
    targets: dict[str, Target] = {}
    for directory in [CATALOG_DIR, *map(Path, extra_dirs)]:
        if not directory.is_dir():
            raise TargetError(f"{directory}: catalog directory does not exist")
        for path in sorted(directory.glob("*.toml")):
            target = load_target_file(path)
            if target.id in targets:
                raise TargetError(f"{path}: id {target.id!r} is already defined in {targets[target.id].file}")
            if not target.simulated:
                raise TargetError(f"{path}: simulated: catalog boards are simulated profiles; set simulated = true")
            targets[target.id] = target
    return targets


def get_target(target_id: str, extra_dirs: Iterable[str | Path] = ()) -> Target:
    """One board by id, or by a prefix that names exactly one board at a word boundary
    (``jetson-orin-nano`` for ``jetson-orin-nano-8gb``); otherwise TargetError listing the known ones."""
    catalog = load_catalog(extra_dirs)
    if target_id in catalog:
        return catalog[target_id]
    matches = sorted(t for t in catalog if t.startswith(f"{target_id}-"))
    if len(matches) == 1:
        return catalog[matches[0]]
    known = ", ".join(sorted(catalog))
    if matches:
        raise TargetError(f"target {target_id!r} is ambiguous: it could be {', '.join(matches)}")
    raise TargetError(f"unknown target {target_id!r}; known targets: {known} (and 'host')")
