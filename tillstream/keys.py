"""Secrets `make run` generates and keeps: in `<data>/secrets/` (0700), one file each (0600).

Each file is created with its final mode (never written world-readable, then tightened), and
a value shorter than MIN_KEY_LENGTH characters is refused, given or kept.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from shared.service_access import MIN_KEY_LENGTH


def secrets_dir(data_dir: Path) -> Path:
    """The folder of the generated secrets, created 0700."""
    folder = data_dir / "secrets"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        if stat.S_IMODE(folder.stat().st_mode) != 0o700:
            folder.chmod(0o700)  # tightened, never loosened
    return folder


def keep(path: Path, value: str | None = None) -> str:
    """The secret kept in `path`, created 0600 (with `value`, or 256 random bits) if missing."""
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as kept:
            kept.write(value or secrets.token_hex(32))
    kept_value = path.read_text().strip()
    if len(kept_value) < MIN_KEY_LENGTH:
        raise SystemExit(f"tillstream: refusing to start: {path} holds a secret shorter than {MIN_KEY_LENGTH}"
                         f" characters (delete it to have a new one generated)")
    return kept_value


def kept_secret(data_dir: Path, variable: str, file_name: str) -> str:
    """The variable's value, or the secret kept in `<data>/secrets/<file_name>`. A file an
    earlier version kept in the data folder itself (written 0644, then chmod-ed) is moved."""
    given = os.environ.get(variable)
    if given:
        if len(given) < MIN_KEY_LENGTH:
            raise SystemExit(f"tillstream: refusing to start: {variable} is shorter than {MIN_KEY_LENGTH} characters")
        return given
    path = secrets_dir(data_dir) / file_name
    legacy = data_dir / file_name
    value = keep(path, legacy.read_text().strip() if legacy.exists() and not path.exists() else None)
    legacy.unlink(missing_ok=True)
    return value
