"""The gateway's live view (``GET /sessions``) for the hygiene audit, both ends.

The registry does not know who is connected; the gateway does, and the audit runs in another
process (the CLI, the API's child). So the gateway's observability listener answers
``/sessions``: every connected session (identity, certificate fingerprint, peer) and the
certificates whose session was taken over from another host. Unlike ``/metrics`` this names
devices and their addresses: it is served on the same loopback-only listener, and an operator
who exposes that listener beyond the host should put it behind authentication.
:func:`read_live_view` is the client side, bounded by a timeout; any failure is a
``LiveViewUnavailable`` whose message the audit reports as the reason its live checks were
skipped.
"""

from __future__ import annotations

import http.client
import json
from typing import TYPE_CHECKING

from tether.cloud.hygiene import ContestedCertificate, LiveSession, LiveView
from tether.cloud.observability.http import Reply
from tether.errors import ConfigurationError

if TYPE_CHECKING:
    from tether.cloud.gateway import Gateway

TIMEOUT = 5.0
MAX_BODY = 64 * 1024 * 1024  # 10,000s of sessions fit; a bound on what a client reads


class LiveViewUnavailable(ConfigurationError):
    """The gateway's live view could not be read (not running, wrong port, bad answer)."""

    code = "live_view_unavailable"


def sessions_reply(gateway: Gateway) -> Reply:
    """``/sessions``: the gateway's connected sessions and contested certificates, as JSON."""
    body = {
        "sessions": [
            {
                "identity": identity.name,
                "certificate_fingerprint": identity.certificate_fingerprint,
                "peer": peer,
            }
            for identity, peer in gateway.live_sessions()
        ],
        "contested": [
            {"identity": name, "certificate_fingerprint": fingerprint, "addresses": list(hosts)}
            for fingerprint, name, hosts in gateway.stats.contested()
        ],
    }
    return Reply(200, "application/json", json.dumps(body).encode())


def parse_live_view(raw: bytes) -> LiveView:
    """A ``LiveView`` from a ``/sessions`` body; ``LiveViewUnavailable`` if it is not one."""
    try:
        data = json.loads(raw)
        sessions = tuple(
            LiveSession(str(s["identity"]), str(s["certificate_fingerprint"]), str(s["peer"]))
            for s in data["sessions"]
        )
        contested = tuple(
            ContestedCertificate(
                str(c["identity"]),
                str(c["certificate_fingerprint"]),
                tuple(str(a) for a in c["addresses"]),
            )
            for c in data["contested"]
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise LiveViewUnavailable(
            f"the gateway's /sessions answer is not a live view: {exc}"
        ) from None
    return LiveView(sessions, contested)


def read_live_view(host: str, port: int) -> LiveView:
    """GET ``http://host:port/sessions`` (bounded); raises ``LiveViewUnavailable``."""
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        connection.request("GET", "/sessions")
        response = connection.getresponse()
        raw = response.read(MAX_BODY + 1)
    except OSError as exc:
        raise LiveViewUnavailable(
            f"cannot read the gateway's live view at http://{host}:{port}/sessions ({exc}); "
            "is `tether cloud serve` running with metrics enabled?"
        ) from None
    finally:
        connection.close()
    if response.status != 200 or len(raw) > MAX_BODY:
        raise LiveViewUnavailable(
            f"http://{host}:{port}/sessions answered {response.status}; is that a Tether gateway?"
        )
    return parse_live_view(raw)
