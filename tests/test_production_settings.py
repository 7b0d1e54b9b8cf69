"""Issue #23, point 6: a production start refuses unsafe settings. Each refusal is a real
start of a real process: a non-zero exit and one clear line, before anything listens."""
from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest

from tillstream.stack import free_port

ROOT = Path(__file__).resolve().parent.parent
DEVELOPMENT = ("TILLSTREAM_DEVELOPMENT", "TILLSTREAM_PAYMENT_GATEWAY", "TILLSTREAM_CHAOS")
STRONG = "k" * 40
OTHER_STRONG = "o" * 40


@pytest.fixture
def scratch():
    """A folder of its own under the system's temporary folder (pytest's tmp_path sits in a
    0700 folder of root's, which an unprivileged user cannot enter), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="tillstream-production-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def production_env(**settings: str) -> dict[str, str]:
    """The suite's environment without its development settings, plus `settings`."""
    env = {name: value for name, value in os.environ.items() if name not in DEVELOPMENT}
    return {**env, "TILLSTREAM_ID_SECRET": STRONG, "TILLSTREAM_ADMIN_KEY": STRONG, "TILLSTREAM_GATEWAY_KEY": STRONG,
            "TILLSTREAM_OPERATOR_KEY": OTHER_STRONG, "TILLSTREAM_INTERNAL_LISTEN": f"127.0.0.1:{free_port()}",
            **settings}


def start(factory: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uvicorn", "--factory", factory, "--port", str(free_port()),
                           "--log-level", "warning"], env=env, capture_output=True, text=True, timeout=60)


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result
    assert len(lines) == 1 and lines[0].startswith("tillstream: refusing to start:"), result.stderr
    assert all(word in lines[0] for word in words), lines[0]


@pytest.mark.parametrize("factory", ["services.payment.app:create_app", "tillstream.host:create_app"])
@pytest.mark.parametrize("gateway", [None, "test", "stripe-maybe"])
def test_a_production_start_without_a_real_payment_gateway_refuses(factory, gateway):
    env = production_env(**({"TILLSTREAM_PAYMENT_GATEWAY": gateway} if gateway else {}))
    assert_refused(start(factory, env), "TILLSTREAM_PAYMENT_GATEWAY")


def test_make_run_without_the_development_flag_refuses_before_starting_anything(scratch):
    data = scratch
    env = {**production_env(), "TILLSTREAM_DATA_DIR": str(data)}
    for name in ("TILLSTREAM_ADMIN_KEY", "TILLSTREAM_ID_SECRET", "TILLSTREAM_GATEWAY_KEY", "TILLSTREAM_OPERATOR_KEY"):
        env.pop(name)
    result = subprocess.run([sys.executable, "-m", "tillstream.run"], env=env, capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert_refused(result, "TILLSTREAM_PAYMENT_GATEWAY")
    assert list(data.iterdir()) == []  # no database, broker or secret was made


@pytest.mark.parametrize("fault", ["TILLSTREAM_FAIL_AT", "TILLSTREAM_DROP_AT", "TILLSTREAM_CRASH_AT",
                                   "TILLSTREAM_FAULTS_DIR"])
@pytest.mark.parametrize("factory", ["services.cart.app:create_app", "services.gateway.app:create_app"])
def test_fault_injection_without_the_chaos_flag_refuses_to_start(fault, factory):
    env = production_env(TILLSTREAM_PAYMENT_GATEWAY="test", TILLSTREAM_DEVELOPMENT="true", **{fault: "/tmp"})
    assert_refused(start(factory, env), fault, "TILLSTREAM_CHAOS")


def test_the_chaos_flag_is_announced_in_the_log(system):
    """The suite's system runs with TILLSTREAM_CHAOS (its faults are armed by files): its log says so."""
    log = (system.config.log_dir / "tillstream.log").read_text()
    assert "fault injection is enabled (TILLSTREAM_CHAOS)" in log


@pytest.mark.parametrize("variable", ["TILLSTREAM_ADMIN_KEY", "TILLSTREAM_GATEWAY_KEY", "TILLSTREAM_ID_SECRET"])
def test_short_secrets_refuse_a_production_start(variable):
    env = production_env(**{variable: "short-but-not-32"})
    assert_refused(start("services.gateway.app:create_app", env), variable, "32")


def test_one_key_for_both_callers_is_refused():
    env = production_env(TILLSTREAM_OPERATOR_KEY=STRONG)
    assert_refused(start("services.gateway.app:create_app", env), "TILLSTREAM_GATEWAY_KEY", "same key")


def test_the_old_all_powerful_service_key_is_refused():
    env = production_env(TILLSTREAM_SERVICE_KEY=STRONG)
    assert_refused(start("services.gateway.app:create_app", env), "TILLSTREAM_SERVICE_KEY", "TILLSTREAM_GATEWAY_KEY")


def test_secrets_are_created_0600_in_a_0700_folder_and_an_old_file_is_moved(monkeypatch, scratch):
    from tillstream.system import default_admin_key, default_id_secret

    data = scratch
    (data / "id_secret").write_text("an-id-secret-kept-by-an-earlier-version-0123")  # 0644, as before
    for name in ("TILLSTREAM_ADMIN_KEY", "TILLSTREAM_ID_SECRET"):
        monkeypatch.delenv(name, raising=False)
    old_umask = os.umask(0)  # even a permissive umask gives nobody else a bit
    try:
        admin = default_admin_key(data)
        kept = default_id_secret(data)
    finally:
        os.umask(old_umask)
    assert len(admin) == 64 and default_admin_key(data) == admin  # 256 bits, kept
    assert kept == "an-id-secret-kept-by-an-earlier-version-0123" and not (data / "id_secret").exists()
    assert stat.S_IMODE((data / "secrets").stat().st_mode) == 0o700
    for name in ("admin_key", "id_secret"):
        assert stat.S_IMODE((data / "secrets" / name).stat().st_mode) == 0o600
    monkeypatch.setenv("TILLSTREAM_ADMIN_KEY", "too-short")
    with pytest.raises(SystemExit, match="TILLSTREAM_ADMIN_KEY is shorter than 32"):
        default_admin_key(data)


async def test_the_embedded_postgresql_wants_its_generated_password(stack):
    """No trust authentication: the suite's own embedded server refuses a connection without
    the password, or with a wrong one, and its password file is 0600 in a 0700 folder."""
    if os.environ.get("TILLSTREAM_TEST_DATABASE_URL"):
        pytest.skip("an external database: not ours to judge")
    password_file = stack.workdir / "secrets" / "postgres_password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(password_file.parent.stat().st_mode) == 0o700
    password = password_file.read_text().strip()
    assert len(password) >= 32 and f":{password}@" in stack.database_url
    without = stack.database_url.replace(f":{password}@", "@")
    for dsn in (without, stack.database_url.replace(password, "0" * len(password))):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(dsn)
    conn = await asyncpg.connect(stack.database_url)
    try:
        rules = await conn.fetch("SELECT auth_method FROM pg_hba_file_rules")
        assert rules and {rule["auth_method"] for rule in rules} == {"scram-sha-256"}
    finally:
        await conn.close()


def test_a_data_folder_initialised_with_trust_is_converted_to_passwords(stack, unique):
    """A cluster an earlier version made (trust for everyone) asks for the password once started."""
    from tillstream.stack import EmbeddedPostgres

    if os.environ.get("TILLSTREAM_TEST_DATABASE_URL"):
        pytest.skip("the suite runs on an external database")
    folder = stack.workdir / f"trusting-{unique}"
    server = EmbeddedPostgres(folder / "pg", free_port(), durable=False).start()
    server.stop()
    hba = folder / "pg" / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))  # as initdb --auth=trust left it
    server = EmbeddedPostgres(folder / "pg", free_port(), durable=False).start()
    try:
        assert "trust" not in [line.split()[-1] for line in hba.read_text().splitlines()
                               if line.strip() and not line.startswith("#")]

        async def connect(dsn: str) -> None:
            conn = await asyncpg.connect(dsn)
            await conn.close()

        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(connect(server.dsn().replace(f":{server.password}@", "@")))
        asyncio.run(connect(server.dsn()))
    finally:
        server.destroy()


