"""How every role and command reaches Kafka and Redis: the security settings (TLS, SASL,
client certificates, a Redis ACL user) turned into the options of aiokafka, Faust and
redis-py in one place, and probes that say which connection failed and why.

A wrong password or an untrusted certificate is a configuration error, not an outage:
retrying cannot mend it, so :func:`check_kafka` and :func:`check_redis` raise
:class:`ConnectionFailed` for those at once, naming the service, the role and the reason
(never a secret). A server that does not answer yet is left to the roles' own retries.

>>> from streamrec.settings import Settings
>>> kafka_options(Settings())
{'security_protocol': 'PLAINTEXT'}
>>> settings = Settings(redis_url="rediss://app:s3cret@cache.example:6380/0")
>>> settings.redis_url, settings.redis_username
('rediss://cache.example:6380/0', 'app')
>>> sorted(redis_options(settings))
['password', 'username']
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import redis

from streamrec.settings import Settings

PROBE_SECONDS = 5.0


class ConnectionFailed(RuntimeError):
    """A connection to Kafka or Redis was refused for a reason retrying cannot mend (its
    credentials or certificates); the message names the service, the role and why."""


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of Kafka connections (None unless the protocol is SSL or SASL_SSL):
    the broker's certificate and host name checked against the CA file (else the system's
    CAs), and the client certificate presented when one is set."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_file)
    if settings.kafka_ssl_cert_file:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file,
                                password.get_secret_value() if password else None)
    return context


def kafka_options(settings: Settings) -> dict[str, Any]:
    """The security options of every aiokafka client (producer, consumer, admin), to pass
    with ``bootstrap_servers``."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None  # the settings insist
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password.get_secret_value())
    return options


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """``bootstrap_servers`` plus :func:`kafka_options`: ``AIOKafkaConsumer(**these)``."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **kafka_options(settings)}


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the same settings (None: plaintext)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(kafka_ssl_context(settings))
    assert settings.kafka_sasl_password is not None
    return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                 password=settings.kafka_sasl_password.get_secret_value(),
                                 ssl_context=kafka_ssl_context(settings),
                                 mechanism=settings.kafka_sasl_mechanism)


def redis_options(settings: Settings) -> dict[str, Any]:
    """The options of every redis-py client, to pass with the URL (``rediss://`` turns TLS
    on; these add the ACL user, the password, the CA file and a client certificate)."""
    options: dict[str, Any] = {}
    if settings.redis_username:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_ssl_ca_file:
        options["ssl_ca_certs"] = settings.redis_ssl_ca_file
    if settings.redis_ssl_cert_file:
        options.update(ssl_certfile=settings.redis_ssl_cert_file,
                       ssl_keyfile=settings.redis_ssl_key_file)
    return options


def _tls_reason(error: BaseException, ca_setting: str) -> str | None:
    text = str(error)
    if isinstance(error, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        detail = getattr(error, "verify_message", None) or text
        return (f"its TLS certificate is not trusted ({detail}): set {ca_setting} to the CA "
                "that signed it")
    if isinstance(error, ssl.SSLError) or "SSL" in text or "TLS" in text:
        return f"the TLS handshake failed ({text})"
    return None


def explain_kafka(error: BaseException, settings: Settings) -> tuple[str, bool]:
    """Why a Kafka connection failed, and whether retrying can mend it."""
    from aiokafka import errors

    reason = _tls_reason(error, "STREAMREC_KAFKA_SSL_CA_FILE")
    if reason is not None:
        return reason, False
    if isinstance(error, errors.SaslAuthenticationFailed | errors.AuthenticationFailedError):
        return (f"SASL {settings.kafka_sasl_mechanism} authentication of user "
                f"{settings.kafka_sasl_username!r} failed (wrong user name or password?): "
                f"{error}"), False
    if isinstance(error, errors.UnsupportedSaslMechanismError):
        return str(error), False
    if isinstance(error, TimeoutError):
        return (f"no answer within {PROBE_SECONDS:.0f} s (is STREAMREC_KAFKA_SECURITY_PROTOCOL="
                f"{settings.kafka_security_protocol} what this listener speaks?)"), True
    return f"{type(error).__name__}: {error}", True


def explain_redis(error: BaseException) -> tuple[str, bool]:
    """Why a Redis connection failed, and whether retrying can mend it."""
    reason = _tls_reason(error, "STREAMREC_REDIS_SSL_CA_FILE")
    if reason is not None:
        return reason, False
    if isinstance(error, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        return (f"authentication failed (STREAMREC_REDIS_USERNAME/STREAMREC_REDIS_PASSWORD, "
                f"or the URL's): {error}"), False
    if isinstance(error, redis.ResponseError) and "NOAUTH" in str(error):
        return "the server needs a password: set STREAMREC_REDIS_PASSWORD", False
    return f"{type(error).__name__}: {error}", True


async def check_kafka(settings: Settings, role: str) -> None:
    """Connect to a bootstrap broker as the settings say (TLS, SASL): return when one
    accepts; raise :class:`ConnectionFailed` when a broker refuses the credentials or the
    certificates. Brokers that do not answer yet are left to the caller's retries."""
    from aiokafka.conn import create_conn

    hosts = [h.strip() for h in settings.kafka_bootstrap.split(",") if h.strip()]
    options = kafka_options(settings)  # a bad certificate file fails here, on its own
    for address in hosts:
        host, _, port = address.rpartition(":")
        try:
            connection = await asyncio.wait_for(create_conn(
                host.strip("[]"), int(port), request_timeout_ms=int(PROBE_SECONDS * 1000),
                **options), PROBE_SECONDS)
        except Exception as error:  # noqa: BLE001 - explained below, or left to retries
            reason, transient = explain_kafka(error, settings)
            if not transient:
                raise ConnectionFailed(
                    f"Kafka ({role}) at {address}, {settings.kafka_security_protocol}: "
                    f"{reason}") from None
            continue
        connection.close()
        return


def check_redis(client: redis.Redis, settings: Settings, role: str) -> None:
    """PING through ``client``: raise :class:`ConnectionFailed` when Redis refuses the
    credentials or the certificates; an unreachable Redis is left to the caller."""
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        reason, transient = explain_redis(error)
        if not transient:
            raise ConnectionFailed(f"Redis ({role}) at {settings.redis_url}: {reason}"
                                   ) from None
