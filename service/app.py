"""The ASGI application: ``create_app(settings)`` builds one, ``app`` is the one uvicorn serves."""

from __future__ import annotations

from importlib.metadata import version

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Tag

from service.db import database_config, prepare_schema, provide_transaction
from service.errors import EXCEPTION_HANDLERS, decode_body_strictly
from service.heroes import HeroController, link_new_hero
from service.settings import Settings

DESCRIPTION = """\
The heroes of the SQL tutorial: create, list, read, update and delete them.

Every error answers with the same JSON body, `Error`: the HTTP `status_code`, a `detail` sentence
and, for invalid input, `extra`: one entry per wrong field, naming it (`key`), where it was
(`source`: body, query or path) and what is wrong with it (`message`).
"""


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application for ``settings`` (default: read from the environment)."""
    settings = Settings.from_env() if settings is None else settings
    database = database_config(settings)
    return Litestar(
        route_handlers=[HeroController],
        plugins=[SQLAlchemyPlugin(config=database)],
        on_startup=[lambda: prepare_schema(database), link_new_hero],
        dependencies={"transaction": Provide(provide_transaction)},
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=decode_body_strictly,
        request_max_body_size=settings.max_body_size,
        openapi_config=OpenAPIConfig(
            title="Hero service",
            version=version("hero-service"),
            description=DESCRIPTION,
            tags=[Tag(name="heroes", description="The heroes of the SQL tutorial.")],
            use_handler_docstrings=True,
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(), RedocRenderPlugin()],
        ),
    )


app = create_app()
