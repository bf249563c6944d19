"""Client-side envelope encryption and manifest signing for backups.

Every object gets its own random 256-bit data key; the data key is wrapped (RFC 3394 AES key wrap)
by the key-encryption key (KEK), which lives in a key file or the environment and never in a bucket.
Objects are encrypted in fixed-size segments with AES-256-GCM (the STREAM construction: nonce =
random prefix || segment counter, the last segment flagged in the associated data), so arbitrarily
large tar streams are encrypted without holding them in memory and truncation or reordering of
segments fails authentication.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

MAGIC = b"SOVDR1\n"
SEGMENT = 1 << 20  # 1 MiB plaintext per GCM segment: bounded memory, small per-segment overhead
TAG = 16
KEK_ENV = "SOVCLOUD_DR_KEK"


class CryptoError(Exception):
    """A key could not be loaded, or an object failed authentication."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def load_kek(path: Path | None, env: str = KEK_ENV) -> bytes:
    """The 32-byte KEK, base64 in a key file (preferred) or in the environment variable `env`."""
    if path is not None:
        try:
            text = Path(path).read_text().strip()
        except OSError as err:
            raise CryptoError(f"kek_file {path}: cannot read ({err}); create one with `python -m dr keygen`") from None
        origin = f"kek_file {path}"
    elif os.environ.get(env):
        text, origin = os.environ[env].strip(), f"${env}"
    else:
        raise CryptoError(f"no key-encryption key: set kek_file in the DR config or export {env}")
    try:
        key = unb64(text)
    except ValueError:
        raise CryptoError(f"{origin}: not base64; expected 32 random bytes base64-encoded") from None
    if len(key) != 32:
        raise CryptoError(f"{origin}: key is {len(key)} bytes; AES-256 needs exactly 32")
    return key


def new_kek() -> str:
    return b64(os.urandom(32))


def wrap_key(kek: bytes, data_key: bytes) -> str:
    return b64(aes_key_wrap(kek, data_key))


def unwrap_key(kek: bytes, wrapped: str, what: str) -> bytes:
    try:
        return aes_key_unwrap(kek, unb64(wrapped))
    except (InvalidUnwrap, ValueError):
        raise CryptoError(f"{what}: data key does not unwrap with this KEK (wrong KEK or tampered key)") from None


def _nonce(prefix: bytes, counter: int) -> bytes:
    return prefix + struct.pack(">I", counter)


def _aad(object_key: str, counter: int, last: bool) -> bytes:
    # Binding the object key stops a valid ciphertext from being swapped in under another name.
    return f"{object_key}|{counter}|{int(last)}".encode()


def _chunks(src: BinaryIO, size: int) -> Iterator[tuple[bytes, bool]]:
    """(chunk, is_last) over src; an empty stream yields one empty last chunk."""
    cur = src.read(size)
    while True:
        nxt = src.read(size)
        yield cur, not nxt
        if not nxt:
            return
        cur = nxt


class Digest:
    """sha256 and byte count of a stream seen in passing."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self.h.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def encrypt_stream(src: BinaryIO, dst: BinaryIO, kek: bytes, object_key: str) -> dict:
    """Encrypt src into dst; returns the per-object entry fields (wrapped key, plaintext digest)."""
    data_key = AESGCM.generate_key(bit_length=256)
    aes = AESGCM(data_key)
    prefix = os.urandom(8)
    dst.write(MAGIC + prefix + struct.pack(">I", SEGMENT))
    plain = Digest()
    for counter, (chunk, last) in enumerate(_chunks(src, SEGMENT)):
        plain.update(chunk)
        dst.write(aes.encrypt(_nonce(prefix, counter), chunk, _aad(object_key, counter, last)))
    return {
        "wrapped_key": wrap_key(kek, data_key),
        "plaintext_sha256": plain.hexdigest(),
        "plaintext_size": plain.size,
    }


def decrypt_stream(src: BinaryIO, dst: BinaryIO, kek: bytes, object_key: str, wrapped_key: str) -> Digest:
    """Decrypt src into dst, authenticating every segment; returns the plaintext digest."""
    head = src.read(len(MAGIC) + 12)
    if len(head) != len(MAGIC) + 12 or not head.startswith(MAGIC):
        raise CryptoError(f"{object_key}: not a sovcloud DR ciphertext (bad header)")
    prefix = head[len(MAGIC) : len(MAGIC) + 8]
    (segment,) = struct.unpack(">I", head[len(MAGIC) + 8 :])
    if not 0 < segment <= 64 << 20:
        raise CryptoError(f"{object_key}: implausible segment size {segment} in header")
    aes = AESGCM(unwrap_key(kek, wrapped_key, object_key))
    plain = Digest()
    for counter, (chunk, last) in enumerate(_chunks(src, segment + TAG)):
        try:
            out = aes.decrypt(_nonce(prefix, counter), chunk, _aad(object_key, counter, last))
        except InvalidTag:
            raise CryptoError(
                f"{object_key}: AES-GCM authentication failed at segment {counter} "
                "(ciphertext modified, truncated or reordered)"
            ) from None
        plain.update(out)
        dst.write(out)
    return plain


# --- manifest signing (Ed25519) -------------------------------------------------------------------


def canonical(manifest: dict) -> bytes:
    """The signed bytes: the manifest without its signature, keys sorted, no whitespace."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise CryptoError(f"signing_key_file {path}: cannot load an Ed25519 PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CryptoError(f"signing_key_file {path}: not an Ed25519 key; create one with `python -m dr keygen`")
    return key


def load_verify_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as err:
        raise CryptoError(f"verify_key_file {path}: cannot load an Ed25519 PEM public key ({err})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CryptoError(f"verify_key_file {path}: not an Ed25519 public key")
    return key


def sign_manifest(manifest: dict, key: Ed25519PrivateKey) -> dict:
    return {**manifest, "signature": {"alg": "Ed25519", "value": b64(key.sign(canonical(manifest)))}}


def verify_manifest(manifest: dict, key: Ed25519PublicKey, where: str) -> None:
    sig = manifest.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != "Ed25519" or not isinstance(sig.get("value"), str):
        raise CryptoError(f"{where}: manifest has no Ed25519 signature")
    try:
        key.verify(unb64(sig["value"]), canonical(manifest))
    except (InvalidSignature, ValueError):
        raise CryptoError(
            f"{where}: manifest signature does not verify with the configured verify key "
            "(manifest or signature tampered, or signed by another key)"
        ) from None


def keygen(kek_file: Path, signing_key_file: Path, verify_key_file: Path) -> None:
    """Write a fresh KEK and Ed25519 key pair (0600 for the secrets); refuses to overwrite."""
    for p in (kek_file, signing_key_file, verify_key_file):
        if Path(p).exists():
            raise CryptoError(f"{p} exists: refusing to overwrite a key (losing it loses the backups)")
    sk = Ed25519PrivateKey.generate()
    for p, data, mode in (
        (kek_file, new_kek().encode() + b"\n", 0o600),
        (
            signing_key_file,
            sk.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            0o600,
        ),
        (
            verify_key_file,
            sk.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            0o644,
        ),
    ):
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
