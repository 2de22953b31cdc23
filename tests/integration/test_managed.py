"""Managed Kafka and Redis, as a local stand-in: a KRaft broker with SASL_SSL (SCRAM and
PLAIN) and mTLS listeners and a redis-server speaking only TLS with an ACL user, both with
certificates from a CA made here. The stack works over them end to end; a wrong password
or an untrusted certificate stops a role with one line naming the connection and why; no
password is ever in a log, an error or ``/metrics``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid

import orjson
import pytest

from streamrec.local.services import (
    LocalKafka,
    LocalRedis,
    free_port,
    make_certificates,
)

pytestmark = pytest.mark.integration

KAFKA_PASSWORD = "kafka-Secret-7f3a91"
REDIS_PASSWORD = "redis-Secret-2c8e44"
WRONG_PASSWORD = "wrong-Secret-9d1b07"
SECRETS = (KAFKA_PASSWORD, REDIS_PASSWORD, WRONG_PASSWORD)


@pytest.fixture(scope="module")
def managed(tmp_path_factory):
    """The secure Kafka and Redis, and the ``STREAMREC_*`` variables that reach them."""
    base = tmp_path_factory.mktemp("managed")
    certificates = make_certificates(base / "certificates")
    untrusted = make_certificates(base / "untrusted", "untrusted")
    redis_server = LocalRedis(base / "redis", tls=certificates,
                              users={"streamrec": REDIS_PASSWORD})
    kafka = LocalKafka(base / "kafka", tls=certificates, sasl_users={"streamrec": KAFKA_PASSWORD},
                       partitions=2, heap="384m")
    try:
        redis_server.start()
        kafka.start()
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("STREAMREC_")}
        env.update({
            "STREAMREC_KAFKA_BOOTSTRAP": kafka.sasl_bootstrap,
            "STREAMREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMREC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMREC_KAFKA_SASL_USERNAME": "streamrec",
            "STREAMREC_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
            "STREAMREC_KAFKA_SSL_CA_FILE": str(certificates.ca),
            # The user and password in the URL, as managed services hand them out.
            "STREAMREC_REDIS_URL": f"rediss://streamrec:{REDIS_PASSWORD}@127.0.0.1:"
                                   f"{redis_server.port}/0",
            "STREAMREC_REDIS_SSL_CA_FILE": str(certificates.ca),
            "STREAMREC_TOPIC_PARTITIONS": "2",
            "STREAMREC_DATA_DIR": str(base / "worker"),
        })
        yield {"env": env, "dir": base, "kafka": kafka, "certificates": certificates,
               "untrusted": untrusted}
    finally:
        kafka.stop()
        redis_server.stop()


def streamrec(env: dict[str, str], *args: str, timeout: float = 120
              ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamrec.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def post(url: str, body: object) -> int:
    request = urllib.request.Request(url, data=orjson.dumps(body),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_for(check, timeout: float = 90.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(every)
    return result


def popular(url: str) -> set[str]:
    status, body = get(f"{url}/popular?k=100")
    return {item["item_id"] for item in orjson.loads(body)["items"]} if status == 200 else set()


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_the_stack_runs_over_sasl_ssl_kafka_and_tls_redis_with_an_acl_user(managed, tmp_path):
    env, base = managed["env"], managed["dir"]
    port = free_port()
    api_env = dict(env, STREAMREC_API_PORT=str(port))
    url = f"http://127.0.0.1:{port}"
    worker_log, api_log = base / "worker.log", base / "api.log"
    with open(worker_log, "wb") as worker_out, open(api_log, "wb") as api_out:
        worker = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "worker"], env=env,
                                  stdout=worker_out, stderr=subprocess.STDOUT)
        api = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "api"], env=api_env,
                               stdout=api_out, stderr=subprocess.STDOUT)
        try:
            assert wait_for(lambda: get(f"{url}/readyz")[0] == 200), api_log.read_text()
            # An event through the API (SASL_SSL producer) and the worker (Faust over
            # SASL_SSL, Redis over TLS as the ACL user) into a list served from that Redis.
            run = uuid.uuid4().hex[:6]
            assert post(f"{url}/events", {"user_id": f"{run}-u", "item_id": f"{run}-api",
                                          "event_type": "purchase"}) == 202
            assert wait_for(lambda: f"{run}-api" in popular(url)), worker_log.read_text()

            # A CLI command over the other listener: TLS with a client certificate (SSL).
            certificates = managed["certificates"]
            mutual = dict(env, STREAMREC_KAFKA_BOOTSTRAP=managed["kafka"].ssl_bootstrap,
                          STREAMREC_KAFKA_SECURITY_PROTOCOL="SSL",
                          STREAMREC_KAFKA_SSL_CERT_FILE=str(certificates.cert),
                          STREAMREC_KAFKA_SSL_KEY_FILE=str(certificates.key))
            events = tmp_path / "events.jsonl"
            events.write_text(orjson.dumps({"user_id": f"{run}-v", "item_id": f"{run}-import",
                                            "event_type": "purchase"}).decode() + "\n")
            imported = streamrec(mutual, "import", str(events))
            assert imported.returncode == 0, imported.stderr
            assert "1 sent" in imported.stdout
            assert wait_for(lambda: f"{run}-import" in popular(url))

            exported = streamrec(env, "export", "--all-users", "--output",
                                 str(tmp_path / "lists.jsonl"))
            assert exported.returncode == 0, exported.stderr
            assert f"{run}-u" in (tmp_path / "lists.jsonl").read_text()

            status, metrics = get(f"{url}/metrics")
            assert status == 200
            assert_no_secret(metrics.decode(), imported.stdout, imported.stderr,
                             exported.stdout, exported.stderr)
        finally:
            for process in (api, worker):
                process.terminate()
            for process in (api, worker):
                process.wait(30)
    assert_no_secret(worker_log.read_text(errors="replace"), api_log.read_text(errors="replace"))


def refused(managed, role: str, **settings: str) -> str:
    """Run ``role`` (worker, api, export) with ``settings`` changed; assert it stops on its
    own, and return what it said."""
    env = dict(managed["env"], STREAMREC_API_PORT=str(free_port()),
               **{f"STREAMREC_{key.upper()}": value for key, value in settings.items()})
    args = {"export": ("export", "--all-users", "--output", os.devnull)}.get(role, (role,))
    result = streamrec(env, *args, timeout=90)
    said = result.stdout + result.stderr
    assert result.returncode != 0, said
    assert "Traceback" not in said  # one line that says it, not a stack
    assert_no_secret(said)
    return said


def test_a_wrong_kafka_password_names_kafka_the_role_and_the_reason(managed):
    said = refused(managed, "worker", kafka_sasl_password=WRONG_PASSWORD)
    assert ("Kafka (worker) at " + managed["kafka"].sasl_bootstrap + ", SASL_SSL: SASL "
            "SCRAM-SHA-512 authentication of user 'streamrec' failed") in said


def test_an_untrusted_kafka_certificate_names_kafka_the_role_and_the_reason(managed):
    said = refused(managed, "api", kafka_ssl_ca_file=str(managed["untrusted"].ca))
    assert "Error: Kafka (API) at" in said
    assert "its TLS certificate is not trusted" in said
    assert "set STREAMREC_KAFKA_SSL_CA_FILE to the CA that signed it" in said


def test_a_wrong_redis_password_names_redis_the_role_and_the_reason(managed):
    said = refused(managed, "api", redis_password=WRONG_PASSWORD)
    assert "Error: Redis (API) at rediss://127.0.0.1:" in said
    assert "authentication failed" in said


def test_an_untrusted_redis_certificate_names_redis_the_role_and_the_reason(managed):
    said = refused(managed, "export", redis_ssl_ca_file=str(managed["untrusted"].ca))
    assert "Error: Redis (export) at rediss://127.0.0.1:" in said
    assert "its TLS certificate is not trusted" in said
