"""The operators' CLI finds the system `make run` started, on whatever ports, with no variable
naming them; it says which system it talks to, answers errors in one line with a non-zero exit,
asks before deleting, and gives the same exit codes with --json."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tillstream.stack import free_port

ROOT = Path(__file__).resolve().parent.parent
TILLSTREAM = [sys.executable, "-m", "tillstream.cli"]


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    # Nothing of the suite's own system (its database, broker, keys) reaches make run or the CLI.
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS") and not k.startswith("TILLSTREAM_")}
    return {**env, "TILLSTREAM_DATA_DIR": str(data_dir), "COLUMNS": "120", **extra}


@pytest.fixture(scope="module")
def make_run():
    """`make run` (python -m tillstream.run, with the development flag the Makefile sets) on
    non-default ports, with its own broker and PostgreSQL."""
    # PostgreSQL's user must enter the folder holding the data (nothing loosens it for it).
    holder = Path(tempfile.mkdtemp(prefix="tillstream-make-run-"))
    holder.chmod(0o755)
    data_dir = holder / "data"
    ports = {"GATEWAY_PORT": free_port(), "TILLSTREAM_POSTGRES_PORT": free_port(),
             "TILLSTREAM_BROKER_PORT": free_port(), "TILLSTREAM_INTERNAL_LISTEN": f"127.0.0.1:{free_port()}",
             # Whether root is dropped is tests/test_production_settings.py's subject, not this one's.
             "TILLSTREAM_DEVELOPMENT": "true", "TILLSTREAM_RUN_AS": "root"}
    log = open(holder / "make-run.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "tillstream.run"], cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT,
                               env=clean_env(data_dir, **{k: str(v) for k, v in ports.items()}))
    try:
        deadline = time.monotonic() + 180
        while "Press Ctrl-C" not in Path(log.name).read_text():
            assert process.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()[-3000:]
            time.sleep(0.5)
        yield data_dir, ports, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        log.close()
        shutil.rmtree(holder, ignore_errors=True)


def cli(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TILLSTREAM, *args], cwd=ROOT, env=clean_env(data_dir, **env), capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_the_cli_talks_to_the_system_make_run_recorded(make_run):
    data_dir, ports, _ = make_run
    record = data_dir / "system.json"
    assert record.stat().st_mode & 0o777 == 0o600
    status = cli(data_dir, "outbox", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert set(json.loads(status.stdout)) == {"cart", "order", "shipping", "payment"}
    said = status.stderr.strip().splitlines()
    assert len(said) == 1 and f"127.0.0.1:{ports['TILLSTREAM_POSTGRES_PORT']}" in said[0]
    assert f"127.0.0.1:{ports['TILLSTREAM_BROKER_PORT']}" in said[0] and str(record) in said[0]
    sagas = cli(data_dir, "saga", "list", "--json")
    assert sagas.returncode == 0 and isinstance(json.loads(sagas.stdout), list), sagas.stderr


def test_errors_are_one_line_with_a_non_zero_exit_in_both_forms(make_run):
    data_dir, _, _ = make_run
    for args, code in ((["dlq", "list", "--service", "nope"], 2),
                       (["events", "tail", "no.such.topic", "--limit", "1"], 2),
                       (["replay", "--service", "nope"], 2), (["projections", "rebuild", "nope"], 2)):
        for form in ([], ["--json"]):
            answer = cli(data_dir, *args, *form)
            assert answer.returncode == code, (args, form, answer.stderr)
            errors = [line for line in answer.stderr.splitlines() if "database" not in line]
            assert len(errors) == 1 and "Traceback" not in answer.stderr, answer.stderr
    unknown = [cli(data_dir, "events", "read", "--order", "R000000000", *form) for form in ([], ["--json"])]
    assert [answer.returncode for answer in unknown] == [1, 1]
    assert json.loads(unknown[1].stdout) == []


def test_destructive_commands_ask_or_need_yes(make_run):
    data_dir, _, _ = make_run
    refused = cli(data_dir, "dlq", "purge", "--service", "cart")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert cli(data_dir, "saga", "abort", "R000000000").returncode == 2
    purged = cli(data_dir, "dlq", "purge", "--service", "cart", "--yes", "--json")
    assert purged.returncode == 0 and json.loads(purged.stdout) == {"service": "cart", "purged": 0}


def test_options_and_environment_override_the_record(make_run, tmp_path):
    data_dir, ports, _ = make_run
    elsewhere = cli(data_dir, "--database-url", "postgresql://postgres@127.0.0.1:1/none", "--bootstrap",
                    "127.0.0.1:1", "outbox", "status")
    assert elsewhere.returncode == 1 and "127.0.0.1:1/none" in elsewhere.stderr
    assert "Traceback" not in elsewhere.stderr and len(elsewhere.stderr.strip().splitlines()) == 2
    # No record and nothing named: refused, rather than guessing at default ports.
    nowhere = cli(tmp_path, "outbox", "status")
    assert nowhere.returncode == 2 and "make run" in nowhere.stderr and len(nowhere.stderr.splitlines()) == 1
    helped = cli(data_dir, "dlq", "purge", "--help")
    assert helped.returncode == 0 and "<bool>" not in helped.stdout and "--yes" in helped.stdout


def test_the_record_goes_when_the_system_stops(make_run):
    data_dir, _, process = make_run
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    assert not (data_dir / "system.json").exists()
    gone = cli(data_dir, "saga", "list")
    assert gone.returncode == 2 and "no running system" in gone.stderr
