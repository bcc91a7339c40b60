"""The web console in a real browser (Debian chromium driven by Playwright) against a real
`gbgw serve` and a `gbgw simulate` camera: live view over WebRTC, KPI numbers equal to the
API's, and a token without the camera's zone seeing neither the channel nor its stream."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import av
import numpy as np
import pytest
from playwright import sync_api

from tests.interop.harness import ROOT, GatewayProcess, gateway_config, wait_until
from tests.interop.test_media import CHANNEL, DEVICE, H264, Sim

pytestmark = pytest.mark.interop

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own download is never used

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
ARTIFACTS = ROOT / "test-artifacts"
ADMIN = "console-admin-1"  # http.token: the operator, sees every zone
PUBLIC_ONLY = "console-public-2"  # a [[token]] without the simulated camera's zone
SECOND = "62090000001310001002"  # the simulator's second channel
KPI_FIELDS = (
    "devices_online",
    "devices_known",
    "channels_online",
    "channels_known",
    "online_rate",
    "planned",
    "networking_rate",
    "availability",
    "hd_rate",
    "meets_target",
)


def _config(tmp_path: Path) -> str:
    # The simulator's channels have civil code 620902: zone "police", which PUBLIC_ONLY lacks.
    # ICE only on loopback (the gateway would otherwise offer the host's real addresses).
    return (
        gateway_config(tmp_path, http={"token": ADMIN}, webrtc={"host_addresses": ["127.0.0.1"]})
        + f"""
[[zone]]
name = "police"
civil_code = ["620902"]
class = 1

[[token]]
name = "public"
secret = "{PUBLIC_ONLY}"
zones = ["default"]
classes = [1, 2, 3]
"""
    )


def _channels(gw: GatewayProcess) -> set[str]:
    with gw.api(ADMIN) as c:
        r = c.get(f"/api/devices/{DEVICE}/channels")
    return {ch["channel_id"] for ch in r.json()} if r.status_code == 200 else set()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway with one simulated camera (two channels) streaming H.264 on request."""
    gw = GatewayProcess(tmp_path, _config(tmp_path)).start()
    sim = Sim(gw, H264)
    try:
        wait_until(
            lambda: {CHANNEL, SECOND} <= _channels(gw), timeout=30, what="simulated channels"
        )
        yield gw
    finally:
        if sim.proc.poll() is None:
            sim.kill()
        gw.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):  # a missing peer fails, as harness.require does
        pytest.fail(f"{CHROMIUM} is not installed; run `make test` as root to install the peers")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def wait_hash(page: Any, want: str, timeout: float = 10_000) -> None:
    """Wait for the console's route. (Predicates are functions: the console's CSP forbids the
    string eval that Playwright uses for bare expressions.)"""
    page.wait_for_function("(want) => location.hash === want", arg=want, timeout=timeout)


def open_console(browser: Any, gw: GatewayProcess, token: str) -> tuple[Any, list[str]]:
    """A fresh page logged in with ``token`` through the login form, and the list that
    collects the page's uncaught script errors and CSP violations."""
    # A zone far from UTC, so a timestamp shown in UTC instead of local time is caught.
    page = browser.new_page(
        viewport={"width": 1280, "height": 900}, timezone_id="Asia/Shanghai", locale="en-GB"
    )
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The console must run under its own strict CSP: a violation is an error too.
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(gw.http_url + "/")
    page.locator("#token").fill(token)
    page.locator("#token").press("Enter")
    wait_hash(page, "#/devices")
    page.get_by_text("devices online.").wait_for(timeout=10_000)
    return page, errors


def _streams(gw: GatewayProcess) -> list[dict[str, Any]]:
    with gw.api(ADMIN) as c:
        streams: list[dict[str, Any]] = c.get("/api/streams").json()
    return streams


def mean_pixel(png: bytes) -> float:
    """Mean 8-bit RGB value of a PNG (decoded by PyAV)."""
    with av.open(io.BytesIO(png), format="png_pipe") as c:
        frame = next(c.decode(video=0))
    return float(np.asarray(frame.to_ndarray(format="rgb24")).mean())


