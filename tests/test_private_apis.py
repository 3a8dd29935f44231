"""The framework internals the service subclasses, patches or calls, each checked by name.

The service reaches below the public APIs of uvicorn, Litestar, SQLAlchemy, advanced-alchemy,
OpenTelemetry and the drivers where their public APIs cost too much or cannot do the job (each
place says why). An upgrade that renames or moves one of these would not fail loudly there: an
override would no longer be called, a patched module global no longer read, and the service
would misbehave somewhere else. These tests fail first, naming the symbol; when one fails,
re-read the upstream code the service copies or patches, adapt the service, then this test.

The 0.x packages among them (uvicorn, asyncpg, opentelemetry-instrumentation-sqlalchemy) are
capped in pyproject.toml at the newest minor version tested.
"""

from __future__ import annotations

import ast
import asyncio.sslproto
import importlib
import inspect
import logging.handlers
import sqlite3
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
import uvloop.loop
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemySyncConfig
from advanced_alchemy.extensions.litestar import _utils as advanced_alchemy_utils
from advanced_alchemy.extensions.litestar.plugins.init.config.common import (
    SESSION_TERMINUS_ASGI_EVENTS,
)
from litestar import Litestar, Request
from litestar import _multipart as litestar_multipart
from litestar.connection import ASGIConnection
from litestar.constants import RESERVED_KWARGS
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.logging import LoggingConfig
from litestar.utils.scope.state import ScopeState
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from uvicorn.protocols.http import httptools_impl
from uvicorn.supervisors import multiprocess

from service.database.faults import DRIVER_ERRORS, SQLITE_RESULT_CODES
from service.database.statements import Statement
from service.database.tables import Hero
from tests.conftest import PLUGIN_KEY_REGISTRIES


def parameters(function: Callable[..., Any]) -> list[str]:
    """The names of ``function``'s parameters, in order."""
    return list(inspect.signature(function).parameters)


