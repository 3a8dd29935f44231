"""Configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import msgspec
from dotenv import dotenv_values

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Pooler = Literal["none", "transaction"]
SECRET_FIELDS = frozenset({"api_key", "tls_key_password"})
"""Settings whose values are never shown."""
REDACTED = "**redacted**"


def comma_list(value: str) -> list[str]:
    """The non-empty items of a comma-separated setting."""
    return [item.strip() for item in value.split(",") if item.strip()]


class SettingsError(ValueError):
    """A setting in the environment has a value the service cannot run with."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service can be configured with.

    Each field is read from the environment variable of the same name in upper case,
    so ``database_url`` comes from ``DATABASE_URL``.
    """

    host: str = "127.0.0.1"
    """Address ``python -m service`` binds when ``--host`` is not given; ``0.0.0.0``: every one."""
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    """Port ``python -m service`` binds when ``--port`` is not given."""
    database_url: str = "sqlite:///heroes.db"
    """``sqlite:///path.db``, ``sqlite:///:memory:`` or ``postgresql://user@host/db``."""
    max_body_size: PositiveInt = 16 * 1024
    """Largest request body accepted, in bytes; larger bodies get 413."""
    sqlite_busy_timeout_ms: Annotated[int, msgspec.Meta(ge=0)] = 5000
    """How long a SQLite writer waits for the write lock before the request gets 503."""
    db_pool_size: PositiveInt = 10
    """PostgreSQL connections each worker keeps open; requests beyond them queue for one."""
    db_max_overflow: Annotated[int, msgspec.Meta(ge=0)] = 0
    """PostgreSQL connections a worker may open beyond the pool under load (and close after)."""
    db_pool_timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """Seconds a request waits for a pooled connection before it gets 503."""
    db_connect_timeout: PositiveInt = 5
    """Seconds to wait for PostgreSQL to accept a connection before the request gets 503."""
    db_statement_timeout_ms: Annotated[int, msgspec.Meta(ge=0)] = 5000
    """Longest a PostgreSQL statement may run (0: no limit).

    A hero query's round trip is far shorter (measured in ``tests/benchmarks/RESULTS-choices.md``).
    """
    idempotency_key_retention_seconds: PositiveInt = 24 * 3600
    """How long a create's ``Idempotency-Key`` is kept: a retry with it within that time answers
    the first result again; after it, the key is forgotten (and its row deleted)."""
    db_pooler: Pooler = "none"
    """``transaction``: a transaction pooler (PgBouncer's ``pool_mode = transaction``, RDS Proxy,
    Supavisor...) stands between the service and PostgreSQL, so that successive transactions of
    one connection may run on different server sessions: nothing is prepared under a name, and
    no setting is given to the session (see ``service.database.pooled``)."""
    db_pooler_prepared: bool = False
    """``true``: the transaction pooler keeps prepared statements (PgBouncer 1.21 or later with
    ``max_prepared_statements`` above 0, the default from 1.24), so the service runs asyncpg
    with its statement cache through it, as fast as straight to PostgreSQL (see
    ``service.database.prepared``). Only with ``DB_POOLER=transaction``."""
    shutdown_drain_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 0.0
    """On SIGTERM, seconds the service keeps serving while ``/health/ready`` answers 503, so
    that a load balancer takes it out of rotation before it stops accepting connections."""
    api_key: str = ""
    """Comma-separated keys; if set, POST, PATCH and DELETE need ``Authorization: Bearer <key>``
    with any one of them (several let a new key roll out before the old one goes); reads stay open.
    Never shown: ``repr(settings)`` redacts it."""
    allow_anonymous_writes: bool = False
    """Serve writes without ``API_KEY`` on an address other than loopback, on purpose.

    Without it, ``python -m service`` refuses to start on such an address with no key."""
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Requests a client (by IP) may make per minute, health checks aside; 0 turns the limit off."""
    docs_bytes_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 16 * 1024 * 1024
    """Bytes of docs pages, document and assets a client (by IP) may be sent per minute, counted
    apart from ``RATE_LIMIT_PER_MINUTE``; past them, 429. 0 turns the budget off."""
    redis_url: str = ""
    """``redis://host:6379/0``: the rate limit is counted there, shared by every worker and host.

    Empty: each worker counts on its own (needs the ``redis`` extra when set).
    """
    redis_key_prefix: str = "hero-service:rate-limit"
    """Prefix of the rate limit's keys in Redis, so that several services can share one server."""
    forwarded_allow_ips: str = ""
    """Comma-separated proxy addresses or networks whose ``X-Forwarded-For`` is believed.

    Empty: none, the client is the peer of the connection; ``*``: every peer.
    """
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    """The header the trusted proxies append their peer to: ``x-forwarded-for`` or RFC 7239's
    ``forwarded``. Only that one is read: a client could forge the other, which the proxy passes
    on untouched."""
    allowed_hosts: str = "*"
    """Comma-separated host names to answer (``*.example.com`` works); other hosts get 400."""
    cors_allow_origins: str = ""
    """Comma-separated origins browsers may call the API from (``*`` for any); empty: no CORS."""
    request_head_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """Seconds a connection has to send a whole request head (from its first byte, on a kept-alive
    connection); then 408 and the connection is closed."""
    request_body_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """Seconds a request body has to arrive after its head, plus one per 500 bytes received;
    then 408 and the connection is closed."""
    max_header_size: Annotated[int, msgspec.Meta(ge=1024)] = 16 * 1024
    """Largest request head (request line and header fields) in bytes; larger gets 431."""
    worker_connections: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Most connections a worker keeps open; 0: as many as its open-file limit leaves room for."""
    tls_cert_file: str = ""
    """PEM certificate (with its chain) to serve HTTPS with; empty: plain HTTP."""
    tls_key_file: str = ""
    """PEM private key of ``TLS_CERT_FILE``; empty when the certificate file holds it."""
    tls_key_password: str = ""
    """Password of an encrypted ``TLS_KEY_FILE``. Never shown."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of the service's logs."""
    access_log: bool = True
    """Log one JSON line per request: method, path, status, duration, request id."""
    metrics: bool = False
    """Serve Prometheus metrics at ``/metrics`` (needs the ``metrics`` extra)."""
    tracing: bool = False
    """Export OpenTelemetry traces, set up by the ``OTEL_*`` variables (needs the otel extra)."""

    def __post_init__(self) -> None:
        """Refuse settings that contradict each other, naming them."""
        if self.db_pooler_prepared and self.db_pooler != "transaction":
            raise SettingsError(
                "DB_POOLER_PREPARED: true says the transaction pooler in front of PostgreSQL "
                f"keeps prepared statements; it needs DB_POOLER=transaction, not {self.db_pooler}"
            )

    @property
    def api_keys(self) -> list[str]:
        """The keys in ``API_KEY``; writes need one of them when there is any."""
        return comma_list(self.api_key)

    def __repr__(self) -> str:
        """The settings, with the API keys and the database password redacted.

        A repr ends up in logs, tracebacks and debuggers.
        """
        fields = ", ".join(f"{name}={value!r}" for name, value in self.__rich_repr__())
        return f"{type(self).__name__}({fields})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """The fields as ``repr`` (and rich) show them, secrets redacted."""
        shown = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in SECRET_FIELDS and value:
                value = REDACTED
            elif name == "database_url":
                value = _without_password(value)
            shown.append((name, value))
        return shown

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ``; errors name the variable.

        Without ``environ``, the process environment is read, over a ``.env`` file in the
        working directory if there is one.
        """
        if environ is None:
            from_file = {k: v for k, v in dotenv_values(".env").items() if v is not None}
            environ = {**from_file, **os.environ}
        # An empty variable (``X=`` in a compose file or a manifest) means the default, as
        # pydantic-settings' env_ignore_empty has it.
        values = {
            name: environ[name.upper()]
            for name in cls.__struct_fields__
            if environ.get(name.upper(), "") != ""
        }
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(_name_the_variable(str(exc), values)) from None


