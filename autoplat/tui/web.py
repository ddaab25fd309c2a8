"""`platform tui --web`: the same app served to a browser by textual-serve.

Each browser tab gets its own `platform tui` process (without --web), read-only like the
terminal one. textual-serve has no login: it binds to 127.0.0.1 unless ``--host`` says
otherwise, and the way in from another machine is an SSH tunnel (docs/tui.md).
"""

from __future__ import annotations

import argparse
import shlex
import socket
import sys
from typing import Any

from autoplat.core.errors import AutoplatError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
WILDCARDS = {"", "0.0.0.0", "::"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def app_command(args: argparse.Namespace, url: str) -> str:
    """The shell command textual-serve runs for each browser session."""
    cmd = [sys.executable, "-m", "autoplat.cli", "tui", "--storage", url]
    cmd += ["--interval", f"{args.interval:g}"]
    if args.study:
        cmd += ["--study", args.study]
    return shlex.join(cmd)


def public_url(host: str, port: int) -> str:
    """The address a browser opens (and the page's websocket uses)."""
    name = socket.gethostname() if host in WILDCARDS else host
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


def check_port(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served (None: it can): a bad host is bad input
    (AutoplatError), a taken port is the machine's state (returned)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AutoplatError(
            f"--host {host}: not an address of this machine ({exc.strerror}); "
            f"use {DEFAULT_HOST} (the default) or an interface's address"
        ) from None
    family, kind, _, _, address = infos[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return f"cannot serve on {host}:{port}: {exc.strerror}; pick another --port"
    return None


def serve(args: argparse.Namespace, url: str) -> int:
    """Serve the TUI until Ctrl-C; 1 when the port cannot be bound."""
    from textual_serve.server import Server

    problem = check_port(args.host, args.port)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    address = public_url(args.host, args.port)

    class TuiServer(Server):
        async def on_startup(self, app: Any) -> None:  # our lines, not textual-serve's logo
            print(f"platform tui serving {url} at {address}  (Ctrl-C stops)", flush=True)
            if args.host not in LOOPBACK:
                print(
                    f"warning: bound to {args.host}: anyone who can reach port {args.port} "
                    "can watch (no login); prefer the default 127.0.0.1 and an SSH tunnel",
                    flush=True,
                )
            else:
                print(
                    f"from another machine: ssh -L {args.port}:127.0.0.1:{args.port} "
                    f"{socket.gethostname()}, then open {address}",
                    flush=True,
                )

    server = TuiServer(
        app_command(args, url),
        host=args.host,
        port=args.port,
        title=f"platform tui · {url}",
        public_url=address,
    )
    server.serve()
    return 0
