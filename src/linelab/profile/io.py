"""Reading and writing profiles: YAML or TOML, errors that name the file and the field."""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from linelab.errors import UserError
from linelab.profile.schema import Profile

PROFILE_FILE = "profile.yaml"
_NAMES = (PROFILE_FILE, "profile.yml", "profile.toml")


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_profile(data: Any, origin: str = "profile") -> Profile:
    """A Profile from parsed YAML/TOML data; a UserError naming `origin` and each bad field."""
    if not isinstance(data, dict):
        raise UserError(f"{origin}: a profile is a mapping (sources, line, actions, recipe, control)")
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise UserError(f"{origin}: the profile is not valid:\n" + "\n".join(lines)) from None


def load_profile(path: str | Path) -> Profile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{p}: no such profile file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{p}: not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise UserError(f"{p}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    return parse_profile(data, str(p))


def dump_profile(profile: Profile) -> str:
    data = profile.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)


def save_profile(profile: Profile, path: str | Path) -> Path:
    """Write atomically: a crash never leaves half a profile."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".profile-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(dump_profile(profile))
    os.replace(tmp, p)
    return p


def profile_path(workspace: str | Path) -> Path | None:
    """The workspace's profile file, if it has one."""
    root = Path(workspace)
    return next((root / n for n in _NAMES if (root / n).is_file()), None)


def workspace_profile(workspace: str | Path) -> Profile | None:
    p = profile_path(workspace)
    return load_profile(p) if p is not None else None


def require_profile(workspace: str | Path) -> Profile:
    """The workspace's profile, or a UserError saying how to give the workspace one."""
    profile = workspace_profile(workspace)
    if profile is None:
        raise UserError(f"the workspace {workspace} has no line profile ({PROFILE_FILE}): LineLab needs it to know "
                        "what the line accepts; `linelab profile init` drafts one from the data")
    return profile
