"""One store URL, one resolver (`stream_gateway.stores`): the ``stream-gateway`` command
line, the worker command's ``--db``, `store_from_url` and the approval sample all open
the same data from the same URL, on SQLite and on the plugins' servers."""

from __future__ import annotations

import pytest

from samples.approval.app import make_engine
from stream_gateway.durable import DurableEngine, store_from_url
from stream_gateway.durable.cli import load_engine
from tests.cli.cli_flows import FLOWS
from tests.cli.support import ainvoke, aspawn
from tests.durable.backends import DURABLE_BACKENDS

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the plugins' clients run on asyncio


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "firestore"])
async def test_every_entry_point_opens_the_store_a_url_names(backend: str) -> None:
    async with DURABLE_BACKENDS[backend]() as harness:
        url = harness.location
        engine = DurableEngine(FLOWS, store=harness.new_store())
        async with engine:
            op = await engine.schedule("listen")  # no worker: it stays pending
            # Firestore's client binds process-wide state to one event loop: its
            # command runs in a process of its own.
            run = aspawn if backend == "firestore" else ainvoke
            listed = (await run("flows", "ls", "--store", url, "--json")).json()
            assert [e["name"] for e in listed["executions"]] == [op.name]
            stores = {
                "stream-gateway-worker --db": load_engine("tests.cli.cli_flows:FLOWS", url).store,
                "store_from_url": store_from_url(url),
                "the approval sample": make_engine(url).store,
            }
            for who, store in stores.items():
                assert type(store) is type(engine.store), who
                async with store:
                    assert (await store.get(op.name)).status == "pending", who
