"""``gbgw`` command line: serve, simulate, check-config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("gbgw.cli")


def _install_loop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable without
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _load(path: str | None):  # type: ignore[no-untyped-def]  # returns GatewayConfig
    from gateway.config import ConfigError, load_config

    try:
        return load_config(Path(path) if path else None)
    except ConfigError as exc:
        print(f"gbgw: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except FileNotFoundError as exc:
        print(f"gbgw: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file and print the effective configuration, secrets redacted."""
    from gateway.config import to_toml_text

    config = _load(args.config)
    print(to_toml_text(config, redact=True), end="")
    return 0


async def _serve(config) -> int:  # type: ignore[no-untyped-def]
    from gateway.app import Gateway

    gw = Gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await gw.start()
    except OSError as exc:
        log.error("startup.failed error=%s", str(exc).replace(" ", "_"))
        await gw.stop()
        return 1
    # Start-up objects (config, routes, loaded devices) live for the whole run: keep them out
    # of the cyclic GC's generations, and collect less often under registration storms
    # (a full collection over a large device table costs more than the garbage it finds).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    fields = " ".join(f"{k}={v}" for k, v in gw.ready_fields().items())
    log.info(f"ready {fields} gateway_id={config.gateway.id} domain={config.gateway.domain}")
    await stop.wait()
    log.info("shutdown.begin")
    await gw.stop()
    log.info("shutdown.done")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway until SIGINT/SIGTERM."""
    from gateway.logs import configure_logging

    config = _load(args.config)
    configure_logging(config.log.level, config.log.format)
    _install_loop()
    return asyncio.run(_serve(config))


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run a simulated device fleet against a gateway."""
    from gateway.logs import configure_logging
    from gateway.simulate import SimulatorOptions, run_simulator

    configure_logging("warning" if not args.verbose else "info", "console")
    _install_loop()
    host, _, port = args.gateway.rpartition(":")
    opts = SimulatorOptions(
        devices=args.devices,
        gateway_host=host or "127.0.0.1",
        gateway_port=int(port),
        password=args.password,
        transport=args.transport,
        keepalive=args.keepalive,
        id_prefix=args.id_prefix,
        server_id=args.server_id,
        domain=args.domain,
        expires=args.expires,
        duration=args.duration,
        rate=args.rate,
        local_host=args.local_host,
        channels=args.channels,
        civil_code=args.civil_code,
        per_fragment=args.per_fragment,
        media=args.media,
    )
    return asyncio.run(run_simulator(opts))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="gbgw", description="GB/T 28181 gateway")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("-c", "--config", help="TOML config file (default: built-in defaults)")
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("check-config", help="validate a config file and print it, redacted")
    c.add_argument("config", help="TOML config file")
    c.set_defaults(func=cmd_check_config)

    m = sub.add_parser("simulate", help="simulate a fleet of GB/T 28181 devices")
    m.add_argument("--devices", type=int, default=10, help="number of devices (default 10)")
    m.add_argument("--gateway", required=True, help="gateway SIP address HOST:PORT")
    m.add_argument("--password", default="12345678", help="device password")
    m.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    m.add_argument("--keepalive", type=float, default=60.0, help="keepalive interval, seconds")
    m.add_argument(
        "--id-prefix",
        default="6209000000132",
        help="first 13 digits of device IDs (center code, industry, type); serials follow",
    )
    m.add_argument("--server-id", default="62090000002000000001", help="the gateway's SIP ID")
    m.add_argument("--domain", default="", help="SIP domain (default: server ID's first 10)")
    m.add_argument("--expires", type=int, default=3600, help="registration lifetime, seconds")
    m.add_argument(
        "--duration", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C)"
    )
    m.add_argument("--rate", type=float, default=0.0, help="REGISTERs per second (0: unpaced)")
    m.add_argument("--local-host", default="127.0.0.1", help="local address to bind")
    m.add_argument("--channels", type=int, default=4, help="cameras per device (catalog)")
    m.add_argument("--civil-code", default="620902", help="civil code of the channels")
    m.add_argument("--per-fragment", type=int, default=2, help="catalog items per MESSAGE")
    m.add_argument(
        "--media", default="", help="PS file streamed on INVITE (UDP, TCP active or passive)"
    )
    m.add_argument("-v", "--verbose", action="store_true")
    m.set_defaults(func=cmd_simulate)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gbgw`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
