"""The one settings object every role reads (env prefix ``STREAMREC_``)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import pydantic_settings
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from recommender.base import BATCH_MODELS, MAX_WEIGHT, MODELS
from recommender.hyperparameters import HYPERPARAMETERS, EngineConfig
from recommender.weights import EventWeights
from schemas import errors
from streamrec.storage import keys

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    "rating": 3.0,
}


# A Redis key prefix: plain, or a hash tag ("{sr}", the Redis Cluster layout).
PREFIX = r"^([A-Za-z0-9_.-]{1,32}|\{[A-Za-z0-9_.-]{1,32}\})$"

KNOWN_DEFAULT_KEYS = frozenset({"changeme", "secret", "password", "admin", "apikey",
                                "streamrec", "changeme-changeme", "0123456789abcdef"})


# Each model hyperparameter is a settings field, named, bounded and documented by its row
# of the one table (recommender.hyperparameters.HYPERPARAMETERS).
_ModelSettings = create_model(
    "_ModelSettings", __base__=BaseSettings,
    **{h.setting: (h.type, Field(default=h.default, description=h.doc, **h.bounds()))
       for h in HYPERPARAMETERS})


class Settings(_ModelSettings):  # type: ignore[misc,valid-type]
    """Configuration for the worker, the API, the simulator and the CLI.

    Every field is read from an environment variable named ``STREAMREC_<FIELD>``
    (for example ``STREAMREC_KAFKA_BOOTSTRAP``). Dict fields take JSON.
    """

    # Errors name the setting, never the input: it may hold a password.
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore",
                                      hide_input_in_errors=True)

    # Infrastructure
    kafka_bootstrap: str = "localhost:9092"
    redis_url: str = "redis://localhost:6379/0"
    # Redis Cluster instead of one Redis (redis_url names any node): the prefixes become hash
    # tags ("{sr}") and the per-user and per-item state is spread over groups of slots (see
    # streamrec.storage.keys.SHARDS and docs/scaling.md).
    redis_cluster: bool = False
    redis_prefix: str = Field(default="sr", pattern=PREFIX)

    # Managed Kafka and Redis (docs/configuration.md has a recipe per service). Every role
    # and command reaches them through streamrec.connections, which turns these into the
    # clients' options. Passwords are SecretStr: never in a repr, a log line or an error.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: str | None = None  # default: the system's trusted CAs
    kafka_ssl_cert_file: str | None = None  # a client certificate (mTLS), with its key
    kafka_ssl_key_file: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    # Redis over TLS is a rediss:// URL. A user and password in the URL are moved into
    # redis_username/redis_password, so the URL itself can be shown.
    redis_username: str | None = None  # an ACL user (Redis 6+); none: "default"
    redis_password: SecretStr | None = None
    redis_ssl_ca_file: str | None = None
    redis_ssl_cert_file: str | None = None
    redis_ssl_key_file: str | None = None

    # The model version this process runs (see streamrec.storage.model_versions): "main" is
    # the state under redis_prefix; a worker started with --version NAME sets it.
    state_version: str = Field(default="main", pattern=r"^[a-z0-9][a-z0-9_-]{0,19}$")
    catalog_prefix: str | None = Field(default=None, pattern=PREFIX)
    version_refresh_seconds: float = Field(default=0.5, gt=0)
    # `streamrec promote` refuses a version more events than this behind the events topic
    # (or with no worker consuming for it) unless --force: it would serve stale lists.
    promote_max_lag: int = Field(default=1000, ge=0)

    # Topics
    events_topic: str = "events"
    dead_letter_topic: str = "events.dlq"
    items_topic: str = "items"
    users_topic: str = "users"
    impressions_topic: str = "impressions"
    metrics_topic: str = "metrics"
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    # With acks=all, a write is acknowledged once this many replicas have it (None: the
    # broker's default): 2 of 3 keeps every acknowledged event through the loss of a broker.
    topic_min_insync_replicas: int | None = Field(default=None, ge=1)

    # Worker
    worker_id: str = "streamrec"
    data_dir: str = ".streamrec"  # local files of the worker (Faust's data directory)
    session_timeout_seconds: float = Field(default=10.0, ge=6)
    batch_size: int = Field(default=2000, ge=1)
    batch_within_seconds: float = Field(default=0.05, gt=0)
    # Longest the broker holds the worker's fetch when its partitions have nothing new
    # (streams.app): a record can wait this long behind a fetch for idle topics.
    worker_fetch_max_wait_ms: int = Field(default=50, ge=1, le=60_000)

    # Event contract
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    rating_positive_threshold: float = 3.5
    max_events_per_request: int = Field(default=1000, ge=1)
    # An event's time is at most this far after the time streamrec received it (the API's
    # clock, the broker's append time, the import): a clock far ahead cannot make one event
    # outweigh years of real ones.
    max_event_time_skew_seconds: float = Field(default=300.0, ge=0)
    # Idempotent ingest (recommender.once): an event_id applied once is not applied again
    # when it comes back within this much reception time (the Kafka record's append time,
    # not the event's own time, which may be years old or ahead). Ids are kept in day
    # buckets: memory holds between this and a day more of ids.
    dedup_window_seconds: float = Field(default=7 * 86_400.0, gt=0)

    # Models (their hyperparameters are fields too, from recommender.hyperparameters)
    default_model: str = "hybrid"

    # Feedback loop
    attribution_window_seconds: float = Field(default=1800.0, gt=0)
    attribution_grace_seconds: float = Field(default=10.0, ge=0)
    # Clock difference forgiven between a list and the event that names it: an event that
    # claims (or reached Kafka) more than this before its list was shown earns nothing.
    attribution_clock_skew_seconds: float = Field(default=60.0, ge=0)
    reward_event_types: list[str] = Field(
        default_factory=lambda: ["click", "add_to_cart", "purchase"])
    allocation_refresh_seconds: float = Field(default=0.5, gt=0)
    filter_refresh_seconds: float = Field(default=0.5, gt=0)
    # How often an API process re-reads the shared event types (another process's change).
    event_types_refresh_seconds: float = Field(default=0.5, gt=0)
    exploration_floor: float = Field(default=0.05, ge=0, le=1)
    # Clustered and contextual bandits (docs/bandits.md): updates a variant's state takes
    # before it is halved, so old evidence fades and the state stays bounded for years.
    bandit_state_cap: float = Field(default=100_000, ge=10, le=1e9)

    # Imported list sets (streamrec lists, docs/lists.md): how stale a process's copy of the
    # sets' pointers may be, and how long a replaced generation stays readable (longer
    # than that plus a request's own time, so a request never finds its lists gone).
    lists_refresh_seconds: float = Field(default=1.0, gt=0)
    lists_grace_seconds: float = Field(default=5.0, ge=0)

    # API
    environment: Literal["development", "production"] = "development"
    # Roles read/write/admin act on the app "default"; "platform" creates and deletes apps
    # and acts as admin on every app (streamrec/apps.py; keys of other apps live in Redis).
    api_keys: dict[str, Literal["read", "write", "admin", "platform"]] = Field(
        default_factory=dict)
    api_keys_file: str | None = None  # JSON {"key": "role"}, merged with api_keys
    # Apps over HTTP (api/apps.py): how often each API process re-reads the app registry
    # (a deleted app's context closes, a changed app's settings apply, within this) and
    # refreshes each app's serving parts other than default's.
    app_refresh_seconds: float = Field(default=1.0, gt=0)
    # How long a key made by POST /admin/apps is trusted without asking Redis again: a
    # rotated or deleted key stops working within this.
    app_key_cache_seconds: float = Field(default=1.0, ge=0)
    # An app's serving context unused this long is closed (its refreshers stop costing
    # Redis calls); the next request builds it again.
    app_idle_seconds: float = Field(default=600.0, gt=0)
    client_api_key: str | None = None  # what the simulator's loop presents as X-API-Key
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    produce_timeout_seconds: float = Field(default=5.0, gt=0)
    # Impressions waiting for Kafka per API process (api/impressions.py): while this many
    # wait, GET /recommendations answers 503 rather than serve lists it could not record.
    impression_buffer: int = Field(default=10_000, ge=1)
    retry_after_seconds: int = Field(default=5, ge=1)
    factor_refresh_seconds: float = Field(default=0.25, gt=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1)  # larger request bodies get 413
    max_stream_clients: int = Field(default=100, ge=1)  # /metrics/stream; more get 503
    # The HTTP server's bounds (api/server.py), for every route, keyed or not.
    max_header_bytes: int = Field(default=16_384, ge=1024)  # request line + headers; 431
    max_headers: int = Field(default=100, ge=8)  # 431
    max_connections: int = Field(default=1000, ge=1)  # open at once per process; 503
    header_timeout_seconds: float = Field(default=10.0, gt=0)  # the head must arrive; 408
    body_timeout_seconds: float = Field(default=30.0, gt=0)  # the body, after its head; 408
    keep_alive_seconds: float = Field(default=5.0, gt=0)  # an idle connection is closed
    # Load shedding (api/shedding.py): past either, 503 with Retry-After at once.
    max_requests_in_flight: int = Field(default=32, ge=1)  # per API process
    request_deadline_seconds: float = Field(default=1.0, gt=0)  # per read (GET)
    serving_threads: int = Field(default=2, ge=1)  # where GET /recommendations waits on Redis
    # An API process screens lists against its own copy of the withdrawn items' times, so
    # a request need not read them; a set larger than this is read per request instead.
    withdrawn_mirror_max: int = Field(default=100_000, ge=0)  # 0: always read them
    # ... and its copy of the overall popular prefix its requests read first, kept this long
    # (storage.state_store.KeptPopular): each request still reads its user's history.
    popular_cache_seconds: float = Field(default=0.1, ge=0, le=60)  # 0: read it per request
    # Scheduled training (`streamrec trainer`, docs/trainer.md): how often, on what, and
    # what a run may replace.
    trainer_every_seconds: float = Field(default=3600.0, gt=0)  # between cycles
    trainer_models: list[str] = Field(default=["ease", "ials"])
    trainer_items: int = Field(default=100_000, ge=2)  # the N most interacted items (iALS)
    # EASE inverts a dense N-square matrix in place (4 N^2 bytes in float32: 400 MB at
    # 10,000 items, 40 GB at 100,000), so it has a cap of its own.
    trainer_ease_items: int = Field(default=10_000, ge=2)
    trainer_ease_neighbours: int = Field(default=100, ge=1)  # weights kept per item (M)
    trainer_ease_regularization: float = Field(default=250.0, gt=0)
    trainer_ials_factors: int = Field(default=64, ge=1)
    trainer_ials_iterations: int = Field(default=15, ge=1)
    trainer_ials_regularization: float = Field(default=0.05, gt=0)
    trainer_ials_alpha: float = Field(default=10.0, gt=0)
    trainer_threads: int = Field(default=1, ge=1)  # implicit's; the API and worker share cores
    trainer_holdout: float = Field(default=0.1, gt=0, lt=1)  # last share of event time
    trainer_min_events: int = Field(default=100, ge=1)  # fewer: the cycle trains nothing
    # The newest records of the events topic a cycle reads (all apps'): bounds its memory
    # and time however long the topic's retention.
    trainer_max_events: int = Field(default=1_000_000, ge=1)
    # A new run is not promoted when its held-back Recall@10 is below the serving run's by
    # more than this share of it.
    trainer_promote_margin: float = Field(default=0.1, ge=0, le=1)
    # ... measured on the held-back events the serving run never trained on; fewer of them
    # scored than this, and the new run is promoted without a comparison.
    trainer_compare_min_events: int = Field(default=100, ge=1)
    trainer_keep_runs: int = Field(default=5, ge=1)  # per model; older artifacts are deleted
    trainer_max_artifact_bytes: int = Field(default=512 * 1024**2, ge=1024)
    # How soon an API process serves a newly promoted run.
    trained_refresh_seconds: float = Field(default=1.0, gt=0)
    # > 0: ease and ials lists fused with co-occurrence's (this weight against the run's 1),
    # so items new since the run reach them (recommender.batch_models.FreshBlend).
    trained_fresh_weight: float = Field(default=0.0, ge=0, le=1e6)

    @model_validator(mode="after")
    def _connections_are_complete(self) -> Settings:
        check_connection_settings(self)
        return self

    @model_validator(mode="after")
    def _prefixes_are_hash_tags_on_a_cluster(self) -> Settings:
        if self.redis_cluster:
            self.redis_prefix = keys.tagged(self.redis_prefix)
            if self.catalog_prefix is not None:
                self.catalog_prefix = keys.tagged(self.catalog_prefix)
        return self

    @field_validator("default_model")
    @classmethod
    def _model_is_known(cls, model: str) -> str:
        if model not in MODELS:
            raise ValueError(f"{model!r} is not one of {list(MODELS)}")
        return model

    @field_validator("trainer_models")
    @classmethod
    def _trained_models_are_known(cls, models: list[str]) -> list[str]:
        unknown = [model for model in models if model not in BATCH_MODELS]
        if unknown or not models:
            raise ValueError(f"{unknown or models!r}: one or more of {list(BATCH_MODELS)}")
        return models

    @field_validator("event_weights")
    @classmethod
    def _weights_are_valid(cls, weights: dict[str, float]) -> dict[str, float]:
        if not weights:
            raise ValueError("at least one event type is required")
        for name, weight in weights.items():
            if not name or not 0 <= weight <= MAX_WEIGHT:  # NaN fails both
                raise ValueError(f"event type {name!r} needs a name and a weight from 0 to "
                                 f"{MAX_WEIGHT:,.0f} (got {weight!r})")
        return weights

    def engine_config(self) -> EngineConfig:
        return EngineConfig(**{h.engine_field: getattr(self, h.setting)
                               for h in HYPERPARAMETERS})

    def trainer_hyperparameters(self, model: str) -> dict[str, Any]:
        """The ``fit`` arguments of trained model ``model`` (recommender.batch_models)."""
        if model == "ease":
            return {"regularization": self.trainer_ease_regularization,
                    "neighbours": self.trainer_ease_neighbours}
        return {"factors": self.trainer_ials_factors,
                "iterations": self.trainer_ials_iterations,
                "regularization": self.trainer_ials_regularization,
                "alpha": self.trainer_ials_alpha, "threads": self.trainer_threads,
                "seed": self.seed}

    def trainer_item_cap(self, model: str, items: int | None = None) -> int:
        """The N most interacted items ``model`` trains on (``items`` or the setting):
        EASE's dense inversion has a lower ceiling of its own."""
        cap = items or self.trainer_items
        return min(cap, self.trainer_ease_items) if model == "ease" else cap

    def load_api_keys(self) -> dict[str, str]:
        """Keys from the environment and the keys file; refuses unsafe set-ups.

        Raises
        ------
        SettingsError
            In production with no keys, with a key that is short or a known default, or a
            keys file that cannot be read as JSON ``{"key": "role"}``.
        """
        keys: dict[str, str] = dict(self.api_keys)
        if self.api_keys_file:
            where = f"STREAMREC_API_KEYS_FILE: {self.api_keys_file}"
            try:
                loaded = json.loads(Path(self.api_keys_file).read_text())
            except OSError as error:
                raise SettingsError(f"{where}: {error.strerror or error}") from None
            except ValueError as error:  # the keys themselves are not shown
                raise SettingsError(f"{where}: not JSON ({type(error).__name__} at line "
                                    f"{getattr(error, 'lineno', '?')})") from None
            if not isinstance(loaded, dict):
                raise SettingsError(f'{where}: expected a JSON object {{"key": "role"}}')
            for key, role in loaded.items():
                if role not in ("read", "write", "admin", "platform"):
                    raise SettingsError(f"{where}: role {role!r} is not read, write, admin "
                                        "or platform")
                keys[key] = role
        for key in keys:
            if len(key) < 16 or key.lower() in KNOWN_DEFAULT_KEYS:
                raise SettingsError("STREAMREC_API_KEYS: every key needs 16 or more characters "
                                    "and must not be a known default (the key itself is not "
                                    "shown)")
        if self.environment == "production" and not keys:
            raise SettingsError("STREAMREC_ENVIRONMENT is production but no API keys are "
                                "configured: set STREAMREC_API_KEYS or STREAMREC_API_KEYS_FILE")
        return keys

    def weights(self) -> EventWeights:
        return EventWeights(self.event_weights, self.rating_positive_threshold)

    @property
    def faust_broker(self) -> str:
        """Faust's broker URL: ``kafka://host:port;host:port``."""
        hosts = [h.strip() for h in self.kafka_bootstrap.split(",") if h.strip()]
        return ";".join(f"kafka://{h}" for h in hosts)


