"""The ``Idempotency-Key`` request header: a client's name for one attempt at a write.

As the IETF HTTPAPI draft "The Idempotency-Key HTTP Header Field" has it (and Stripe's API
before it): a client that retries a POST with the same key gets the first result again, and the
write is done at most once. Keys are scoped per client, as the draft says: each credential (the
digest of the API key the write came with, or ``anonymous`` without API keys; see
``service.http.security``) has keys of its own, so that a client never gets another's answer.
The protocol's pure functions and errors, and :func:`create_once`, any resource's create at
most once per key (the key stored with the row, in the same transaction, by
``service.database.keyed``).
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import msgspec

from service.database.faults import ReferenceMissing, WriteRefused
from service.database.records import Stored, now
from service.database.statements import InProgress
from service.database.tables import KEY_MAX_LENGTH
from service.http import etags
from service.http.responses import JsonResponse
from service.http.security import ANONYMOUS, credential

if TYPE_CHECKING:
    from litestar import Request
    from litestar.types import Scope

    from service.database.keyed import KeyedCreates
    from service.database.statements import Database

T = TypeVar("T")

HEADER = "Idempotency-Key"
_HEADER_NAME = HEADER.lower().encode()
KEY_RETENTION_STATE = "idempotency_key_retention"
"""Where the app's state keeps how long keys are kept (a ``timedelta``, from the settings)."""
REPLAYED_HEADER = "Idempotent-Replayed"
"""Sent as ``true`` on an answer given again for a retry (the name Stripe's API uses)."""
HONOURS_KEYS = "honours_idempotency_keys"
"""The route option (``opt``) of an operation that does a write at most once per key."""

IDEMPOTENCY_KEY = r'^("([ !#-\[\]-~]|\\["\\])+"|[!#-~]+)$'
"""What the header may hold: a Structured Field string (RFC 8941), as the draft defines the
header (``"8e03978e-40d5-43e8"``), or the same characters unquoted, as most clients send it:
visible ASCII, no space, no quote. At most ``KEY_MAX_LENGTH`` characters in all. Written for
Python and ECMAScript alike; the OpenAPI document states it as the header's pattern."""

_SYNTAX = re.compile(IDEMPOTENCY_KEY)
_ESCAPE = re.compile(r"\\(.)")


class MalformedIdempotencyKey(ValueError):
    """An ``Idempotency-Key`` header that is not a key."""

    def __init__(self) -> None:
        super().__init__(
            f"{HEADER} must be 1 to {KEY_MAX_LENGTH} visible ASCII characters without spaces, "
            'such as a UUID, optionally as a quoted string ("...")'
        )
        self.header = HEADER


class KeyReused(Exception):
    """The key was used with another request: the same key must come with the same body."""


class KeyInProgress(Exception):
    """A request with the same key is still being processed: retry once it has answered."""


class RequestKey(NamedTuple):
    """An idempotency key, whose it is, and the fingerprint of the request that came with it."""

    key: str
    request_hash: bytes
    """SHA-256 of the operation and its decoded request: the same key with another request
    is told apart by it."""
    credential: str = ANONYMOUS
    """Who sent it (``security.credential``): the same key from another credential is
    another key."""


def header_value(scope: Scope) -> str | None:
    """The request's ``Idempotency-Key``, or None; :class:`MalformedIdempotencyKey` if repeated.

    Read from the ASGI scope's raw headers: a header parameter in the handler's signature makes
    Litestar build the request's header map and extract the parameter for every create, keyed or
    not (what that costs: ``tests/benchmarks/RESULTS-choices.md``).
    """
    found = [value for name, value in scope["headers"] if name == _HEADER_NAME]
    if not found:
        return None
    if len(found) > 1:
        raise MalformedIdempotencyKey
    return found[0].decode("latin-1")


def keyed(scope: Scope) -> bool:
    """Whether a retry of this request with the same key is safe, whatever became of it.

    So it is when its operation honours keys (its route's ``opt`` says ``HONOURS_KEYS``) and it
    came with an ``Idempotency-Key``: the write is done at most once for the key.
    """
    handler = scope.get("route_handler")
    if handler is None or not handler.opt.get(HONOURS_KEYS):
        return False
    return any(name == _HEADER_NAME for name, _ in scope["headers"])


def request_key(
    header: str, operation: str, request: bytes, credential: str = ANONYMOUS
) -> RequestKey:
    """The key ``header`` holds (unquoted), with ``operation``'s fingerprint and its credential.

    ``request`` is the request as decoded and encoded again (canonical: fields the API ignores
    are gone, ``age`` absent or null are alike). Raises :class:`MalformedIdempotencyKey`.
    """
    if len(header) > KEY_MAX_LENGTH or not _SYNTAX.fullmatch(header):
        raise MalformedIdempotencyKey
    key = _ESCAPE.sub(r"\1", header[1:-1]) if header.startswith('"') else header
    digest = hashlib.sha256(operation.encode() + b"\n" + request).digest()
    return RequestKey(key, digest, credential)


def key_for(
    request: Request[Any, Any, Any], operation: str, data: object
) -> tuple[RequestKey, timedelta] | tuple[()]:
    """What follows the body in a resource's keyed insert, if the request sends a key.

    The key the request sends in ``Idempotency-Key`` for ``operation`` (with its body ``data``
    encoded again) and how long keys are kept; nothing when it sends none.
    """
    # Documented by the resource's ResourceDocs.headers_read_raw (see header_value).
    header = header_value(request.scope)
    if header is None:
        return ()
    key = request_key(header, operation, msgspec.json.encode(data), credential(request.scope))
    return key, request.app.state[KEY_RETENTION_STATE]


def created(row: Any, version: int, replayed: bool, location: str) -> JsonResponse[Any]:
    """A create's 201: the row, its URL, its ``ETag``, and whether it is given again.

    ``Idempotent-Replayed: true`` when it is the first answer given again, for a retried key.
    """
    headers = {"Location": location, "ETag": etags.etag(version)}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return JsonResponse(row, status_code=201, headers=headers)


DAY = timedelta(days=1)


class Created(NamedTuple, Generic[T]):
    """A create's answer: the row, and whether it is the first answer given again."""

    stored: Stored[T]
    replayed: bool


async def create_once(
    db: Database,
    creates: KeyedCreates[T],
    values: dict[str, Any],
    key: RequestKey | None = None,
    retention: timedelta = DAY,
) -> Created[T]:
    """Store a new row of ``creates``' resource with ``values``, and return it with its id.

    With a ``key``: at most once. If the key's credential stored it within ``retention`` with
    the same request, nothing is stored and the first answer is returned again (``replayed``);
    with another request (another body, or another resource's create), :class:`KeyReused`; if
    a create with it is still running, :class:`KeyInProgress`. The key is stored with the row,
    in the same transaction.
    """
    at = now()
    if key is None:
        (created,) = await db.fetch_all(creates.insert, **values, now=at)
        return Created(created, replayed=False)
    try:
        found = await creates.create(db, values, key, now=at, cutoff=at - retention)
    except InProgress:
        raise KeyInProgress from None
    except ReferenceMissing:
        raise  # a value of the request, not the key: the resource says which
    except WriteRefused:
        # Until migration 0005 the key alone is unique: another credential holds this one.
        raise KeyReused from None
    if isinstance(found, Stored):
        return Created(found, replayed=False)
    if found.request_hash != key.request_hash:
        raise KeyReused
    return Created(creates.first_answer(found, values), replayed=True)
