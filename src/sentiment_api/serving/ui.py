"""The ``/ui`` page, and ``POST /ui/table``, the one route it adds to the API.

The page is one HTML file (``static/ui.html``) with its styles and script inline: nothing is fetched
from anywhere but this service. It scores through the public API (``/predict``, ``/models``), with
the key typed into it, and reads files through ``/ui/table``, which answers a file's rows as JSON so
that the page needs no parser of its own (:mod:`.uploads`). The limits the page works within (texts
per batch, characters per text, file bytes and rows) are written into it when the app is built, from
the same settings the service enforces.

``/ui/table`` sits behind the API keys and the rate limit like ``/predict``, with its own body limit
(``ui_max_file_bytes``, see :mod:`.security`); it is the page's route, so not in the OpenAPI document.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib.resources import files

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import HTMLResponse, Response

from sentiment_api.core.errors import InputError
from sentiment_api.core.settings import Settings
from sentiment_api.serving.errors import json_response
from sentiment_api.serving.uploads import bad_rows, read_upload, text_column

TABLE_PATH = "/ui/table"
CONFIG_MARK = "{/* page config */}"


def install_ui(app: FastAPI, settings: Settings, request_models: tuple[type[BaseModel], ...]) -> None:
    """Serve the page at ``/ui`` and the route it reads files through at ``/ui/table``."""
    page = page_html(settings, request_models[0])

    async def ui() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_api_route("/ui", ui, include_in_schema=False)
    app.add_api_route(TABLE_PATH, upload_table, methods=["POST"], include_in_schema=False)


def page_html(settings: Settings, single_request: type[BaseModel]) -> str:
    """The page, with the service's limits and the options ``/predict`` takes written into it."""
    page = (files("sentiment_api.serving") / "static" / "ui.html").read_text(encoding="utf-8")
    config = {
        "max_batch_texts": settings.max_batch_texts,
        "max_text_chars": settings.max_text_chars,
        "max_file_bytes": settings.ui_max_file_bytes,
        "max_rows": settings.ui_max_rows,
        "explain_max_words": settings.explain_max_words,
        "options": sorted(set(single_request.model_fields) - {"text"}),
    }
    # "<" escaped, so that no value can close the script element it sits in
    return page.replace(CONFIG_MARK, orjson.dumps(config).decode().replace("<", "\\u003c"), 1)


async def upload_table(request: Request) -> Response:
    """Read the file in the body (its name, which says its format, in ``?name=``): its columns, every
    row as text, the text column (``?column=``, else guessed) and the rows ``/predict`` would refuse."""
    settings: Settings = request.app.state.settings
    name = request.query_params.get("name", "").strip()
    if not name:
        message = "name the file in ?name= (its suffix says its format: tweets.csv, tweets.xlsx, ...)"
        raise InputError(message, [{"field": "name", "message": message, "type": "missing"}])
    try:
        body = await request.body()
    except ClientDisconnect:
        return Response(status_code=499)  # gone before its body was in; nobody reads this
    # parsing takes a while for a large file: off the event loop, which goes on serving predictions
    table = await run_in_threadpool(read_upload, body, name, settings.ui_max_file_bytes, settings.ui_max_rows)
    column = text_column(table.columns, request.query_params.get("column"), name)
    return json_response(
        {
            "name": name,
            "format": table.format,
            "columns": table.columns,
            "text_column": column,
            "row_count": len(table.rows),
            "rows": table.rows,
            "bad_rows": [asdict(bad) for bad in bad_rows(table, column, settings.max_text_chars)],
        }
    )
