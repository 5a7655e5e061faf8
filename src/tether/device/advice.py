"""What a person should do about a refused CONNECT, in one place.

The gateway answers a refused identity with a CONNACK reason code (0x86 for a bad credential,
0x87 for not authorized) and its own refusal code as the reason string
(``certificate_revoked``, ``device_disabled``, ...). The reason code alone is too coarse: a
revoked certificate and an unregistered CA are both 0x86, and telling the owner of a revoked
certificate to "check that its CA is registered" sends them the wrong way. So the refusal code
picks the advice when the gateway sent one, and the reason code only when it did not (another
broker, or an older gateway).
"""

from __future__ import annotations

from awscrt import mqtt5

# What a person should do about a CONNACK failure; the reason code name says what happened.
_CONNACK_ADVICE = {
    mqtt5.ConnectReasonCode.NOT_AUTHORIZED: "the cloud does not accept this device "
    "(unregistered CA, revoked certificate or disabled device): ask the fleet operator",
    mqtt5.ConnectReasonCode.BAD_USERNAME_OR_PASSWORD: "the cloud did not accept the device's "
    "certificate (revoked, expired, or under an unregistered CA): ask the fleet operator",
    mqtt5.ConnectReasonCode.CLIENT_IDENTIFIER_NOT_VALID: "the cloud refused the client id, "
    "which is the certificate's serial: check the certificate",
    mqtt5.ConnectReasonCode.BANNED: "the device is banned: ask the fleet operator",
    mqtt5.ConnectReasonCode.SERVER_UNAVAILABLE: "the cloud is unavailable: retry later",
    mqtt5.ConnectReasonCode.SERVER_BUSY: "the cloud is busy: retry later",
}


# Finer advice by the gateway's refusal code, which it sends as the CONNACK reason string
# (tether.cloud.gateway.server); a code not listed falls back to the reason code's advice.
_REFUSAL_ADVICE = {
    "certificate_revoked": "this certificate is revoked: the device needs a new one (a CSR "
    "signed by its CA, or the factory); ask the fleet operator",
    "certificate_expired": "the certificate has expired: renew it",
    "certificate_not_yet_valid": "the certificate is not valid yet: check the device clock",
    "ca_not_registered": "the certificate's CA is not registered with the cloud: register it "
    "(`tether cloud register-ca`)",
    "ca_inactive": "the certificate's CA is deactivated or revoked in the cloud: ask the fleet "
    "operator",
    "certificate_unknown": "the certificate is not registered: register it (`tether cloud "
    "register-cert`) or let its factory CA allow just-in-time registration",
    "certificate_inactive": "the certificate is not active in the cloud: ask the fleet operator",
    "device_disabled": "the device is disabled in the cloud: ask the fleet operator",
    "serial_bound_to_other_ca": "the serial belongs to another CA: the operator can move it "
    "(`tether cloud move-device`)",
    "profile_violation": "the certificate does not fit the Tether profile: check it with "
    "`tether lint`",
}


def connack_advice(code: mqtt5.ConnectReasonCode, reason_string: str | None) -> str:
    """What to do about a refused CONNECT: by the gateway's refusal code, else the reason."""
    if reason_string in _REFUSAL_ADVICE:
        return _REFUSAL_ADVICE[reason_string]
    return _CONNACK_ADVICE.get(code, "see the cloud's audit log for the reason")