def _without_password(url: str) -> str:
    password = urlsplit(url).password
    return url if password is None else url.replace(f":{password}@", f":{REDACTED}@", 1)


def _name_the_variable(message: str, values: Mapping[str, str]) -> str:
    """Turn msgspec's ``... - at `$.max_body_size``` into ``MAX_BODY_SIZE: ...``.

    For a choice (a boolean, one of some words), the message lists the values accepted.
    """
    detail, _, path = message.rpartition(" - at `$.")
    if not detail:
        return message
    name = path.rstrip("`")
    given = "" if name in SECRET_FIELDS else f", not {values.get(name, '')!r}"
    accepted = _choices(name)
    if accepted is not None:
        return f"{name.upper()}: expected one of {accepted}{given}"
    detail = detail.removesuffix(", got `str`")
    detail = {"Expected `int`": "expected an integer", "Expected `float`": "expected a number"}.get(
        detail, detail
    )
    return f"{name.upper()}: {detail}{given}"


def _choices(name: str) -> str | None:
    """The values a boolean or ``Literal`` setting accepts, as msgspec reads them from a string."""
    hint = get_type_hints(Settings).get(name)
    if hint is bool:
        return "true, false, 1, 0 (in any case)"
    if get_origin(hint) is Literal:
        return ", ".join(str(choice) for choice in get_args(hint))
    return None
