"""librdkafka's mock Kafka cluster, driven through ctypes.

Owns one `rd_kafka_t` handle (the mock cluster needs one for its bookkeeping) and the mock
cluster created on it: N real TCP brokers on loopback, with ids 1..N, that speak the Kafka
protocol and let a test move leaders, inject error codes, take brokers down and add latency.
The library is the librdkafka bundled in the confluent-kafka wheel
(`confluent_kafka.libs/librdkafka-*.so*`); signatures follow librdkafka's `src/rdkafka.h` and
`src/rdkafka_mock.h` (an experimental API with no ABI promise, hence the symbol checks).
It is the independent side of the integration tests, so it imports no kpd code.

Measured on librdkafka 2.16.0 (ApiVersions answer of the mock brokers): Produce v0-10,
Metadata v0-13, InitProducerId v0-4, ApiVersions v0-2, Fetch v0-16, ListOffsets v0-7.
The mock does not implement CreateTopics: topics are created with rd_kafka_mock_topic_create.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import confluent_kafka

_c_void_p, _c_char_p, _c_int = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
_c_int16, _c_int32, _c_int64, _c_size_t = (
    ctypes.c_int16,
    ctypes.c_int32,
    ctypes.c_int64,
    ctypes.c_size_t,
)

# name -> (restype, fixed argtypes). rd_kafka_resp_err_t and rd_kafka_type_t are C enums: int.
_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "rd_kafka_conf_new": (_c_void_p, []),
    "rd_kafka_conf_set": (_c_int, [_c_void_p, _c_char_p, _c_char_p, _c_char_p, _c_size_t]),
    "rd_kafka_conf_destroy": (None, [_c_void_p]),
    "rd_kafka_new": (_c_void_p, [_c_int, _c_void_p, _c_char_p, _c_size_t]),
    "rd_kafka_destroy": (None, [_c_void_p]),
    "rd_kafka_err2name": (_c_char_p, [_c_int]),
    "rd_kafka_mock_cluster_new": (_c_void_p, [_c_void_p, _c_int]),
    "rd_kafka_mock_cluster_destroy": (None, [_c_void_p]),
    "rd_kafka_mock_cluster_bootstraps": (_c_char_p, [_c_void_p]),
    "rd_kafka_mock_topic_create": (_c_int, [_c_void_p, _c_char_p, _c_int, _c_int]),
    "rd_kafka_mock_push_request_errors_array": (
        None,
        [_c_void_p, _c_int16, _c_size_t, ctypes.POINTER(_c_int)],
    ),
    # Variadic: the fixed part is declared; each (err, rtt_ms) pair follows as two C ints.
    "rd_kafka_mock_broker_push_request_error_rtts": (
        _c_int,
        [_c_void_p, _c_int32, _c_int16, _c_size_t],
    ),
    "rd_kafka_mock_broker_error_stack_cnt": (
        _c_int,
        [_c_void_p, _c_int32, _c_int16, ctypes.POINTER(_c_size_t)],
    ),
    "rd_kafka_mock_clear_request_errors": (None, [_c_void_p, _c_int16]),
    "rd_kafka_mock_partition_set_leader": (_c_int, [_c_void_p, _c_char_p, _c_int32, _c_int32]),
    "rd_kafka_mock_partition_set_follower": (
        _c_int,
        [_c_void_p, _c_char_p, _c_int32, _c_int32],
    ),
    "rd_kafka_mock_broker_set_down": (_c_int, [_c_void_p, _c_int32]),
    "rd_kafka_mock_broker_set_up": (_c_int, [_c_void_p, _c_int32]),
    "rd_kafka_mock_broker_set_rtt": (_c_int, [_c_void_p, _c_int32, _c_int]),
    "rd_kafka_mock_set_apiversion": (_c_int, [_c_void_p, _c_int16, _c_int16, _c_int16]),
    "rd_kafka_mock_start_request_tracking": (None, [_c_void_p]),
    "rd_kafka_mock_stop_request_tracking": (None, [_c_void_p]),
    "rd_kafka_mock_clear_requests": (None, [_c_void_p]),
    "rd_kafka_mock_get_requests": (
        ctypes.POINTER(_c_void_p),
        [_c_void_p, ctypes.POINTER(_c_size_t)],
    ),
    "rd_kafka_mock_request_id": (_c_int32, [_c_void_p]),
    "rd_kafka_mock_request_api_key": (_c_int16, [_c_void_p]),
    "rd_kafka_mock_request_timestamp": (_c_int64, [_c_void_p]),
    "rd_kafka_mock_request_destroy_array": (None, [ctypes.POINTER(_c_void_p), _c_size_t]),
}

_RD_KAFKA_PRODUCER = 0  # rd_kafka_type_t
_RD_KAFKA_CONF_OK = 0  # rd_kafka_conf_res_t
_ERRSTR_SIZE = 512


class ApiKey(enum.IntEnum):
    """Kafka request types the tests inject faults into (Kafka protocol ApiKey numbers)."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    API_VERSIONS = 18
    INIT_PRODUCER_ID = 22


