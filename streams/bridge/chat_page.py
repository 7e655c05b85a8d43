"""The chat page the bridge serves at ``/``: plain HTML, CSS and JavaScript from ``static/``, no build step.

The page speaks the README's WebSocket protocol to the same bridge (the API key goes in the connect URL, since
browsers cannot set headers on a WebSocket) and checks the key first with ``GET /v1/models``. Its Content Security
Policy allows nothing but this origin, so the page can make no third-party request even by mistake.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

STATIC_PATH = "/static/"
_FILES = {"chat.js": "text/javascript", "chat.css": "text/css"}
_HEADERS = {
    # 'self' covers ws:// and wss:// to this origin (CSP level 3).
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("streams.bridge").joinpath("static", name).read_bytes()


async def index(_request: web.Request) -> web.Response:
    return web.Response(body=_read("index.html"), content_type="text/html", charset="utf-8", headers=_HEADERS)


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _FILES:
        raise web.HTTPNotFound()
    return web.Response(body=_read(name), content_type=_FILES[name], charset="utf-8", headers=_HEADERS)


def add_routes(app: web.Application) -> None:
    """The page's assets; the page itself is served by the bridge's ``/`` route, which it shares with WebSockets."""
    app.router.add_get(STATIC_PATH + "{name}", _asset)