def assigned(function: Callable[..., Any]) -> set[str]:
    """The attributes ``function`` sets on ``self`` (``self.name = ...``), read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    names = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for element in target.elts if isinstance(target, ast.Tuple) else [target]:
                if (
                    isinstance(element, ast.Attribute)
                    and isinstance(element.value, ast.Name)
                    and element.value.id == "self"
                ):
                    names.add(element.attr)
    return names


def globals_read(function: Callable[..., Any]) -> set[str]:
    """The module-level names ``function`` looks up when it runs."""
    return set(inspect.getclosurevars(function).globals)


# uvicorn: service/connections.py subclasses the httptools protocol; service/serving.py the
# supervisor and its worker process.


def test_uvicorn_httptools_protocol_is_built_and_called_as_bounded_http_protocol_expects() -> None:
    protocol = httptools_impl.HttpToolsProtocol
    assert parameters(protocol.__init__) == ["self", "config", "server_state", "app_state", "_loop"]
    overridden = [
        "connection_made",
        "connection_lost",
        "data_received",
        "on_response_complete",
        "on_message_begin",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "send_400_response",
    ]
    assert [
        name for name in overridden if not inspect.isfunction(getattr(protocol, name, None))
    ] == []
    state = assigned(protocol.__init__) | assigned(protocol.connection_made)
    used = {"loop", "parser", "server_state", "connections", "transport", "flow", "pipeline"}
    assert used - state == set()
    assert {"client", "headers", "cycle"} - state == set()
    assert {"url", "headers"} - assigned(protocol.on_message_begin) == set()


def test_uvicorn_request_cycle_has_what_the_body_timeout_reads_and_replaces() -> None:
    cycle = httptools_impl.RequestResponseCycle
    state = assigned(cycle.__init__)
    assert {"keep_alive", "response_complete", "response_started", "message_event"} - state == set()
    assert "more_body" in state  # False once the request is in whole: then it is "serving"
    assert inspect.iscoroutinefunction(cycle.receive)  # replaced per request by a timed one


def test_the_loops_tls_protocols_are_made_as_bounded_http_protocol_makes_them() -> None:
    # BoundedHttpProtocol puts the loop's TLS protocol in place itself, as create_server(ssl=...)
    # does, so that a handshake is counted and timed from accept.
    expected = ["loop", "app_protocol", "sslcontext", "waiter", "server_side"]
    assert parameters(asyncio.sslproto.SSLProtocol.__init__)[1:6] == expected
    assert "ssl_handshake_timeout" in parameters(asyncio.sslproto.SSLProtocol.__init__)
    assert isinstance(uvloop.loop.SSLProtocol, type)  # type: ignore[attr-defined]
    assert inspect.isfunction(uvicorn.Server._log_started_message)


def test_uvicorn_status_lines_are_a_table_of_bytes_by_code() -> None:
    assert httptools_impl.STATUS_LINE[431] == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


def test_uvicorn_supervisor_makes_every_worker_through_the_module_global_process() -> None:
    # service.serving.Supervisor replaces multiprocess.Process to make DrainingProcess workers:
    # a method that makes workers some other way would make workers that do not drain.
    supervisor = multiprocess.Multiprocess
    makers = [supervisor.init_processes, supervisor.restart_all, supervisor.keep_subprocess_alive]
    assert [method.__name__ for method in makers if "Process" not in globals_read(method)] == []
    assert parameters(supervisor.__init__) == ["self", "config", "sockets"]
    assert {"sockets", "processes", "signal_queue"} - assigned(supervisor.__init__) == set()
    assert inspect.isfunction(supervisor.handle_int)
    assert inspect.isfunction(supervisor.handle_hup)


def test_uvicorn_worker_process_builds_its_server_in_an_overridable_property() -> None:
    process = multiprocess.Process
    assert parameters(process.__init__) == ["self", "config", "sockets"]
    assert {"_server", "process"} - assigned(process.__init__) == set()
    assert isinstance(inspect.getattr_static(process, "server"), property)
    assert "server" in process.target.__code__.co_names  # the worker serves through it
    assert inspect.isfunction(process.terminate)
    # DrainingProcess.target runs in the worker first (the process is pickled with it, spawned).
    assert parameters(process.target) == ["self", "sockets"]
    assert "self.target" in inspect.getsource(process.__init__)


# Litestar: service/http/decoding.py (StrictRequest), service/ops/requests.py (ServiceApp).


def test_litestar_request_caches_content_length_and_type_in_these_slots() -> None:
    slots = {slot for cls in Request.__mro__ for slot in getattr(cls, "__slots__", ())}
    assert {"_content_length", "_content_type", "_connection_state"} - slots == set()
    assert "_connection_state" in ASGIConnection.__slots__
    assert "content_type" in ScopeState.__slots__


def test_litestar_request_content_type_parses_with_its_multipart_helper() -> None:
    assert "parse_content_header" in globals_read(Request.content_type.fget)  # type: ignore[attr-defined]
    assert litestar_multipart.parse_content_header("application/json; charset=utf-8") == (
        "application/json",
        {"charset": "utf-8"},
    )


def test_litestar_route_handlers_describe_their_data_field() -> None:
    assert isinstance(inspect.getattr_static(HTTPRouteHandler, "parsed_data_field"), property)
    assert {"data", "request", "scope"} <= RESERVED_KWARGS


def test_litestar_app_call_does_only_what_service_app_repeats() -> None:
    # ServiceApp.__call__ replaces Litestar.__call__ for HTTP: it sets the scope's app, runs
    # asgi_handler, and wraps send running before_send itself, as _wrap_send does.
    assert set(Litestar.__call__.__code__.co_names) == {
        "asgi_router",
        "lifespan",
        "asgi_handler",
        "_wrap_send",
        "setdefault",
    }
    assert set(Litestar._wrap_send.__code__.co_names) == {"before_send"}
    assert {"asgi_handler", "before_send"} - assigned(Litestar.__init__) == set()


def test_litestar_app_moves_opentelemetry_middleware_in_the_method_service_app_overrides() -> None:
    assert isinstance(
        inspect.getattr_static(Litestar, "_patch_opentelemetry_middleware"), staticmethod
    )
    assert "_patch_opentelemetry_middleware" in Litestar.__init__.__code__.co_names


def test_litestar_logging_defines_the_queue_handler_for_this_python() -> None:
    # service.ops.requests.logging_config names Litestar's "queue_listener" without defining it.
    handler = LoggingConfig(handlers={}).handlers["queue_listener"]
    expected = (
        "logging.handlers.QueueHandler"
        if sys.version_info >= (3, 12)
        else "litestar.logging.standard.QueueListenerHandler"
    )
    assert handler["class"] == expected
    assert issubclass(logging.handlers.QueueHandler, logging.Handler)


# SQLAlchemy: service/database/statements.py runs compiled statements on the drivers itself.


@pytest.mark.parametrize(
    "dialect",
    [sqlite_dialect.dialect(), postgresql.asyncpg.dialect()],  # type: ignore[no-untyped-call]
    ids=["sqlite", "asyncpg"],
)
def test_sqlalchemy_compiled_statements_keep_their_converters_where_statement_reads_them(
    dialect: sa.Dialect,
) -> None:
    compiled: Any = sa.select(Hero).where(Hero.id == 1).compile(dialect=dialect)
    assert isinstance(compiled._bind_processors, dict)
    assert all(hasattr(column, "type") for column in compiled._result_columns)
    assert list(compiled.positiontup) == ["id_1"]
    column_type = compiled._result_columns[0].type
    assert parameters(column_type._cached_result_processor) == ["dialect", "coltype"]
    assert Statement(sa.select(Hero).where(Hero.id == 1)).compiled(dialect).sql == compiled.string


# advanced-alchemy: service/database/engines.py closes sessions itself; tests/conftest.py
# empties its key registries between tests.


def test_advanced_alchemy_registries_are_sets_shared_by_both_configs() -> None:
    for name in PLUGIN_KEY_REGISTRIES:
        registry = getattr(SQLAlchemyAsyncConfig, name)
        assert isinstance(registry, set), name
        assert registry is getattr(SQLAlchemySyncConfig, name), name


def test_advanced_alchemy_scope_state_helpers_take_the_scope_and_key() -> None:
    assert parameters(advanced_alchemy_utils.get_aa_scope_state)[:2] == ["scope", "key"]
    assert parameters(advanced_alchemy_utils.delete_aa_scope_state) == ["scope", "key"]
    assert {"http.response.start", "http.disconnect"} <= set(SESSION_TERMINUS_ASGI_EVENTS)


# OpenTelemetry: service/ops/tracing.py attaches EngineTracer to the app's engine only.


def test_opentelemetry_engine_tracer_listens_to_the_engine_it_is_given() -> None:
    assert parameters(EngineTracer.__init__)[:4] == [
        "self",
        "tracer",
        "engine",
        "connections_usage",
    ]
    engine = sa.create_engine("sqlite://")
    try:
        assert not engine.dispatch.before_cursor_execute
        tracer = EngineTracer(None, engine, None)  # type: ignore[no-untyped-call]
        assert (
            engine.dispatch.before_cursor_execute
        )  # what service.database.statements.traced reads
        tracer.remove_all_event_listeners()  # type: ignore[no-untyped-call]
    finally:
        engine.dispose()


# The drivers: service/database/faults.py names their errors by module and class.


@pytest.mark.parametrize("path", sorted(DRIVER_ERRORS))
def test_driver_error_classes_live_where_the_fault_table_names_them(path: str) -> None:
    module_name, _, class_name = path.rpartition(".")
    found = getattr(importlib.import_module(module_name), class_name, None)
    assert isinstance(found, type), f"{path} is gone"
    assert issubclass(found, Exception)
    assert f"{found.__module__}.{found.__qualname__}" == path


def test_sqlite3_has_every_result_code_the_fault_table_names() -> None:
    assert [name for name in SQLITE_RESULT_CODES if not hasattr(sqlite3, name)] == []


# pytest and pytest-xdist: tests/conftest.py groups the tests that share a module's fixture.


def test_pytest_items_know_their_fixtures_scopes(
    request: pytest.FixtureRequest, tmp_path: object
) -> None:
    definitions = request.node._fixtureinfo.name2fixturedefs
    assert definitions["tmp_path"][-1].scope == "function"


def test_xdist_loadgroup_reads_the_groups_when_the_items_are_collected() -> None:
    from xdist.remote import WorkerInteractor  # type: ignore[import-untyped]  # noqa: PLC0415

    hook = WorkerInteractor.pytest_collection_modifyitems
    assert "xdist_group" in inspect.getsource(hook)
