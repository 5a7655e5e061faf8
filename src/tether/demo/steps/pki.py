"""Steps 1 and 2: the offline root ceremony, and the issuing CAs the root signs."""

from __future__ import annotations

from tether.demo.state import DemoState
from tether.demo.steps.common import (
    ISSUING_ROLES,
    Outcome,
    cn,
    hint,
    new_passphrase,
    short,
)
from tether.pki import sha256_fingerprint
from tether.pki.store import init_issuing, init_root


def root_ceremony(state: DemoState) -> Outcome:
    """The offline ceremony: a root CA directory whose key is encrypted at rest."""
    passphrase = new_passphrase()
    state.passphrases["root"] = passphrase
    root = init_root(state.ws / "ceremony" / "root-ca", passphrase, common_name="Demo Root CA")
    state.root = root
    key_file = root.path / root.metadata.key.path
    encrypted = key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    return Outcome(
        "self-signed P-256 root; key encrypted (PKCS#8, PBKDF2)"
        if encrypted
        else "the root key is NOT encrypted",
        encrypted,
        (
            f"{cn(root.certificate.subject)}  sha256 {short(sha256_fingerprint(root.certificate))}",
            f"key {key_file.relative_to(state.ws)} (mode 0600), passphrase {hint(passphrase)}",
        ),
    )


def issuing_cas(state: DemoState) -> Outcome:
    """One issuing CA per role, each signed by the root (the root signs nothing else)."""
    lines = []
    for role in ISSUING_ROLES:
        passphrase = new_passphrase()
        state.passphrases[role.value] = passphrase
        directory = init_issuing(
            state.ws / "issuing" / role.value,
            state.root,
            state.passphrases["root"],
            passphrase,
            common_name=f"Demo {role.value.capitalize()} CA",
            role=role,
        )
        directory.certificate.verify_directly_issued_by(state.root.certificate)
        state.issuing[role] = directory
        lines.append(
            f"{role.value:<8} {cn(directory.certificate.subject)}  "
            f"sha256 {short(sha256_fingerprint(directory.certificate))}"
        )
    lines.append("each verified as signed by the root; pathLen 0, so they sign only leaves")
    return Outcome("4 issuing CAs, each signed by the root", True, tuple(lines))
