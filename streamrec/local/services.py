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


def redis_ready(url: str, **options) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, **options).ping())
    except redis.RedisError:
        return False


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


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


@dataclass(frozen=True)
class Certificates:
    """A CA and a certificate it signed for 127.0.0.1 and localhost (PEM files; the keys
    are unencrypted PKCS#8, which Kafka's PEM key store reads)."""

    ca: Path
    cert: Path
    key: Path

    @property
    def chain(self) -> Path:
        """Key and certificate in one file: Kafka's ``ssl.keystore.type=PEM``."""
        return self.cert.with_suffix(".chain.pem")


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"openssl {args[0]} failed: {result.stderr}")


def make_certificates(directory: Path, name: str = "server",
                      ca: Certificates | None = None) -> Certificates:
    """A new CA (or ``ca``'s) and a certificate named ``name`` signed by it, valid for
    127.0.0.1 and localhost: what a test needs for TLS that is checked, host name too."""
    if shutil.which("openssl") is None:
        raise ServiceError("openssl is needed to make test certificates (Debian: openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    if ca is None:
        ca_key, ca_cert = directory / f"{name}-ca.key", directory / f"{name}-ca.pem"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", f"/CN=streamrec test CA {name}", "-keyout", str(ca_key),
                 "-out", str(ca_cert))
    else:
        ca_key, ca_cert = ca.ca.with_suffix(".key"), ca.ca
    key, request, cert = (directory / f"{name}.key", directory / f"{name}.csr",
                          directory / f"{name}.pem")
    extensions = directory / f"{name}.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(request))
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert))
    made = Certificates(ca_cert, cert, key)
    made.chain.write_text(key.read_text() + cert.read_text())
    return made


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
    """A redis-server; with ``tls``, TLS only (``rediss://``, clients may present a
    certificate signed by the same CA); with ``users`` (name: password), those ACL users
    with every right and the passwordless ``default`` user turned off."""

    tls: Certificates | None = None
    users: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def client_options(self) -> dict[str, str]:
        """What a client needs besides the URL (the first user, the CA)."""
        options = {} if self.tls is None else {"ssl_ca_certs": str(self.tls.ca)}
        for user, password in list(self.users.items())[:1]:
            options.update(username=user, password=password)
        return options

    def start(self, timeout: float = 30.0) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError(
                "redis-server is not installed (Debian: apt-get install redis-server)")
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port),
                      "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                      "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "optional"]
        # One word per argument: redis-server joins them into a config line itself.
        access = [argument for user, password in self.users.items()
                  for argument in ("--user", user, "on", f">{password}", "~*", "&*", "+@all")]
        if self.users:
            access += ["--user", "default", "off"]
        self._spawn([
            binary, "--bind", "127.0.0.1", *listen, "--dir", str(self.data_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--protected-mode", "yes", "--daemonize", "no", *REDIS_MEMORY_ARGS, *access,
        ])
        _wait(lambda: redis_ready(self.url, **self.client_options()), "redis-server", timeout,
              self.process, self.logfile)
        return self


@dataclass
class LocalKafka(LocalProcess):
    """A KRaft broker (and controller). With ``tls``, two more listeners: SASL_SSL on
    :attr:`sasl_port` (SCRAM-SHA-256/512 and PLAIN, for ``sasl_users``, name: password) and
    SSL on :attr:`ssl_port`, which requires a client certificate signed by the same CA.
    ``node_id``, ``voters`` and ``cluster_id`` make it one node of a
    :class:`LocalKafkaCluster`."""

    controller_port: int = field(default_factory=free_port)
    partitions: int = 4
    heap: str = "512m"
    tls: Certificates | None = None
    sasl_users: dict[str, str] = field(default_factory=dict)
    sasl_port: int = field(default_factory=free_port)
    ssl_port: int = field(default_factory=free_port)
    node_id: int = 1
    voters: str | None = None  # controller.quorum.voters; default: this node alone
    cluster_id: str | None = None
    replication: int = 1  # of the internal topics (offsets, transactions)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def voter(self) -> str:
        return f"{self.node_id}@127.0.0.1:{self.controller_port}"

    def _secure_listeners(self) -> tuple[list[str], list[str]]:
        """The SASL_SSL and SSL listeners' names and their settings (none without tls)."""
        if self.tls is None:
            return [], []
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        plain_users = " ".join(f'user_{user}="{password}"'
                               for user, password in self.sasl_users.items())
        return ([f"SASL_SSL://127.0.0.1:{self.sasl_port}", f"SSL://127.0.0.1:{self.ssl_port}"],
                ["sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
                 f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}",
                 f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}",
                 "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common."
                 f"security.plain.PlainLoginModule required {plain_users};",
                 "listener.name.ssl.ssl.client.auth=required",
                 "ssl.keystore.type=PEM", f"ssl.keystore.location={self.tls.chain}",
                 "ssl.truststore.type=PEM", f"ssl.truststore.location={self.tls.ca}"])

    def _write_config(self) -> Path:
        logs = self.data_dir / "logs"
        config = self.data_dir / "server.properties"
        secure, secure_settings = self._secure_listeners()
        advertised = ",".join([f"PLAINTEXT://127.0.0.1:{self.port}", *secure])
        config.write_text(
            "\n".join([
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={self.voters or self.voter}",
                f"listeners={advertised},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners={advertised}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
                "SASL_SSL:SASL_SSL,SSL:SSL",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={logs}",
                f"num.partitions={self.partitions}",
                f"offsets.topic.replication.factor={self.replication}",
                "offsets.topic.num.partitions=4",
                f"transaction.state.log.replication.factor={self.replication}",
                f"transaction.state.log.min.isr={min(2, self.replication)}",
                f"default.replication.factor={self.replication}",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                *secure_settings,
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
        self.launch()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        _wait(lambda: port_open(self.port) and kafka_ready(self.bootstrap), "Kafka", timeout,
              self.process, self.logfile)

    def launch(self) -> None:
        """Format the storage (once) and start the process, without waiting for it."""
        libs = ensure_kafka_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = self.cluster_id or new_cluster_id()
            # SCRAM users are written into the metadata log at format time (KRaft).
            scram = [argument for user, password in self.sasl_users.items()
                     for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
                     for argument in ("--add-scram",
                                      f"{mechanism}=[name={user},password={password}]")]
            result = subprocess.run(
                self._java(libs, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                           "-c", str(config), "--ignore-formatted", *scram),
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise ServiceError(f"formatting KRaft storage failed:\n{result.stderr}")
        self._spawn(self._java(libs, "kafka.Kafka", str(config)))


@dataclass
class LocalKafkaCluster:
    """``size`` KRaft nodes, each broker and controller, internal topics replicated to 3
    (min ISR 2): what the broker-loss test kills one node of."""

    data_dir: Path
    size: int = 3
    heap: str = "384m"
    nodes: list[LocalKafka] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [process for node in self.nodes for process in node.processes]

    def start(self, timeout: float = 120.0) -> LocalKafkaCluster:
        cluster_id = new_cluster_id()
        self.nodes = [LocalKafka(self.data_dir / f"node{n}", node_id=n + 1, heap=self.heap,
                                 cluster_id=cluster_id, replication=min(3, self.size))
                      for n in range(self.size)]
        voters = ",".join(node.voter for node in self.nodes)
        for node in self.nodes:
            node.voters = voters
            node.launch()  # a quorum needs most of them up: start all, then wait
        for node in self.nodes:
            node.wait_ready(timeout)
        _wait(self._all_registered, "Kafka cluster", timeout, None, self.nodes[0].logfile)
        return self

    def _all_registered(self) -> bool:
        async def brokers() -> int:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                        request_timeout_ms=3000)
            try:
                await admin.start()
                return len((await admin.describe_cluster()).get("brokers", ()))
            except Exception:  # noqa: BLE001 - any failure means "not ready yet"
                return 0
            finally:
                await admin.close()

        return asyncio.run(brokers()) == self.size

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


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
