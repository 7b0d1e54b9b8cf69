"""The suite's own real stack: a tansu broker and a PostgreSQL server on free ports.

`TILLSTREAM_TEST_DATABASE_URL` / `TILLSTREAM_TEST_KAFKA` point the suite at external
servers instead (a scratch database is created there and dropped afterwards).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from shared.settings import Settings

# The install's secret for GetCandy ids, shared by the system under test and the tests,
# which decode ids to find orders in the stores.
TEST_ID_SECRET = "test-id-secret-0123456789"
os.environ.setdefault("TILLSTREAM_ID_SECRET", TEST_ID_SECRET)
# A developer's settings (shared/safety.py): the test payment gateway, short test keys. The
# tests of production starts remove them from their processes' environment.
os.environ.setdefault("TILLSTREAM_DEVELOPMENT", "true")
os.environ.setdefault("TILLSTREAM_PAYMENT_GATEWAY", "test")
from tillstream.stack import EmbeddedBroker, EmbeddedPostgres, free_port  # noqa: E402 (the secret is set before the stack reads it)

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class TestStack:
    database_url: str
    bootstrap_servers: str
    workdir: Path

    def settings(self, **overrides) -> Settings:
        base = Settings(database_url=self.database_url, kafka_bootstrap_servers=self.bootstrap_servers)
        return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="session")
def stack(request):
    workdir = Path(tempfile.mkdtemp(prefix="tillstream-test-"))
    workdir.chmod(0o755)
    postgres = broker = None
    external_db = os.environ.get("TILLSTREAM_TEST_DATABASE_URL")
    if external_db:
        database_url = external_db
    else:
        # pg_stat_statements: the tests of statements per request count them there.
        postgres = EmbeddedPostgres(workdir / "pg", free_port(), durable=False,
                                    settings={"shared_preload_libraries": "pg_stat_statements"}).start()
        database_url = postgres.dsn()
    bootstrap = os.environ.get("TILLSTREAM_TEST_KAFKA")
    if not bootstrap:
        broker = EmbeddedBroker(free_port(), workdir / "broker.log").start()
        bootstrap = broker.bootstrap_servers
    try:
        yield TestStack(database_url, bootstrap, workdir)
    finally:
        if broker:
            broker.stop()
        if postgres:
            postgres.destroy()
        if request.session.testsfailed:
            print(f"\nprocess logs of this run are kept in {workdir / 'logs'}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for schemas, topics and consumer groups of one test."""
    return uuid.uuid4().hex[:10]


@contextlib.asynccontextmanager
async def fresh_schema(stack, name: str, migrations: Path | None = None):
    """A schema with the platform tables (and a service's, given its `migrations`), dropped
    when the block ends."""
    from shared.db import migrate

    await migrate(stack.database_url, name, migrations)
    try:
        yield name
    finally:
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def schema(stack, unique):
    """A fresh service schema with the platform tables, dropped after the test."""
    async with fresh_schema(stack, f"t_{unique}") as name:
        yield name


