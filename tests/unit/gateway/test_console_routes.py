"""The console's static routes: files from the package, content types, CSP, no traversal."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources

import httpx
import pytest
from fastapi import FastAPI

from gateway.api.console_routes import CONTENT_SECURITY_POLICY, router

WEB = resources.files("gateway").joinpath("web")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


@pytest.mark.parametrize(
    ("path", "name", "content_type"),
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/console/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/console/app.css", "app.css", "text/css; charset=utf-8"),
    ],
)
async def test_serves_package_files(
    client: httpx.AsyncClient, path: str, name: str, content_type: str
) -> None:
    r = await client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert r.content == WEB.joinpath(name).read_bytes()
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_csp_is_same_origin_only() -> None:
    directives = dict(
        (d.split(" ", 1)[0], d.split(" ", 1)[1]) for d in CONTENT_SECURITY_POLICY.split("; ")
    )
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["media-src"] == "'self' blob:"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY


def test_console_references_nothing_outside_the_origin() -> None:
    for name in ("index.html", "app.js", "app.css"):
        text = WEB.joinpath(name).read_text("utf-8")
        # the only absolute URL allowed is the SVG namespace, which is an identifier
        urls = set(re.findall(r"https?://[^\s'\"`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{name} refers to {urls}"
        assert "@import" not in text and "<script>" not in text.replace(" ", "")
    html = WEB.joinpath("index.html").read_text("utf-8")
    assert 'src="/console/app.js"' in html and 'href="/console/app.css"' in html


async def test_etag_revalidation(client: httpx.AsyncClient) -> None:
    first = await client.get("/console/app.js")
    etag = first.headers["etag"]
    again = await client.get("/console/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_head(client: httpx.AsyncClient) -> None:
    r = await client.head("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert int(r.headers["content-length"]) == len(WEB.joinpath("index.html").read_bytes())


@pytest.mark.parametrize(
    "path",
    [
        "/console/missing.js",
        "/console/..%2f__init__.py",
        "/console/%2e%2e",
        "/console/.hidden.js",
        "/console/index.py",
        "/console/app.js.map",
    ],
)
async def test_unknown_or_unsafe_names_are_404(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert "def " not in r.text


async def test_console_needs_no_token_in_the_full_api() -> None:
    """The route table of the real API serves / without auth (the data calls carry it)."""
    from gateway.api import create_api

    class _Gw:  # create_api only stores it; the console routes never touch it
        pass

    app = create_api(_Gw())  # type: ignore[arg-type]  # a stand-in: no data route is called
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        r = await c.get("/")
    assert r.status_code == 200
    assert "<main" in r.text