async def test_api_keys_are_accepted_only_in_headers(gateway, guest_order):
    number, _ = guest_order
    in_url = await gateway.get(f"/api/orders/{number}", params={"token": "test-admin-key"})
    assert in_url.status_code == 401
    assert in_url.json() == {"error": "API keys are accepted only in the Authorization header."}
    in_header = await gateway.get(f"/api/orders/{number}", headers={"Authorization": "Bearer test-admin-key"})
    assert in_header.status_code == 200


def test_the_banner_says_where_the_admin_key_is_never_the_key_or_the_database_password(system, capsys,
                                                                                       monkeypatch):
    from tillstream.run import print_banner

    monkeypatch.delenv("TILLSTREAM_ADMIN_KEY", raising=False)
    print_banner(system, [])
    banner = capsys.readouterr().out
    assert system.config.admin_key not in banner
    assert f"admin API key         in {system.config.data_dir / 'secrets' / 'admin_key'}" in banner
    assert system.internal_url in banner
    password = (system.database_url or "").partition("@")[0].rpartition(":")[2]
    assert password and password not in banner.replace("postgresql:", "")


def _enterable_by_others(path: Path) -> bool:
    return all(folder.stat().st_mode & 0o001 for folder in [*path.parents, path])


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="only a start as root has root to drop")


def drop_root_in(data: Path) -> subprocess.CompletedProcess:
    probe = ("import os, sys; from pathlib import Path; from tillstream.run import drop_root;"
             " drop_root(Path(sys.argv[1])); print(os.getuid(), os.geteuid(), os.getgroups())")
    return subprocess.run([sys.executable, "-c", probe, str(data)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, "TILLSTREAM_RUN_AS": "tillstream"})


@ROOT_ONLY
def test_make_run_as_root_refuses_a_folder_its_user_cannot_enter_instead_of_loosening_it(scratch):
    closed = scratch  # 0700, root's
    result = drop_root_in(closed / "data")
    assert_refused(result, "cannot enter", str(closed))
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700 and not (closed / "data").exists()


@ROOT_ONLY
@pytest.mark.skipif(not _enterable_by_others(Path(os.path.realpath(sys.executable)).parent),
                    reason="this Python lives where an unprivileged user cannot enter (the refusal above applies)")
def test_make_run_started_as_root_drops_root_and_owns_only_its_data_folder(scratch):
    data = scratch
    result = drop_root_in(data)
    assert result.returncode == 0, result.stderr
    uid, euid, groups = result.stdout.strip().splitlines()[-1].split(" ", 2)
    assert uid == euid != "0" and groups == "[]"
    assert data.stat().st_uid == int(uid)
    assert stat.S_IMODE(Path(tempfile.gettempdir()).stat().st_mode) == 0o1777  # its parents untouched