@contextlib.asynccontextmanager
async def schema_pool(stack, schema: str, max_size: int):
    """A pool on `schema` (its search path), closed when the block ends."""
    from shared.db import create_pool

    pool = await create_pool(stack.settings(), schema, min_size=1, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def pool(stack, schema):
    async with schema_pool(stack, schema, max_size=20) as pool:
        yield pool


@pytest.fixture
async def order_schema(stack, unique):
    """A fresh schema with the order service's tables (the order view among them)."""
    async with fresh_schema(stack, f"t_{unique}", ROOT / "services" / "order" / "migrations") as name:
        yield name


@pytest.fixture
async def order_pool(stack, order_schema):
    async with schema_pool(stack, order_schema, max_size=4) as pool:
        yield pool


TEST_GATEWAY_KEY = "test-gateway-key"
TEST_OPERATOR_KEY = "test-operator-key"
TEST_ORDER_KEY = "test-order-key"
SLOW_CLIENT_TIMEOUT_MS = 3000  # the header and body deadlines of the suite's systems


def start_system(stack, topology: str, instances: int = 1, attempts: int = 3):
    """A whole system on free ports. A port found free can be taken by another socket
    before its process binds it (seen once: `address already in use`, the process exits
    during start-up): then the system is started again on other ports."""
    from tillstream.system import System

    for attempt in range(1, attempts + 1):
        try:
            running = System(system_config(stack, topology, instances)).start()
            break
        except RuntimeError as exc:
            if attempt == attempts or "exited during start-up" not in str(exc):
                raise
    from tillstream.demo import load_demo_data

    load_demo_data(running)
    return running


def system_config(stack, topology: str, instances: int):
    from tillstream.system import EMBEDDED_BROKER_GROUP_TIMEOUTS, SERVICE_NAMES, SystemConfig

    name = topology if instances == 1 else f"{topology}-{instances}"
    return SystemConfig(
        data_dir=stack.workdir / f"system-{name}", gateway_port=free_port(), topology=topology, instances=instances,
        service_ports={n: [free_port() for _ in range(instances)] for n in SERVICE_NAMES},
        database_url=stack.database_url, bootstrap_servers=stack.bootstrap_servers,
        log_dir=stack.workdir / "logs" / name, admin_key="test-admin-key", id_secret=TEST_ID_SECRET,
        gateway_key=TEST_GATEWAY_KEY, operator_key=TEST_OPERATOR_KEY, order_key=TEST_ORDER_KEY,
        # The contention tests want all their requests inside the system at once, not
        # admitted a few at a time (test_gateway_admission.py covers the limit). The crash
        # tests restart participants, which takes longer than a step's deadline: here
        # deadlines are long, and the deadline tests shorten them. Faults are armed by files.
        # Slow clients are cut off sooner than by default, so tests/test_slow_clients.py
        # sees it happen in a few seconds.
        extra_env={"GATEWAY_MAX_IN_FLIGHT": "0", **EMBEDDED_BROKER_GROUP_TIMEOUTS,
                   "SAGA_LOCK_CART_DEADLINE_MS": "60000",
                   "SAGA_STOCK_DEADLINE_MS": "60000", "SAGA_PAYMENT_DEADLINE_MS": "60000",
                   "TILLSTREAM_FAULTS_DIR": str(_faults_dir(stack)), "TILLSTREAM_CHAOS": "true",
                   "HTTP_HEADER_TIMEOUT_MS": str(SLOW_CLIENT_TIMEOUT_MS),
                   "HTTP_BODY_TIMEOUT_MS": str(SLOW_CLIENT_TIMEOUT_MS)},
    )


def _faults_dir(stack) -> Path:
    (stack.workdir / "faults").mkdir(exist_ok=True)
    return stack.workdir / "faults"


# The topologies the end-to-end tests marked `both_topologies` run against, each with its
# own system (one after the other: pytest runs every test of one before starting the next).
TOPOLOGIES = {"one-process": ("one-process", 1), "distributed": ("distributed", 2)}


def pytest_generate_tests(metafunc):
    if "system" in metafunc.fixturenames:
        marked = metafunc.definition.get_closest_marker
        topologies = (list(TOPOLOGIES) if marked("both_topologies") else ["distributed"] if marked("distributed_only")
                      else ["one-process"])
        metafunc.parametrize("system", topologies, indirect=True, scope="session")


@pytest.fixture(scope="session")
def system(stack, request):
    """The whole system on free ports, sharing the suite's broker and database: one
    Tillstream process (the default topology), or, for the tests marked `both_topologies`,
    also each service apart, two instances of each, behind a gateway calling them over HTTP."""
    running = start_system(stack, *TOPOLOGIES[request.param])
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def faults(stack):
    """Arm a fault in the running system by name: `faults.arm("hold", "payment.process_payments")`
    (shared/faults.py); every armed fault is disarmed after the test."""
    folder = stack.workdir / "faults"

    class Faults:
        def arm(self, kind: str, name: str) -> None:
            (folder / f"{kind}-{name}").touch()

        def disarm(self, kind: str, name: str) -> None:
            (folder / f"{kind}-{name}").unlink(missing_ok=True)

    yield Faults()
    for armed in folder.iterdir():
        armed.unlink()


@pytest.fixture
async def gateway(system):
    import httpx

    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        yield client


@pytest.fixture
async def guest_order(gateway):
    """A new Solidus guest order: (number, headers carrying its token)."""
    response = await gateway.post("/api/orders", json={})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["number"], {"X-Spree-Order-Token": body["token"]}


@pytest.fixture
def single_use_coupon(system):
    """A new coupon with one use (3.00 USD off; `kind="items_percent"`: `value`% off, in any
    currency), fresh for each test and each topology's run: the stores outlive a run, and a
    use once spent stays spent."""
    def make(value: str = "3.00", kind: str = "order_flat") -> tuple[str, int]:
        promotion_id = 100_000 + time.monotonic_ns() % 1_000_000_000
        code = f"once{promotion_id}"
        system.call("cart", "load_promotions", promotions=[{
            "id": promotion_id, "name": code, "code": code, "kind": kind, "value": value, "usage_limit": 1}])
        return code, promotion_id
    return make


@pytest.fixture(scope="module")
def getcandy_data(system):
    """GetCandy's variant V (tests/helpers/getcandy.py) with 50 in stock and the `ten` coupon,
    loaded again for each module that asks (`pytest.mark.usefixtures("getcandy_data")`), as
    its orders use the stock up."""
    from tests.helpers.getcandy import V_ID, stock_v

    system.call("cart", "load_catalog", products=[
        {"id": 950, "name": "Candy Tee", "slug": "candy-tee",
         "variants": [{"id": V_ID, "sku": "CANDY-TEE", "name": "Candy Tee", "prices": {"GBP": "10.00"}}]}])
    stock_v(system, 50)
    system.call("cart", "load_promotions", promotions=[
        {"id": 50, "name": "Ten percent", "code": "ten", "kind": "items_percent", "value": "10"}])