def check_connection_settings(settings: Settings) -> None:
    """Refuse security settings that cannot work, naming the setting (never its value), and
    move a password found in ``redis_url`` into ``redis_password``."""
    url = urlsplit(settings.redis_url)
    if url.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"STREAMREC_REDIS_URL must start with redis://, rediss:// (TLS) or "
                         f"unix://, not {url.scheme}://")
    if url.password is not None or url.username:
        if settings.redis_password is None and url.password is not None:
            settings.redis_password = SecretStr(unquote(url.password))
        if settings.redis_username is None and url.username:
            settings.redis_username = unquote(url.username)
        host = url.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        settings.redis_url = urlunsplit(url._replace(
            netloc=netloc + (f":{url.port}" if url.port else "")))
    if url.scheme != "rediss" and (settings.redis_ssl_ca_file or settings.redis_ssl_cert_file):
        raise ValueError("STREAMREC_REDIS_SSL_* is set but STREAMREC_REDIS_URL is not "
                         "rediss:// (TLS)")
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL") and not (settings.kafka_sasl_username
                                            and settings.kafka_sasl_password):
        raise ValueError(f"STREAMREC_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                         "STREAMREC_KAFKA_SASL_USERNAME and STREAMREC_KAFKA_SASL_PASSWORD")
    if not protocol.endswith("SSL") and (settings.kafka_ssl_ca_file
                                         or settings.kafka_ssl_cert_file):
        raise ValueError(f"STREAMREC_KAFKA_SSL_* is set but STREAMREC_KAFKA_SECURITY_PROTOCOL "
                         f"is {protocol}: use SSL or SASL_SSL")
    for side in ("kafka", "redis"):
        cert = getattr(settings, f"{side}_ssl_cert_file")
        key = getattr(settings, f"{side}_ssl_key_file")
        if bool(cert) != bool(key):
            raise ValueError(f"STREAMREC_{side.upper()}_SSL_CERT_FILE and "
                             f"STREAMREC_{side.upper()}_SSL_KEY_FILE go together (a client "
                             "certificate and its private key)")
        for name in ("ca", "cert", "key"):
            path = getattr(settings, f"{side}_ssl_{name}_file")
            if path and not Path(path).is_file():
                raise ValueError(f"STREAMREC_{side.upper()}_SSL_{name.upper()}_FILE: "
                                 f"{path} is not a readable file")


class SettingsError(ValueError):
    """A refused configuration; ``str()`` is one line naming the setting and what is wrong."""


# A setting whose name holds one of these may hold a secret (a URL its password): a
# refusal names it, never its value. By name, so settings added later are covered.
SECRET_WORDS = ("key", "password", "secret", "token", "url", "credential")


def env_name(name: str) -> str:
    return f"STREAMREC_{name.upper()}"


def load_settings(**overrides) -> Settings:
    """``Settings(**overrides)`` (and the environment), or a :class:`SettingsError` whose
    one line names each setting refused and why (a secret's value is never shown)."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError("; ".join(_refusal(problem) for problem in error.errors(
            include_url=False))) from None
    except pydantic_settings.SettingsError as error:  # a dict or list setting's JSON
        name = str(error).split('"')[1] if str(error).count('"') >= 2 else "a setting"
        raise SettingsError(f"{env_name(name)}: not valid JSON") from None


def _refusal(problem: dict) -> str:
    location = problem["loc"]
    text = errors.message(problem["msg"])
    if not location:  # a check across settings: its message names them
        return text
    name = str(location[0])
    if any(word in name for word in SECRET_WORDS):
        return f"{env_name(name)}: {text} (the value is not shown)"
    inner = errors.field(location[1:])
    where = env_name(name) + (f" ({inner})" if inner else "")
    shown = problem.get("input")
    if isinstance(shown, str | int | float):
        got = repr(shown)
        return f"{where}: {text} (got {got if len(got) <= 80 else got[:77] + '...'})"
    return f"{where}: {text}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env.

    Raises :class:`SettingsError` (one line) for a refused configuration."""
    return load_settings()
