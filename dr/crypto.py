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
import queue
import struct
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
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
# Threads sealing segments of one stream (AES-GCM releases the GIL); the hashing and writing stay in order.
THREADS = 4
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


class Digest:
    """sha256 and byte count of a stream seen in passing."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.size = 0

    def update(self, data) -> None:
        self.h.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


class WriteBehind:
    """A write-only stream that hashes into `digest` (optional) and writes to `dst` in a thread of its own, so
    that producing the bytes (receiving, decrypting, encrypting) and consuming them run at once; up to `depth`
    writes wait in between (bounded memory). Each write must be given bytes its caller no longer changes. An
    error in dst is raised by the next write or by close(), which waits for everything to be written."""

    _END = object()

    def __init__(self, dst, digest: Digest | None = None, depth: int = 4) -> None:
        self._dst, self._digest = dst, digest
        self._q: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._q.get()) is not self._END:
            if self._error is None:
                try:
                    if self._digest is not None:
                        self._digest.update(data)
                    self._dst.write(data)
                except BaseException as err:  # noqa: BLE001 - handed to the writing thread
                    self._error = err

    def write(self, data) -> int:
        if self._error is not None:
            raise self._error
        self._q.put(data)
        return len(data)

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(self._END)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Segmenter:
    """Cuts a written stream into `size`-byte segments, seals (encrypts or opens) them on THREADS threads and
    hands the results to `_done` in stream order.

    The segment that might be the last one is held back until more bytes arrive or close() says it is the
    last, so a writer of any chunk sizes (tarfile's 10 KiB blocks, one big buffer) produces the same
    segments as reading the whole stream would. AES-GCM releases the GIL, so segments are sealed in
    parallel while the caller produces the next ones; at most 2 x THREADS segments are in flight."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._buf = bytearray()
        self._counter = 0
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="aes-gcm")
        self._pending: deque[Future] = deque()

    def write(self, data) -> int:
        mv = memoryview(data).cast("B")
        n = len(mv)
        if not n:
            return 0
        size, buf = self._size, self._buf
        if len(buf) == size:  # more bytes follow: the held segment is not the last
            self._segment(buf, False)
            buf.clear()
        take = min(size - len(buf), n)
        buf += mv[:take]
        mv = mv[take:]
        if mv:
            self._segment(buf, False)
            buf.clear()
            while len(mv) > size:
                self._segment(mv[:size], False)
                mv = mv[size:]
            buf += mv
        return n

    def _segment(self, data, last: bool) -> None:
        data = bytes(data)  # the caller's buffer may change once write() returns
        self._accept(data)
        self._pending.append(self._pool.submit(self._seal, data, self._counter, last))
        self._counter += 1
        try:
            while len(self._pending) > 2 * THREADS:
                self._done(self._pending.popleft().result())
        except BaseException:
            self._pool.shutdown(cancel_futures=True)  # a failed stream takes no more writes
            raise

    def _finish(self) -> None:
        try:
            self._segment(self._buf, True)  # an empty stream is one empty last segment
            self._buf = bytearray()
            while self._pending:
                self._done(self._pending.popleft().result())
        finally:
            self._pool.shutdown(cancel_futures=True)

    def _accept(self, data: bytes) -> None:
        """Each segment in order, before it is sealed."""

    def _seal(self, data: bytes, counter: int, last: bool) -> bytes:
        raise NotImplementedError

    def _done(self, sealed: bytes) -> None:
        raise NotImplementedError


