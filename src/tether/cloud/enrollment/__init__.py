"""Enrollment (issue 16): birth credentials exchanged for operational certificates, renewal
and rotation, over MQTT (``$tether/`` topics) and EST (RFC 7030).

``service`` is the one enroll operation; ``hook`` the provisioning hook; ``admin`` the claims
and tokens an administrator makes; ``est`` the EST listener; ``mqtt`` the gateway's handler
for the reserved topics. The registry side is ``cloud/registry/enrollment.py``.
"""

from tether.cloud.enrollment.service import (
    Credential,
    CredentialKind,
    EnrollmentService,
    EnrollOutcome,
    EnrollResult,
)

__all__ = ["Credential", "CredentialKind", "EnrollOutcome", "EnrollResult", "EnrollmentService"]
