"""The OpenAPI document, and Swagger UI served from local files (the ``/ui`` page is :mod:`.ui`).

``/docs`` loads Swagger UI from the ``swagger-ui-bundle-v2`` package (a serve dependency), so it works
without internet access; ReDoc, which would need a CDN, is off.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.responses import HTMLResponse

from sentiment_api.serving.schemas import BatchPredictResponse, PredictResponse

ASSETS = "/docs/assets"


def install_openapi(app: FastAPI, request_models: tuple[type[BaseModel], ...]) -> None:
    """Complete the generated document with the models ``/predict`` validates by hand, and list the
    models served now wherever a ``{name}`` path parameter names one (a ``PUT`` may add a model)."""
    listed: tuple[str, ...] = ()

    def openapi() -> dict[str, Any]:
        nonlocal listed
        names = tuple(app.state.service.models)
        if names != listed:
            app.openapi_schema = None  # made before a model was added (or not made yet)
        if app.openapi_schema is None:
            listed = names
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in request_models]
            models += [(m, "serialization") for m in (PredictResponse, BatchPredictResponse)]
            _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            _list_model_names(schema, names)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _list_model_names(schema: dict[str, Any], names: tuple[str, ...]) -> None:
    """Every ``name`` path parameter that lists the served models lists ``names``."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("name") == "name" and "enum" in parameter.get("schema", {}):
                    parameter["schema"]["enum"] = list(names)


def install_docs(app: FastAPI) -> bool:
    """Serve Swagger UI at ``/docs`` from local assets; False if the assets are not installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return False
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    app.add_api_route("/docs", swagger, include_in_schema=False)
    return True