class LibrdkafkaSymbolMissing(RuntimeError):
    """The loaded librdkafka does not export a function this harness calls."""


@dataclass(frozen=True)
class MockRequest:
    """One request a mock broker received while request tracking was on."""

    broker_id: int
    api_key: int
    timestamp_us: int  # librdkafka's monotonic clock, microseconds


def librdkafka_path() -> Path:
    """The librdkafka shared object bundled in the installed confluent-kafka wheel."""
    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    candidates = sorted(libs.glob("librdkafka-*.so*"))
    if not candidates:
        raise FileNotFoundError(f"no librdkafka-*.so* in {libs}: is confluent-kafka a wheel?")
    return candidates[0]


def missing_symbols(path: Path | None = None) -> list[str]:
    """The functions this harness calls that the librdkafka at `path` does not export."""
    dll = ctypes.CDLL(str(path or librdkafka_path()))
    return [name for name in _PROTOTYPES if not hasattr(dll, name)]


class _Librdkafka:
    """The C functions we call, looked up once and given their prototypes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dll = ctypes.CDLL(str(path))
        self._functions: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in _PROTOTYPES:
            raise AttributeError(name)
        function = self._functions.get(name)
        if function is None:
            try:
                function = getattr(self._dll, name)
            except AttributeError:
                raise LibrdkafkaSymbolMissing(
                    f"{self.path} does not export {name}; the mock cluster API changed"
                ) from None
            function.restype, function.argtypes = _PROTOTYPES[name]
            self._functions[name] = function
        return function


class MockCluster:
    """A librdkafka mock cluster of `brokers` brokers (ids 1..brokers) on loopback.

    Not thread-safe: one test thread drives it (librdkafka's own threads serve the brokers).
    Calls that librdkafka reports as failed raise RuntimeError naming the error.
    """

    def __init__(self, brokers: int = 3, *, debug: str | None = None) -> None:
        self._lib = _Librdkafka(librdkafka_path())
        self._rk = self._new_handle(debug)
        self._cluster = self._lib.rd_kafka_mock_cluster_new(self._rk, brokers)
        if not self._cluster:
            self._lib.rd_kafka_destroy(self._rk)
            raise RuntimeError(f"rd_kafka_mock_cluster_new({brokers}) failed")
        self.broker_ids = tuple(range(1, brokers + 1))
        self.bootstrap = self._lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Destroy the cluster, then the handle it was created on; idempotent."""
        cluster, self._cluster = self._cluster, None
        rk, self._rk = self._rk, None
        if cluster:
            self._lib.rd_kafka_mock_cluster_destroy(cluster)
        if rk:
            self._lib.rd_kafka_destroy(rk)

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- topics and leadership -------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, replication: int = 3) -> str:
        err = self._lib.rd_kafka_mock_topic_create(
            self._live(), name.encode(), partitions, replication
        )
        self._check(err, f"create topic {name}")
        return name

    def set_partition_leader(self, topic: str, partition: int, broker_id: int) -> None:
        """Make `broker_id` the leader (-1: leaderless). Clients learn it from Metadata."""
        err = self._lib.rd_kafka_mock_partition_set_leader(
            self._live(), topic.encode(), partition, broker_id
        )
        self._check(err, f"set leader of {topic}[{partition}] to {broker_id}")

    def set_partition_follower(self, topic: str, partition: int, broker_id: int) -> None:
        """Set the preferred read replica that Fetch responses point consumers to."""
        err = self._lib.rd_kafka_mock_partition_set_follower(
            self._live(), topic.encode(), partition, broker_id
        )
        self._check(err, f"set follower of {topic}[{partition}] to {broker_id}")

    # -- brokers ---------------------------------------------------------------------------

    def broker_down(self, broker_id: int) -> None:
        """Disconnect the broker's clients and refuse new connections; leaders do not move."""
        self._check(self._lib.rd_kafka_mock_broker_set_down(self._live(), broker_id), "down")

    def broker_up(self, broker_id: int) -> None:
        self._check(self._lib.rd_kafka_mock_broker_set_up(self._live(), broker_id), "up")

    def set_rtt(self, broker_id: int, ms: int) -> None:
        """Delay every response of `broker_id` (-1: all brokers) by `ms` milliseconds."""
        err = self._lib.rd_kafka_mock_broker_set_rtt(self._live(), broker_id, ms)
        self._check(err, f"set rtt of broker {broker_id}")

    def set_api_version(self, api_key: int, min_version: int, max_version: int) -> None:
        """Narrow what the brokers advertise for `api_key` (-1, -1: not supported at all)."""
        err = self._lib.rd_kafka_mock_set_apiversion(
            self._live(), api_key, min_version, max_version
        )
        self._check(err, f"set versions of api key {api_key}")

    # -- error injection -------------------------------------------------------------------

    def push_request_errors(self, api_key: int, *error_codes: int) -> None:
        """Fail the next len(error_codes) requests of `api_key`, to any broker, in order.

        Codes are Kafka error codes (0 lets a request through); librdkafka's
        KafkaError._TRANSPORT (-195) makes the broker drop the connection instead.
        """
        codes = (_c_int * len(error_codes))(*error_codes)
        self._lib.rd_kafka_mock_push_request_errors_array(
            self._live(), api_key, len(error_codes), codes
        )

    def push_broker_request_errors(
        self, broker_id: int, api_key: int, *errors: tuple[int, int]
    ) -> None:
        """Answer the next requests of `api_key` to `broker_id` with (error_code, rtt_ms) each.

        Broker errors take precedence over push_request_errors.
        """
        varargs: list[_c_int] = []
        for code, rtt_ms in errors:
            # The C side reads each pair with va_arg(ap, rd_kafka_resp_err_t) and
            # va_arg(ap, int): pass C ints exactly, since ctypes cannot infer variadic types.
            varargs += [_c_int(code), _c_int(rtt_ms)]
        err = self._lib.rd_kafka_mock_broker_push_request_error_rtts(
            self._live(), broker_id, api_key, len(errors), *varargs
        )
        self._check(err, f"push errors for broker {broker_id}")

    def broker_error_stack_count(self, broker_id: int, api_key: int) -> int:
        """How many pushed broker errors for `api_key` are still waiting for a request."""
        count = _c_size_t()
        err = self._lib.rd_kafka_mock_broker_error_stack_cnt(
            self._live(), broker_id, api_key, ctypes.byref(count)
        )
        self._check(err, f"count errors of broker {broker_id}")
        return count.value

    def clear_request_errors(self, api_key: int) -> None:
        """Drop cluster-wide errors still pushed for `api_key`."""
        self._lib.rd_kafka_mock_clear_request_errors(self._live(), api_key)

    # -- request tracking ------------------------------------------------------------------

    def start_request_tracking(self) -> None:
        self._lib.rd_kafka_mock_start_request_tracking(self._live())

    def stop_request_tracking(self) -> None:
        self._lib.rd_kafka_mock_stop_request_tracking(self._live())

    def clear_requests(self) -> None:
        self._lib.rd_kafka_mock_clear_requests(self._live())

    def requests(self, api_key: int | None = None) -> list[MockRequest]:
        """Requests received since tracking started, oldest first; only `api_key` if given."""
        count = _c_size_t()
        array = self._lib.rd_kafka_mock_get_requests(self._live(), ctypes.byref(count))
        if not array:
            return []
        try:
            found = [self._describe(array[i]) for i in range(count.value)]
        finally:
            self._lib.rd_kafka_mock_request_destroy_array(array, count.value)
        return [r for r in found if api_key is None or r.api_key == api_key]

    # -- internals -------------------------------------------------------------------------

    def _new_handle(self, debug: str | None) -> int:
        """An rd_kafka_t producer handle that only hosts the mock cluster; it never connects."""
        conf = self._lib.rd_kafka_conf_new()
        # The handle has no bootstrap.servers by design; level 4 hides that notice.
        settings = {"log_level": "4" if debug is None else "7"}
        if debug is not None:
            settings["debug"] = debug
        errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)
        for name, value in settings.items():
            res = self._lib.rd_kafka_conf_set(
                conf, name.encode(), value.encode(), errstr, _ERRSTR_SIZE
            )
            if res != _RD_KAFKA_CONF_OK:
                self._lib.rd_kafka_conf_destroy(conf)
                raise ValueError(f"librdkafka config {name}={value}: {errstr.value.decode()}")
        # rd_kafka_new takes ownership of conf only when it succeeds.
        rk = self._lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, _ERRSTR_SIZE)
        if not rk:
            self._lib.rd_kafka_conf_destroy(conf)
            raise RuntimeError(f"rd_kafka_new failed: {errstr.value.decode()}")
        return rk

    def _describe(self, request: int) -> MockRequest:
        return MockRequest(
            broker_id=self._lib.rd_kafka_mock_request_id(request),
            api_key=self._lib.rd_kafka_mock_request_api_key(request),
            timestamp_us=self._lib.rd_kafka_mock_request_timestamp(request),
        )

    def _live(self) -> int:
        if not self._cluster:
            raise RuntimeError("MockCluster is closed")
        return self._cluster

    def _check(self, err: int, what: str) -> None:
        if err != 0:
            name = self._lib.rd_kafka_err2name(err).decode()
            raise RuntimeError(f"mock cluster: {what} failed: {name} ({err})")
