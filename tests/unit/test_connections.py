"""The security settings and the client options built from them (no services)."""

from __future__ import annotations

import ssl

import faust
import pytest
from pydantic import ValidationError

from streamrec.connections import (
    explain_kafka,
    explain_redis,
    faust_credentials,
    kafka_options,
    redis_options,
)
from streamrec.settings import Settings

SECRET = "pa55-Word-not-shown"


def sasl(**extra) -> Settings:
    return Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256",
                    kafka_sasl_username="app", kafka_sasl_password=SECRET, **extra)


def test_passwords_are_never_in_the_settings_repr():
    settings = sasl(redis_url=f"rediss://app:{SECRET}@cache.example:6380/2",
                    kafka_ssl_key_password=SECRET)
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert settings.redis_url == "rediss://cache.example:6380/2"
    assert settings.redis_username == "app"
    assert redis_options(settings) == {"username": "app", "password": SECRET}


def test_a_refused_setting_never_shows_a_password(monkeypatch):
    monkeypatch.setenv("STREAMREC_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("STREAMREC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "STREAMREC_KAFKA_SASL_USERNAME" in str(refused.value)
    assert SECRET not in str(refused.value) and SECRET not in repr(refused.value)


def test_a_password_set_on_its_own_wins_over_the_urls():
    settings = Settings(redis_url="redis://:in-url@localhost:6379/0", redis_password="own")
    assert redis_options(settings) == {"password": "own"}
    assert settings.redis_url == "redis://localhost:6379/0"


def test_kafka_options_for_sasl_ssl():
    options = kafka_options(sasl())
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("app", SECRET)
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert options["ssl_context"].check_hostname


def test_faust_gets_the_same_credentials():
    credentials = faust_credentials(sasl())
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.protocol.value == "SASL_SSL"
    assert SECRET not in repr(credentials)
    assert isinstance(faust_credentials(Settings(kafka_security_protocol="SSL")),
                      faust.SSLCredentials)
    assert faust_credentials(Settings()) is None


@pytest.mark.parametrize(("settings", "named"), [
    ({"kafka_security_protocol": "SASL_SSL"}, "STREAMREC_KAFKA_SASL_USERNAME"),
    ({"kafka_ssl_ca_file": "/etc/hostname"}, "STREAMREC_KAFKA_SECURITY_PROTOCOL"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": "/etc/hostname"},
     "STREAMREC_KAFKA_SSL_KEY_FILE"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_ca_file": "/nowhere/ca.pem"},
     "STREAMREC_KAFKA_SSL_CA_FILE: /nowhere/ca.pem is not a readable file"),
    ({"redis_ssl_ca_file": "/etc/hostname"}, "not rediss://"),
    ({"redis_url": "http://cache:6379"}, "STREAMREC_REDIS_URL must start with"),
])
def test_incomplete_security_settings_are_refused_by_name(settings, named):
    with pytest.raises(ValidationError, match=named.replace("(", r"\(")):
        Settings(**settings)


def test_reasons_say_whether_retrying_can_mend_them():
    from aiokafka import errors

    reason, transient = explain_kafka(errors.SaslAuthenticationFailed("bad creds"), sasl())
    assert "SCRAM-SHA-256 authentication of user 'app' failed" in reason and not transient
    untrusted = ssl.SSLCertVerificationError("certificate verify failed")
    assert not explain_kafka(untrusted, sasl())[1]
    assert explain_kafka(ConnectionRefusedError("refused"), sasl())[1]
    import redis

    assert not explain_redis(redis.AuthenticationError("WRONGPASS"))[1]
    assert explain_redis(redis.ConnectionError("Connection refused"))[1]
