"""HTML rendering: one Jinja2 environment with autoescaping on for every template.

Everything a page shows from the ledger (run names, paths, messages, stack
traces) is user-controlled, so templates never mark a value safe; links are
built with :func:`url`, which percent-encodes every parameter.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import jinja2

__all__ = ["Renderer", "url"]


def url(path: str, **params: Any) -> str:
    """``path`` with the non-empty ``params`` as an encoded query string."""
    query = urlencode([(k, str(v)) for k, v in params.items() if v is not None and v != ""])
    return f"{path}?{query}" if query else path


def _when(t: Any) -> str:
    if t is None:
        return "-"
    if isinstance(t, str):
        return t
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(t)))


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _short(digest: Any) -> str:
    text = str(digest or "")
    algo, colon, hexpart = text.partition(":")
    return f"{algo}:{hexpart[:12]}…" if colon and len(hexpart) > 12 else text


def _hours(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.3f}"


def _size(n: Any) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return str(n)  # unreachable


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


class Renderer:
    """Renders the package's templates."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("trainguard.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["url"] = url
        self.env.filters.update(
            when=_when, duration=_duration, short=_short, hours=_hours, size=_size, pretty=_pretty
        )

    def render(self, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(**context)
