"""The project's PKI as plain functions (cryptography): root CA -> intermediate CAs -> leaf certificates.

Used by the Pulumi `Pki` component (through a dynamic provider, so keys are Pulumi secrets) and by
anything that needs the same certificates outside Pulumi (lab bootstrap, tests). ECDSA P-256
everywhere: short keys, fast signing, accepted by etcd, kube-apiserver, nginx and WireGuard-side tooling.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

COUNTRY = "KZ"


@dataclass(frozen=True)
class KeyPair:
    cert_pem: str
    key_pem: str

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        return serialization.load_pem_private_key(self.key_pem.encode(), password=None)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


def create_root_ca(common_name: str, days: int = 3650) -> KeyPair:
    key = _new_key()
    name = _name(common_name, "sovcloud")
    cert = (_builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def create_intermediate_ca(issuer: KeyPair, common_name: str, days: int = 1825) -> KeyPair:
    key = _new_key()
    cert = (_builder(_name(common_name, "sovcloud"), issuer.cert.subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                           critical=False)
            .sign(issuer.key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def issue_certificate(issuer: KeyPair, common_name: str, *, organization: str | None = None,
                      dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = (),
                      server: bool = True, client: bool = False, days: int = 365) -> KeyPair:
    """A leaf certificate. `organization` becomes the Kubernetes group (e.g. system:masters)."""
    if not (server or client):
        raise ValueError("a certificate must be for a server, a client, or both")
    key = _new_key()
    usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server),
                              (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if on]
    builder = (_builder(_name(common_name, organization), issuer.cert.subject, key.public_key(), days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                              critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                              critical=False))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer.key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def not_after(cert_pem: str) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_pem.encode()).not_valid_after_utc


def needs_rotation(cert_pem: str, rotate_before_days: int, now: dt.datetime | None = None) -> bool:
    """True when the certificate expires within `rotate_before_days` (then it is re-issued)."""
    now = now or dt.datetime.now(dt.UTC)
    return not_after(cert_pem) - now <= dt.timedelta(days=rotate_before_days)


def verify_chain(leaf_pem: str, *chain_pems: str) -> None:
    """Raise if `leaf_pem` is not signed by the first of `chain_pems`, and so on up the chain."""
    certs = [x509.load_pem_x509_certificate(p.encode()) for p in (leaf_pem, *chain_pems)]
    for child, parent in zip(certs, certs[1:], strict=False):
        child.verify_directly_issued_by(parent)
