"""Fixtures of the fault tests: stores of their own, wiped between tests and restored after each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.conftest import AppFactory, StoreUrls, UserFactory, wipe
from tests.faults.stores import FaultStores, fault_stores


@pytest.fixture(scope="session")
def faulty() -> Iterator[FaultStores]:
    with fault_stores() as stores:
        yield stores


@pytest.fixture
async def clean_stores(faulty: FaultStores) -> AsyncIterator[StoreUrls]:
    """The stores of these tests (overriding the session's): wiped before, restored after each test."""
    faulty.restore()
    urls = StoreUrls(faulty.database, faulty.redis)
    await wipe(urls)
    yield urls
    faulty.restore()


@pytest.fixture
def faults(faulty: FaultStores, make_client: AppFactory, make_user: UserFactory) -> Iterator[FaultStores]:
    """The stores to inflict faults on; set up after the application and the accounts, so that the
    stores are running again before those close their connections."""
    yield faulty
    faulty.restore()
