"""A read-only web dashboard over the ledger: runs, alarms, charts, lineage, blast radius.

``trainguard dashboard`` serves it; in Python, :class:`DashboardServer` does.
Pages: the runs list with status and alarms; a run with its loss, gradient
norm and per-rank step-time charts (alarms marked on them) and the evidence
of each alarm; the lineage graph of an artifact or run; the blast radius of
any indicator; the ledger's tree head and verification status. Charts and
graphs are drawn in the browser by Chart.js and Cytoscape.js, served from the
package itself (see ``static/vendor/VENDOR.md``).

Safe by default: it binds to loopback and checks the ``Host`` header there;
bound to any other address it requires an access token; it has no write
endpoint (anything but GET and HEAD is a 405); every ledger string is
escaped; a strict Content-Security-Policy forbids inline script.

Example:
    >>> import tempfile, urllib.request
    >>> from trainguard.ledger import Ledger, Run
    >>> from trainguard.dashboard import DashboardConfig, DashboardServer
    >>> url = f"sqlite:///{tempfile.mkdtemp()}/ledger.db"
    >>> with Ledger.open(url, create=True) as ledger:
    ...     _ = ledger.append([Run("ft-1", user="ana", hosts=("gpu-001",), world_size=8,
    ...                            accelerator_type="H100", accelerator_count=8,
    ...                            started_at=1714000000)])
    >>> server = DashboardServer(DashboardConfig(ledger=url, port=0))
    >>> server.start()
    >>> with urllib.request.urlopen(server.url) as page:
    ...     b"ft-1" in page.read()
    True
    >>> server.stop()
"""

from __future__ import annotations

from trainguard.dashboard._config import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, DashboardConfig
from trainguard.dashboard._server import DashboardServer

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV", "DashboardConfig", "DashboardServer"]
