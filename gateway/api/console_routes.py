"""The operator web console: ``/`` and its static files, read from the installed package.

The console is three files in ``gateway/web`` (no build step, nothing fetched at run time).
Loading them needs no token; every data call the console makes does. Answers carry a strict
Content-Security-Policy (same origin only; ``blob:`` for snapshots and media) and
``Cache-Control: no-cache`` with an ETag, so an upgraded gateway never serves a stale console.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

__all__ = ["CONTENT_SECURITY_POLICY", "router"]

router = APIRouter()

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
"""Same origin only: no CDN, no inline script or style, not framable."""

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# One path segment, a known extension: nothing can climb out of gateway/web.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _read(name: str) -> bytes | None:
    """A console file's bytes from the package (a wheel, a zip or a checkout), or None."""
    if not _NAME.fullmatch(name) or ".." in name:
        return None
    entry = resources.files("gateway").joinpath("web", name)
    if not entry.is_file():
        return None
    return entry.read_bytes()


def _serve(name: str, request: Request) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    media_type = _TYPES.get(suffix)
    body = _read(name) if media_type else None
    if body is None or media_type is None:
        raise HTTPException(404, f"no console file {name!r}")
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**_SECURITY_HEADERS, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return Response(status_code=200, media_type=media_type, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def console_index(request: Request) -> Response:
    """The console's single page (routing happens in the browser, after ``#``)."""
    return _serve("index.html", request)


@router.api_route("/console/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def console_file(name: str, request: Request) -> Response:
    """A static console file (``app.js``, ``app.css``)."""
    return _serve(name, request)
