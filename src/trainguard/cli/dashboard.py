"""``trainguard dashboard``: the read-only web dashboard over the ledger.

Binds to 127.0.0.1 by default. Bound to any other address it requires an
access token (``--token``, ``$TRAINGUARD_DASHBOARD_TOKEN``, else a generated
one); the URL it prints carries it. A missing ledger is an error (exit 2),
never created. Serves until Ctrl-C (exit 0).
"""

from __future__ import annotations

import argparse
import os
import sys

HELP = "read-only web dashboard: runs, alarms, charts, lineage, blast radius, verification"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboard", help=HELP, description=HELP)
    p.add_argument(
        "--ledger",
        metavar="URL",
        help="sqlite:///PATH or postgresql://USER@HOST/DB[?schema=NAME] "
        "(default: $TRAINGUARD_LEDGER, else a SQLite file under the user data dir)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default 127.0.0.1; any other address requires the token)",
    )
    p.add_argument(
        "--port", type=int, default=8765, help="TCP port (default 8765; 0 picks a free one)"
    )
    p.add_argument(
        "--token",
        help="access token (default: $TRAINGUARD_DASHBOARD_TOKEN, else generated when "
        "bound beyond loopback); prefer the variable, a command line is visible in ps",
    )
    p.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="PEM",
        help="a trusted Ed25519 public key for verifying signed tree heads (repeatable)",
    )
    p.add_argument(
        "--open-browser", action="store_true", help="open the dashboard in a web browser"
    )
    p.add_argument(
        "--access-log", action="store_true", help="log each request to stderr (tokens masked)"
    )
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from trainguard.dashboard import TOKEN_ENV, DashboardConfig, DashboardServer
    from trainguard.ledger import PublicKey

    config = DashboardConfig(
        ledger=args.ledger,
        host=args.host,
        port=args.port,
        token=args.token or os.environ.get(TOKEN_ENV) or None,
        trusted_keys=tuple(PublicKey.from_file(p) for p in args.public_key),
        access_log=args.access_log,
    )
    server = DashboardServer(config)
    effective = server.config
    say = sys.stderr.write
    say(f"trainguard dashboard over {server.app.ledger_url.text}\n")
    if effective.is_exposed:
        say(
            f"listening on {effective.host}:{server.port}, reachable from other machines: "
            "every request needs the access token\n"
        )
    say(f"open {server.url}\n")
    say("press Ctrl-C to stop\n")
    sys.stderr.flush()
    if args.open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        say("stopped\n")
    finally:
        server.stop()
    return 0
