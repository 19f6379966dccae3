"""Signing and trust: SSHSIG and OpenSSH keys, allowed_signers, hub key rotation, release
sign-off, OpenSSF model signing, signed evaluation reports and claims, SHA256SUMS. Never
imports torch."""