def test_live_view_plays_from_the_tree(fleet: GatewayProcess, browser: Any) -> None:
    page, errors = open_console(browser, fleet, ADMIN)
    device_row = page.locator(f'[data-testid="device-{DEVICE}"]')
    assert "online" in device_row.inner_text()
    with fleet.api(ADMIN) as c:
        registered = datetime.fromisoformat(c.get(f"/api/devices/{DEVICE}").json()["registered_at"])
    local = registered.astimezone(ZoneInfo("Asia/Shanghai"))
    shown = device_row.locator("time").nth(1)  # last seen, registered, expires
    assert f"{local:%H:%M:%S}" in shown.inner_text()
    page.get_by_role("link", name="Channels", exact=True).click()
    # Keyboard only: open province > city > county, then the channel.
    for code in ("62", "6209", "620902"):
        node = page.locator(f'[data-key="n:civil:{code}"]')
        node.focus()
        node.press("Enter")
        page.wait_for_function(
            "(key) => document.querySelector(`[data-key='${key}']`)"
            "?.getAttribute('aria-expanded') === 'true'",
            arg=f"n:civil:{code}",
            timeout=5_000,
        )
    link = page.locator(f'[data-testid="tree-channel-{CHANNEL}"]')
    assert (
        "zone police"
        in page.locator(f'li.leaf:has([data-testid="tree-channel-{CHANNEL}"])').inner_text()
    )
    link.focus()
    link.press("Enter")
    wait_hash(page, f"#/live/{CHANNEL}")
    # Decoding: >25 frames and a moving clock, within 10 s of opening the live view.
    page.wait_for_function(
        """() => {
            const v = document.querySelector('#live-video');
            if (!v || !v.getVideoPlaybackQuality) return false;
            const frames = v.getVideoPlaybackQuality().totalVideoFrames;
            if (frames > 0 && window.__firstTime === undefined) window.__firstTime = v.currentTime;
            return frames > 25 && window.__firstTime !== undefined
                && v.currentTime > window.__firstTime;
        }""",
        timeout=10_000,
        polling=100,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console_live.png"))
    video_png = page.locator("#live-video").screenshot()
    assert mean_pixel(video_png) > 8, "the video element shows a black picture"
    stats = page.locator("#live-stats").inner_text()
    assert "Frames decoded" in stats
    # The stream and its WebRTC consumer are listed; leaving the page ends the session.
    streams = _streams(fleet)
    assert [s["channel_id"] for s in streams] == [CHANNEL]
    assert streams[0]["consumers"] >= 1
    with fleet.api(ADMIN) as c:
        sessions = c.get("/api/webrtc").json()
    assert [w["channel_id"] for w in sessions] == [CHANNEL]
    page.get_by_role("link", name="Streams", exact=True).click()
    page.locator(f'[data-testid="stream-{streams[0]["stream_id"]}"]').wait_for(timeout=5_000)

    def sessions_left() -> list[Any]:
        with fleet.api(ADMIN) as c:
            left: list[Any] = c.get("/api/webrtc").json()
        return left

    wait_until(
        lambda: not sessions_left() and all(s["consumers"] == 0 for s in _streams(fleet)),
        timeout=10,
        what="the WHEP session ended (DELETE) after leaving the live view",
    )
    assert errors == []


def _page_kpi(page: Any, group: str) -> dict[str, dict[str, str]]:
    """Every KPI cell of one table as {row key: {field: data-value}}."""
    return page.evaluate(
        """(group) => {
            const out = {};
            const cells = document.querySelectorAll(`[data-testid^="kpi-${group}-"][data-value]`);
            for (const td of cells) {
                const [, key, field] = td.dataset.testid.match(/^kpi-[a-z]+-(.+)-([a-z_]+)$/);
                (out[key] ||= {})[field] = td.dataset.value;
            }
            return out;
        }""",
        group,
    )


def _api_kpi(gw: GatewayProcess, token: str, group: str) -> dict[str, dict[str, str]]:
    """The same, from /api/kpi, in the page's string form (null -> "")."""
    with gw.api(token) as c:
        body = c.get("/api/kpi", params={"by": group}).json()
    fields = KPI_FIELDS

    def text(v: Any) -> str:
        return "" if v is None else json.dumps(v)

    return {str(r[group]): {f: text(r[f]) for f in fields} for r in body["rows"]}


def _same_numbers(
    page_rows: dict[str, dict[str, str]], api_rows: dict[str, dict[str, str]]
) -> bool:
    if page_rows.keys() != api_rows.keys():
        return False
    for key, fields in api_rows.items():
        for f, want in fields.items():
            got = page_rows[key].get(f)
            if got is None:
                return False
            if want in ("", "true", "false") or got in ("", "true", "false"):
                if got != want:
                    return False
            elif abs(float(got) - float(want)) > 1e-9:
                return False
    return True


def test_kpi_page_shows_the_api_numbers(fleet: GatewayProcess, browser: Any) -> None:
    page, errors = open_console(browser, fleet, ADMIN)
    page.get_by_role("link", name="KPI", exact=True).click()
    page.locator('[data-testid="kpi-county-620902-channels_known"]').wait_for(timeout=10_000)
    page.locator('[data-testid="kpi-chart-county"]').wait_for(timeout=5_000)
    for group in ("county", "class"):
        # The page polls; the numbers must match the API's for the same fleet.
        wait_until(
            lambda g=group: _same_numbers(_page_kpi(page, g), _api_kpi(fleet, ADMIN, g)),
            timeout=15,
            what=f"KPI by {group} on the page equal to /api/kpi",
        )
    rows = _page_kpi(page, "county")
    assert rows["620902"]["channels_known"] == "2"
    assert rows["620902"]["channels_online"] == "2"
    target = page.locator("#kpi-section-county").get_attribute("data-target")
    with fleet.api(ADMIN) as c:
        assert float(target) == c.get("/api/kpi").json()["target"]
    assert errors == []


def test_token_without_the_zone_sees_no_channel_and_no_stream(
    fleet: GatewayProcess, browser: Any
) -> None:
    page, errors = open_console(browser, fleet, PUBLIC_ONLY)
    assert page.get_by_text("0 of 0 devices online.").is_visible()
    page.get_by_role("link", name="Channels", exact=True).click()
    page.get_by_text("channels visible to this token").wait_for(timeout=10_000)
    assert page.get_by_text("0 channels visible to this token").is_visible()
    assert page.locator(f'[data-testid="tree-channel-{CHANNEL}"]').count() == 0
    assert CHANNEL not in page.content()
    # The live page for that channel shows the gateway's refusal...
    page.evaluate(f"location.hash = '#/live/{CHANNEL}'")
    page.wait_for_function(
        "() => document.querySelector('#live-error')?.textContent.startsWith('403')",
        timeout=10_000,
    )
    # ...and a WHEP offer from the page's own context is refused with 403.
    status = page.evaluate(
        """async ([channel, token]) => {
            const pc = new RTCPeerConnection({iceServers: []});
            pc.addTransceiver('video', {direction: 'recvonly'});
            await pc.setLocalDescription(await pc.createOffer());
            const r = await fetch(`/whep/${channel}`, {
                method: 'POST',
                headers: {'Authorization': `Bearer ${token}`, 'Content-Type': 'application/sdp'},
                body: pc.localDescription.sdp,
            });
            pc.close();
            return r.status;
        }""",
        [CHANNEL, PUBLIC_ONLY],
    )
    assert status == 403
    assert _streams(fleet) == []
    # Logging out clears everything; the login form is back.
    page.get_by_role("button", name="Log out").click()
    page.locator("#token").wait_for(timeout=5_000)
    assert page.evaluate("sessionStorage.length") == 0
    assert errors == []


def test_no_token_or_bad_token_stays_on_login(fleet: GatewayProcess, browser: Any) -> None:
    page = browser.new_page()
    page.goto(fleet.http_url + "/#/kpi")
    page.get_by_role("button", name="Continue without token").click()
    page.get_by_text("This gateway requires a token.").wait_for(timeout=5_000)
    page.locator("#token").fill("not-a-token")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("The gateway did not accept this token.").wait_for(timeout=5_000)
    # The right token returns to the page asked for first.
    page.locator("#token").fill(ADMIN)
    page.locator("#token").press("Enter")
    wait_hash(page, "#/kpi")
    page.locator('[data-testid="kpi-chart-county"]').wait_for(timeout=10_000)
    # Keyboard: the skip link comes first in tab order; it moves focus to the content and
    # leaves the route alone.
    first = "() => document.querySelector('a[href], button, input, select').id"
    assert page.evaluate(first) == "skip-link"
    page.locator("#skip-link").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    assert page.evaluate("() => location.hash") == "#/kpi"
    # A token that stops working (here: replaced behind the page's back) returns to login.
    page.evaluate("""() => sessionStorage.setItem('gbgw.session', '{"token": "revoked"}')""")
    page.reload()
    page.get_by_text("The gateway did not accept the token (401). Log in again.").wait_for(
        timeout=10_000
    )
    assert page.evaluate("() => sessionStorage.length") == 0


def test_gateway_without_tokens_needs_none(gateway: GatewayProcess, browser: Any) -> None:
    """Loopback development (no token configured): the console works without one."""
    page = browser.new_page()
    page.goto(gateway.http_url + "/")
    page.get_by_role("button", name="Continue without token").click()
    wait_hash(page, "#/devices")
    page.get_by_text("0 of 0 devices online.").wait_for(timeout=10_000)
    assert page.locator("#session-who").inner_text() == "No token (local gateway)"
