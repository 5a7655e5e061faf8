"""Step 10: revoking a certificate drops the live device, and its reconnect is refused."""

from __future__ import annotations

import time

from tether.demo.state import DemoState
from tether.demo.steps.common import (
    CONSOLE_SERIAL,
    LOG_WAIT_S,
    Outcome,
    refusal,
    short,
)
from tether.pki import sha256_fingerprint


def revocation(state: DemoState) -> Outcome:
    """Revoke the console device's certificate while it is connected."""
    identity = state.identity(CONSOLE_SERIAL)
    fingerprint = sha256_fingerprint(identity.load_certificate())
    mark = state.log.mark()
    started = time.perf_counter()
    revoked = state.call_api(
        f"/api/v1/certificates/{fingerprint}/revoke", {"reason": "key_compromise"}, 200
    )
    dropped = state.log.wait_for(
        {"session_dropped"}, after=mark, identity=CONSOLE_SERIAL, timeout=LOG_WAIT_S
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    still = CONSOLE_SERIAL in {i.name for i in state.cloud.sessions()}
    live = state.client(CONSOLE_SERIAL)
    del state.clients[CONSOLE_SERIAL]
    live.disconnect()  # stop its automatic reconnects
    mark = state.log.mark()
    refused = refusal(identity, state.console_endpoint())
    reason = state.log.wait_for({"certificate_revoked"}, after=mark, timeout=LOG_WAIT_S)
    passed = (
        revoked["state"] == "revoked"
        and dropped is not None
        and not still
        and refused is not None
        and reason is not None
    )
    return Outcome(
        f"dropped in {elapsed_ms:.0f} ms; reconnect refused "
        f"({reason.code if reason else 'no gateway reason'})"
        if dropped is not None
        else "the live session was NOT dropped",
        passed,
        (
            f"POST /api/v1/certificates/{short(fingerprint)}/revoke (key_compromise) -> "
            f"{revoked['state']}; the cloud's feed dropped {CONSOLE_SERIAL}'s live session "
            f"in {elapsed_ms:.0f} ms "
            "(DISCONNECT 0x98 administrative action)",
            f"reconnect: {refused.code if refused else 'ACCEPTED (wrong)'}; gateway log: "
            + (reason.message if reason else "nothing"),
        ),
    )
