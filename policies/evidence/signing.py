"""Detached ECDSA P-256 signatures over the evidence JSON's canonical form.

A stack's signer is issued by its Pulumi PKI (`Pki.evidence_signer`, stack output `evidence_signer`; the
lab deployment writes it with the stack root as CA to <lab state>/evidence-pki, used with --pki-dir).
Without one, `ensure_pki` creates a self-signed CA and a signer certificate issued by it in
~/.cache/sovcloud/pki/ (paths are parameters everywhere). A signer is used only within its validity window:
at signing (`input_problems`, before anything is written) and at verification (`verify_chain`).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEFAULT_PKI_DIR = Path.home() / ".cache" / "sovcloud" / "pki"


class SignatureError(ValueError):
    """Signing material missing or a signature/certificate does not verify."""


def canonical(doc: object) -> bytes:
    """The signed bytes: sorted keys, no insignificant whitespace, UTF-8 (RFC 8785 in spirit)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class PkiPaths:
    key: Path
    cert: Path
    ca_cert: Path

    @classmethod
    def in_dir(cls, pki_dir: Path) -> PkiPaths:
        return cls(
            pki_dir / "evidence-signer.key", pki_dir / "evidence-signer.pem", pki_dir / "evidence-ca.pem"
        )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "KZ"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sovcloud"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def ensure_pki(pki_dir: Path = DEFAULT_PKI_DIR) -> PkiPaths:
    """Create the CA and the evidence signer in `pki_dir` unless they are already there; a directory with only
    some of them is refused rather than overwritten (its key may be the one a verifier trusts)."""
    paths = PkiPaths.in_dir(pki_dir)
    files = (paths.key, paths.cert, paths.ca_cert)
    if all(f.exists() for f in files):
        return paths
    if any(f.exists() for f in files):
        missing = ", ".join(f.name for f in files if not f.exists())
        raise SignatureError(f"{pki_dir} holds part of an evidence PKI ({missing} missing): restore the missing "
                             "files, or move the directory away to create a new bootstrap PKI")
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("sovcloud evidence CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("sovcloud evidence signer"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    # The CA key stays beside the CA cert only for this bootstrap PKI; infra/ replaces both.
    _write_key(pki_dir / "evidence-ca.key", ca_key)
    paths.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(paths.key, key)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


def _read(path: Path, what: str, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise SignatureError(f"{what} {path} cannot be read ({err.strerror}): pass {flag}") from None


def sign(data: bytes, key_path: Path) -> bytes:
    """Base64 of the DER ECDSA-SHA256 signature over `data`."""
    try:
        key = serialization.load_pem_private_key(_read(key_path, "signing key", "--key"), password=None)
    except ValueError as err:
        raise SignatureError(f"--key {key_path}: not a PEM private key ({err})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SignatureError(f"--key {key_path}: must be an ECDSA P-256 key")
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256())))


def load_cert(path: Path, flag: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, "certificate", flag))
    except ValueError as err:
        raise SignatureError(f"{flag} {path}: not a PEM certificate ({err})") from None


def validity_problem(cert: x509.Certificate, at: datetime | None = None) -> str | None:
    """Why `cert` cannot be used at `at` (default now), with the fix, or None inside its validity window."""
    at = at or datetime.now(UTC)
    window = f"valid {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} .. {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    if at > cert.not_valid_after_utc:
        return (f"expired on {cert.not_valid_after_utc:%Y-%m-%d} ({window}, checked at {at:%Y-%m-%dT%H:%M:%SZ}): "
                "issue a new evidence signer (`pulumi up` renews the stack's)")
    if at < cert.not_valid_before_utc:
        return (f"not valid yet ({window}, checked at {at:%Y-%m-%dT%H:%M:%SZ}): check this machine's clock, or "
                "use the signer only from its start")
    return None


def key_problem(path: Path) -> str | None:
    """Why `path` is no evidence signing key (unreadable, not PEM, not ECDSA P-256), or None."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as err:
        return f"{path} cannot be read ({err.strerror})"
    except (ValueError, TypeError) as err:
        return f"{path}: not an unencrypted PEM private key ({err})"
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        return f"{path}: must be an ECDSA P-256 key"
    return None


def pair_problem(key: Path, cert: Path) -> str | None:
    """Why the key at `key` cannot sign for the certificate at `cert` (both already readable), or None."""
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*raw) != public.public_bytes(*raw):
        return f"{key} does not belong to the certificate {cert}: give the signer's own key and certificate"
    return None


def cert_problem(path: Path, signer: bool, at: datetime | None = None) -> str | None:
    """Why `path` is no usable certificate (unreadable, not PEM, a signer outside its validity), or None."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as err:
        return f"{path} cannot be read ({err.strerror})"
    except ValueError as err:
        return f"{path}: not a PEM certificate ({err})"
    if signer and (why := validity_problem(cert, at)):
        return f"{path}: the signer certificate {why}"
    return None


def verify_chain(cert: x509.Certificate, ca: x509.Certificate, at: datetime | None = None) -> None:
    at = at or datetime.now(UTC)
    if cert.issuer != ca.subject:
        raise SignatureError(
            f"signer certificate issuer {cert.issuer.rfc4514_string()!r} is not the CA "
            f"{ca.subject.rfc4514_string()!r}"
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as err:
        raise SignatureError(
            f"signer certificate was not issued by the CA: {err or 'bad signature'}"
        ) from None
    if why := validity_problem(cert, at):
        raise SignatureError(f"signer certificate {why}")


def verify(data: bytes, signature_b64: bytes, cert: x509.Certificate) -> None:
    try:
        sig = base64.b64decode(signature_b64.strip(), validate=True)
    except ValueError:
        raise SignatureError("signature file is not base64") from None
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise SignatureError("signer certificate does not hold an ECDSA key")
    try:
        pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError(
            "signature does not match evidence.json: the evidence was changed after signing"
        ) from None
