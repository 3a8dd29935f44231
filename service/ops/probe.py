"""The container's HEALTHCHECK: ``python -m service.ops.probe`` exits 0 when this service is live.

It asks ``/health/live`` on 127.0.0.1 at ``PORT``, over HTTPS when ``TLS_CERT_FILE`` is set (the
service then answers nothing over plain HTTP), as the settings say, read as the service reads
them. The certificate is not checked: it names the public host, not 127.0.0.1, and the peer is
this container's own service. The health checks answer whatever ``Host`` they are sent, so
``ALLOWED_HOSTS`` does not get in the way. It imports no more than the settings, as it runs
every 30 seconds.
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

from service.settings import Settings, SettingsError

TIMEOUT_SECONDS = 2.0
"""Within the HEALTHCHECK's ``--timeout`` (3 s)."""


def live_url(settings: Settings) -> str:
    """The URL of this host's ``/health/live``, in the scheme the service serves."""
    scheme = "https" if settings.tls_cert_file else "http"
    return f"{scheme}://127.0.0.1:{settings.port}/health/live"


def main() -> None:
    """Ask ``/health/live``; exit 1 with one line saying why when it does not answer 200."""
    try:
        url = live_url(Settings.from_env())
    except SettingsError as exc:
        sys.exit(f"probe: {exc}")
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as answer:  # noqa: S310 (http or https, built above)
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        sys.exit(f"probe: {url}: {exc}")
    if status != 200:  # noqa: PLR2004
        sys.exit(f"probe: {url} answered {status}")


if __name__ == "__main__":
    main()