class Encryptor(_Segmenter):
    """A write-only stream that encrypts what is written into `dst`.

    Every object gets a fresh data key; close() returns the manifest entry fields (wrapped key, plaintext
    sha256 and size)."""

    def __init__(self, dst: BinaryIO, kek: bytes, object_key: str) -> None:
        super().__init__(SEGMENT)
        self._dst, self._kek, self._key = dst, kek, object_key
        self._data_key = AESGCM.generate_key(bit_length=256)
        self._aes = AESGCM(self._data_key)
        self._prefix = os.urandom(8)
        self.plain = Digest()
        dst.write(MAGIC + self._prefix + struct.pack(">I", SEGMENT))

    def _accept(self, data: bytes) -> None:
        self.plain.update(data)

    def _seal(self, data: bytes, counter: int, last: bool) -> bytes:
        return self._aes.encrypt(_nonce(self._prefix, counter), data, _aad(self._key, counter, last))

    def _done(self, sealed: bytes) -> None:
        self._dst.write(sealed)

    def close(self) -> dict:
        self._finish()
        return {
            "wrapped_key": wrap_key(self._kek, self._data_key),
            "plaintext_sha256": self.plain.hexdigest(),
            "plaintext_size": self.plain.size,
        }


class Decryptor(_Segmenter):
    """A write-only stream that authenticates and decrypts what is written (a whole object, header first)
    into `dst`. A bad segment raises CryptoError (at once, or a few segments later: they are opened in
    parallel); close() checks the end of the stream (truncation) and returns the plaintext digest."""

    def __init__(self, dst: BinaryIO, kek: bytes, object_key: str, wrapped_key: str) -> None:
        super().__init__(len(MAGIC) + 12)  # the header first; then segments of the size it names
        self._dst, self._key = dst, object_key
        self._aes = AESGCM(unwrap_key(kek, wrapped_key, object_key))
        self._prefix: bytes | None = None
        self.plain = Digest()

    def _header(self, head) -> None:
        head = bytes(head)
        if len(head) != len(MAGIC) + 12 or not head.startswith(MAGIC):
            raise CryptoError(f"{self._key}: not a sovcloud DR ciphertext (bad header)")
        (segment,) = struct.unpack(">I", head[len(MAGIC) + 8 :])
        if not 0 < segment <= 64 << 20:
            raise CryptoError(f"{self._key}: implausible segment size {segment} in header")
        self._prefix, self._size = head[len(MAGIC) : len(MAGIC) + 8], segment + TAG

    def write(self, data) -> int:
        if self._prefix is not None:
            return super().write(data)
        mv = memoryview(data).cast("B")
        need = self._size - len(self._buf)
        self._buf += mv[:need]
        if len(self._buf) == self._size:
            self._header(self._buf)
            self._buf.clear()
            super().write(mv[need:])
        return len(mv)

    def _segment(self, data, last: bool) -> None:
        if self._prefix is None:  # the stream ended inside the header
            self._header(data)
        super()._segment(data, last)

    def _seal(self, data: bytes, counter: int, last: bool) -> bytes:
        try:
            return self._aes.decrypt(_nonce(self._prefix, counter), data, _aad(self._key, counter, last))
        except InvalidTag:
            raise CryptoError(
                f"{self._key}: AES-GCM authentication failed at segment {counter} "
                "(ciphertext modified, truncated or reordered)"
            ) from None

    def _done(self, sealed: bytes) -> None:
        self.plain.update(sealed)
        self._dst.write(sealed)

    def close(self) -> Digest:
        self._finish()
        return self.plain


def _pump(src: BinaryIO, dst: Encryptor | Decryptor, size: int) -> None:
    buf = bytearray(size)
    view = memoryview(buf)
    while n := src.readinto(buf):
        dst.write(view[:n])


def encrypt_stream(src: BinaryIO, dst: BinaryIO, kek: bytes, object_key: str) -> dict:
    """Encrypt src into dst; returns the per-object entry fields (wrapped key, plaintext digest)."""
    enc = Encryptor(dst, kek, object_key)
    _pump(src, enc, SEGMENT)
    return enc.close()


def decrypt_stream(src: BinaryIO, dst: BinaryIO, kek: bytes, object_key: str, wrapped_key: str) -> Digest:
    """Decrypt src into dst, authenticating every segment; returns the plaintext digest."""
    dec = Decryptor(dst, kek, object_key, wrapped_key)
    _pump(src, dec, SEGMENT + TAG)
    return dec.close()


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
