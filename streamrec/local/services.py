"""Run a real Kafka broker (KRaft, from Maven Central jars) and a real redis-server locally.

Used by ``streamrec up`` and by the test fixtures where no Docker engine is available.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = "3.9.2"
POM = Path(__file__).with_name("kafka-pom.xml")
log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A local service could not be provisioned or did not become ready."""


def cache_dir() -> Path:
    base = os.environ.get("STREAMREC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "streamrec"
    )
    return Path(base)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ensure_kafka_jars() -> Path:
    """Download the broker's jars with Maven once; return the directory holding them."""
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise ServiceError("Maven (mvn) is needed to fetch the Kafka broker jars; install maven")
    libs.mkdir(parents=True, exist_ok=True)
    log.info("fetching Kafka %s jars with Maven into %s", KAFKA_VERSION, libs)
    result = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise ServiceError(f"Maven could not fetch Kafka:\n{result.stdout}\n{result.stderr}")
    marker.write_text(KAFKA_VERSION)
    return libs


async def _kafka_answers(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    finally:
        await admin.close()


def kafka_ready(bootstrap: str) -> bool:
    """True when the broker answers a metadata request (not merely an open port)."""
    return asyncio.run(_kafka_answers(bootstrap))


def redis_ready(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _wait(check, what: str, timeout: float, process: subprocess.Popen | None, logfile: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = logfile.read_text(errors="replace")[-3000:] if logfile.exists() else ""
            raise ServiceError(f"{what} exited with {process.returncode}:\n{tail}")
        if check():
            return
        time.sleep(0.25)
    raise ServiceError(f"{what} was not ready after {timeout:.0f} s; see {logfile}")


@dataclass
class LocalProcess:
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def logfile(self) -> Path:
        return self.data_dir / f"{type(self).__name__.lower()}.log"

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [] if self.process is None else [self.process]

    def _spawn(self, argv: list[str]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "ab") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def kill(self) -> None:
        """Stop at once (SIGKILL), as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


# What we ship for Redis memory (docker-compose.yml's redis command repeats it: a unit test
# keeps the two in step). A user's history and event types hold up to history_length (200)
# entries; above 128, Redis's default, they turn from a listpack into a skiplist or hash
# table, 2-3 times the bytes. Listpack operations are linear, but 256 entries are a few
# microseconds. Raise both with STREAMREC_HISTORY_LENGTH.
REDIS_MEMORY_ARGS = ("--zset-max-listpack-entries", "256", "--hash-max-listpack-entries", "256")


@dataclass
class LocalRedis(LocalProcess):
    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError(
                "redis-server is not installed (Debian: apt-get install redis-server)")
        self._spawn([
            binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--protected-mode", "yes", "--daemonize", "no", *REDIS_MEMORY_ARGS,
        ])
        _wait(lambda: redis_ready(self.url), "redis-server", timeout, self.process, self.logfile)
        return self


@dataclass
class LocalKafka(LocalProcess):
    controller_port: int = field(default_factory=free_port)
    partitions: int = 4
    heap: str = "512m"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        logs = self.data_dir / "logs"
        config = self.data_dir / "server.properties"
        config.write_text(
            "\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={logs}",
                f"num.partitions={self.partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "",
            ])
        )
        (self.data_dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\nlog4j.logger.org.apache.kafka=INFO\n"
            "log4j.logger.state.change.logger=WARN\nlog4j.logger.kafka.request.logger=WARN\n"
        )
        return config

    def _java(self, libs: Path, main: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ServiceError("Java 17 is needed to run Kafka (Debian: openjdk-17-jre-headless)")
        return [
            java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
            f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
            "-cp", f"{libs}/*", main, *args,
        ]

    def start(self, timeout: float = 90.0) -> LocalKafka:
        libs = ensure_kafka_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            result = subprocess.run(
                self._java(libs, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                           "-c", str(config), "--ignore-formatted"),
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise ServiceError(f"formatting KRaft storage failed:\n{result.stderr}")
        self._spawn(self._java(libs, "kafka.Kafka", str(config)))
        _wait(lambda: port_open(self.port) and kafka_ready(self.bootstrap), "Kafka", timeout,
              self.process, self.logfile)
        return self


@dataclass
class LocalRedisCluster:
    """A Redis Cluster of ``size`` primaries (no replicas), each a local redis-server in
    cluster mode, joined with ``redis-cli --cluster create``: what CI tests the sharded
    key layout against where no Docker engine answers."""

    data_dir: Path
    size: int = 3
    nodes: list[LocalRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [process for node in self.nodes for process in node.processes]

    def start(self, timeout: float = 60.0) -> LocalRedisCluster:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise ServiceError(
                "redis-server and redis-cli are not installed (Debian: apt-get install "
                "redis-server)")
        for n in range(self.size):
            node = LocalRedis(self.data_dir / f"node{n}")
            node._spawn([
                binary, "--bind", "127.0.0.1", "--port", str(node.port),
                "--dir", str(node.data_dir), "--cluster-enabled", "yes",
                "--cluster-config-file", str(node.data_dir / "nodes.conf"),
                # The bus port defaults to port + 10000, which a high free port overflows.
                "--cluster-port", str(free_port()),
                "--cluster-node-timeout", "5000", "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes",
                "--daemonize", "no", *REDIS_MEMORY_ARGS,
            ])
            self.nodes.append(node)
        for node in self.nodes:
            _wait(lambda node=node: redis_ready(node.url), "redis-server (cluster node)",
                  timeout, node.process, node.logfile)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        created = subprocess.run([cli, "--cluster", "create", *addresses,
                                  "--cluster-replicas", "0", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=timeout)
        if created.returncode != 0:
            raise ServiceError(f"redis-cli --cluster create failed: {created.stdout}"
                               f"{created.stderr}")
        _wait(self._ready, "Redis Cluster", timeout, None, self.nodes[0].logfile)
        return self

    def _ready(self) -> bool:
        import redis

        try:
            client = redis.Redis.from_url(self.url, socket_timeout=2)
            info = client.cluster("info")
            client.close()
        except (redis.RedisError, OSError):
            return False
        return (info.get("cluster_state") == "ok"
                and info.get("cluster_slots_ok") == "16384")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
