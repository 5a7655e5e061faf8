"""The advice for a refused CONNECT follows the gateway's refusal code, not only 0x86/0x87."""

from __future__ import annotations

from awscrt import mqtt5

from tether.device.advice import connack_advice

BAD = mqtt5.ConnectReasonCode.BAD_USERNAME_OR_PASSWORD


def test_a_revoked_certificate_is_not_told_to_check_its_ca() -> None:
    advice = connack_advice(BAD, "certificate_revoked")
    assert "revoked" in advice and "new one" in advice
    assert "registered" not in advice


def test_an_unregistered_ca_is_told_to_register_it() -> None:
    assert "register-ca" in connack_advice(BAD, "ca_not_registered")


def test_an_unregistered_certificate_is_told_to_register_it() -> None:
    advice = connack_advice(mqtt5.ConnectReasonCode.NOT_AUTHORIZED, "certificate_unknown")
    assert "register-cert" in advice


def test_without_a_refusal_code_the_reason_code_decides() -> None:
    assert "fleet operator" in connack_advice(BAD, None)
    assert "audit log" in connack_advice(mqtt5.ConnectReasonCode.UNSPECIFIED_ERROR, "whatever")
