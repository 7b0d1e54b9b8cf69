"""docker-compose.yml cannot run here (no Docker engine); check that it is coherent."""
from __future__ import annotations

from pathlib import Path

import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_compose_runs_every_service_on_kafka_kraft_and_postgres():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "KAFKA_CONTROLLER_QUORUM_VOTERS" in kafka
    assert not any("zookeeper" in name for name in services)
    for name in ("cart", "order", "shipping", "payment", "gateway"):
        assert (ROOT / "services" / name / "app.py").exists()
        spec = services[name]
        # Served with the connection and header bounds (shared/http_server.py), not bare uvicorn.
        assert spec["command"][:4] == ["python", "-m", "shared.http_server", f"services.{name}.app:create_app"]
        env = spec["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["TILLSTREAM_GATEWAY_KEY"].startswith("${TILLSTREAM_GATEWAY_KEY:?")  # required, never defaulted
        assert "/readyz" in " ".join(spec["healthcheck"]["test"])
        # Time for the bounded stop (3 x SHUTDOWN_TIMEOUT_MS's default, shared/shutdown.py) before a kill.
        assert spec["stop_grace_period"] == "35s"
    # The completion saga runs in the order service's instances (its consumer group and sweep).
    assert not any("saga" in name for name in services)
    gateway = services["gateway"]["environment"]
    assert gateway["TILLSTREAM_ID_SECRET"].startswith("${TILLSTREAM_ID_SECRET:?")
    for name in ("cart", "order", "shipping", "payment"):
        assert gateway[f"{name.upper()}_URL"] == f"http://{name}:8000"
        assert services[name]["environment"]["TILLSTREAM_OPERATOR_KEY"].startswith("${TILLSTREAM_OPERATOR_KEY:?")


def test_compose_runs_no_test_gateway_no_trust_authentication_and_nothing_internal_in_public():
    """What `docker compose config` would show: the payment gateway and every secret are required
    (no default, no development flag), PostgreSQL wants a password for every connection, the
    containers do not run as root, and only the gateway's public port is published."""
    text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    settings = "\n".join(line.split("#")[0] for line in text.splitlines())  # comments aside
    assert "TILLSTREAM_DEVELOPMENT" not in settings and "TILLSTREAM_CHAOS" not in settings
    assert not any(fault in settings for fault in ("TILLSTREAM_CRASH_AT", "TILLSTREAM_FAIL_AT",
                                                   "TILLSTREAM_FAULTS_DIR"))
    assert "trust" not in settings.lower()
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert postgres.get("POSTGRES_HOST_AUTH_METHOD") == "scram-sha-256"
    assert "--auth-local=scram-sha-256" in postgres["POSTGRES_INITDB_ARGS"]
    for name in ("cart", "order", "shipping", "payment", "gateway"):
        env = services[name]["environment"]
        assert env["TILLSTREAM_PAYMENT_GATEWAY"].startswith("${TILLSTREAM_PAYMENT_GATEWAY:?"), name
        assert "trust" not in str(env).lower() and ":tillstream@" not in env["DATABASE_URL"], name
        assert env["DATABASE_URL"].startswith("postgresql://tillstream:${POSTGRES_PASSWORD:?"), name
        assert "ports" not in services[name] or name == "gateway", name
    gateway = services["gateway"]
    assert gateway["ports"] == ["8000:8000"] and gateway["environment"]["TILLSTREAM_OPERATOR_KEY"] == ""
    assert gateway["environment"]["TILLSTREAM_INTERNAL_LISTEN"].startswith("127.0.0.1:")
    assert "127.0.0.1:8001/readyz" in " ".join(gateway["healthcheck"]["test"])
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    assert [line for line in dockerfile if line.startswith("USER ")] == ["USER tillstream"]


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in Settings.__dataclass_fields__:
        variables = (f"`{name.upper()}`", f"`TILLSTREAM_{name.upper()}`")  # e.g. TILLSTREAM_SERVICE_KEY
        assert any(v in readme for v in variables), f"{name.upper()} is not in the README's settings table"
    for name in ("GATEWAY_PORT", "TILLSTREAM_ADMIN_KEY", "TILLSTREAM_DATA_DIR", "TILLSTREAM_POSTGRES_PORT",
                 "TILLSTREAM_BROKER_PORT", "TILLSTREAM_TEST_DATABASE_URL", "TILLSTREAM_TEST_KAFKA",
                 "TILLSTREAM_TOPOLOGY", "TILLSTREAM_INSTANCES", "TILLSTREAM_ID_SECRET", "GATEWAY_VIEW_WAIT_MS",
                 "GATEWAY_COMPLETE_WAIT_MS", "GATEWAY_MAX_IN_FLIGHT",
                 "GATEWAY_QUEUE_TIMEOUT_MS",
                 "SOLIDUS_REQUIRE_API_KEY", "TILLSTREAM_CRASH_AT", "HTTP_HEADER_TIMEOUT_MS",
                 "HTTP_BODY_TIMEOUT_MS", "HTTP_MAX_CONNECTIONS", "HTTP_MAX_BUFFERED_BYTES", "HTTP_MAX_HEADER_BYTES",
                 "TILLSTREAM_CHAOS", "TILLSTREAM_RUN_AS", "TILLSTREAM_DEVELOPMENT", "TILLSTREAM_PAYMENT_GATEWAY",
                 "TILLSTREAM_INTERNAL_LISTEN"):
        assert f"`{name}`" in readme, name
