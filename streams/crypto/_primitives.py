"""Every ``cryptography.hazmat`` import of meterseal, behind a few small functions.

Nothing here decides policy (which key, which associated data): that is ``envelope``,
``tokens``, ``owner`` and ``keystore``. Keeping the hazardous imports in one place makes
the whole crypto surface reviewable on one screen.
"""

from __future__ import annotations

import hashlib as _hashlib
import hmac as _hmac
import os as _os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = ["InvalidTag", "aes_gcm_seal", "aes_gcm_open", "hkdf_sha256", "hmac_sha256", "scrypt_kek"]

NONCE_LEN = 12
KEY_LEN = 32


def aes_gcm_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aes_gcm_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Raises ``InvalidTag`` on any mismatch."""
    return AESGCM(key).decrypt(nonce, ciphertext, aad)


def aead(key: bytes) -> AESGCM:
    """A reusable AES-256-GCM object (saves the key schedule on hot paths)."""
    return AESGCM(key)


def hkdf_sha256(root: bytes, *, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(root)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    # the one-shot OpenSSL HMAC: several times faster per call than an hmac/hazmat object
    return _hmac.digest(key, message, "sha256")


class HmacSha256:
    """HMAC-SHA256 (RFC 2104) under one fixed key, for keys used on every record (the record-id key, the
    current DEK): the inner and outer SHA-256 states after the padded key are computed once, and each
    message costs two state copies and two short hashes — 2.5x the one-shot ``hmac_sha256`` per call.
    Equal to ``hmac_sha256(key, message)`` (a test checks).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = _hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = _hashlib.sha256(key.translate(_IPAD))
        self._outer = _hashlib.sha256(key.translate(_OPAD))

    def inner_state(self) -> "_hashlib.sha256":
        """A copy of the SHA-256 state after the inner padded key (callers may add a fixed message prefix)."""
        return self._inner.copy()

    def outer_state(self) -> "_hashlib.sha256":
        """A copy of the SHA-256 state after the outer padded key."""
        return self._outer.copy()

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


IPAD = _IPAD = bytes(b ^ 0x36 for b in range(256))  # bytes.translate tables: key XOR ipad / opad
OPAD = _OPAD = bytes(b ^ 0x5C for b in range(256))


class Nonces:
    """96-bit random AES-GCM nonces from the OS, drawn ``batch`` at a time (one ``os.urandom`` call per
    batch instead of per record: the call itself cost as much as an AES-GCM seal of a reading). Each nonce is
    fresh random bytes, used once."""

    __slots__ = ("_buf", "_pos", "_batch")

    def __init__(self, batch: int = 1024) -> None:
        self._batch = batch
        self._buf, self._pos = b"", 0

    def next(self) -> bytes:
        pos = self._pos
        if pos >= len(self._buf):
            self._buf, pos = _os.urandom(NONCE_LEN * self._batch), 0
        self._pos = pos + NONCE_LEN
        return self._buf[pos:pos + NONCE_LEN]


def scrypt_kek(passphrase: bytes, salt: bytes, *, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=KEY_LEN, n=n, r=r, p=p).derive(passphrase)


# --- owner key pairs -------------------------------------------------------------------------

_OAEP_HASH = hashes.SHA256


def rsa_generate() -> tuple[bytes, bytes]:
    """(private PKCS#8 DER, public SubjectPublicKeyInfo DER) of a new RSA-3072 key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    private = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def rsa_wrap(public_der: bytes, secret: bytes, label: bytes) -> bytes:
    public = serialization.load_der_public_key(public_der)
    return public.encrypt(secret, padding.OAEP(mgf=padding.MGF1(_OAEP_HASH()), algorithm=_OAEP_HASH(), label=label))


def rsa_private(private_der: bytes):
    return serialization.load_der_private_key(private_der, password=None)


def rsa_unwrap(private_key, wrapped: bytes, label: bytes) -> bytes:
    """Raises ``ValueError`` on any mismatch."""
    return private_key.decrypt(wrapped, padding.OAEP(mgf=padding.MGF1(_OAEP_HASH()), algorithm=_OAEP_HASH(), label=label))


def public_pem(public_der: bytes) -> str:
    key = serialization.load_der_public_key(public_der)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


_HPKE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_MLKEM_SEED = 64
_X25519_LEN = 32


def hpke_generate() -> tuple[bytes, bytes]:
    """(private = ML-KEM seed || X25519 raw, public = ML-KEM-768 public || X25519 public)."""
    m, x = mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    private = m.private_bytes_raw() + x.private_bytes_raw()
    public = m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()
    return private, public


def hpke_wrap(public_raw: bytes, secret: bytes, info: bytes) -> bytes:
    m = mlkem.MLKEM768PublicKey.from_public_bytes(public_raw[:-_X25519_LEN])
    x = x25519.X25519PublicKey.from_public_bytes(public_raw[-_X25519_LEN:])
    return _HPKE.encrypt(secret, hpke.MLKEM768X25519PublicKey(m, x), info=info)


def hpke_private(private_raw: bytes):
    if len(private_raw) != _MLKEM_SEED + _X25519_LEN:
        raise ValueError("hybrid private key must be 96 bytes")
    m = mlkem.MLKEM768PrivateKey.from_seed_bytes(private_raw[:_MLKEM_SEED])
    x = x25519.X25519PrivateKey.from_private_bytes(private_raw[_MLKEM_SEED:])
    return hpke.MLKEM768X25519PrivateKey(m, x)


def hpke_unwrap(private_key, wrapped: bytes, info: bytes) -> bytes:
    """Raises on any mismatch (the exception type is the backend's)."""
    return _HPKE.decrypt(wrapped, private_key, info=info)


# --- the earlier prototype's scheme, kept only as the benchmark baseline ----------------------


def prototype_seal(public_key, plaintext: bytes) -> tuple[bytes, bytes, bytes]:
    """Per record: a fresh AES-256 key, AES-CFB (no authentication), the key RSA-OAEP-wrapped.

    This is what the first prototype did for every row; ``meterseal bench`` measures it beside the
    envelope so the speed-up is a ratio from one run. Never used to protect data.
    """
    import os

    from cryptography.hazmat.decrepit.ciphers.modes import CFB
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    key, iv = os.urandom(32), os.urandom(16)
    enc = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    wrapped = public_key.encrypt(key, padding.OAEP(mgf=padding.MGF1(_OAEP_HASH()), algorithm=_OAEP_HASH(), label=None))
    return wrapped, iv, enc.update(plaintext) + enc.finalize()


def prototype_open(private_key, wrapped: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    key = private_key.decrypt(wrapped, padding.OAEP(mgf=padding.MGF1(_OAEP_HASH()), algorithm=_OAEP_HASH(), label=None))
    dec = Cipher(algorithms.AES(key), CFB(iv)).decryptor()
    return dec.update(ciphertext) + dec.finalize()


def rsa_keypair(bits: int = 2048):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key, key.public_key()


# --- device signatures (streams.devices): ECDSA P-256 / SHA-256 (ES256, DER signatures) and Ed25519 ------------

from cryptography.exceptions import InvalidSignature as _InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: E402

SIGNATURE_ALGS = ("ES256", "Ed25519")


def signing_generate(alg: str) -> tuple[bytes, bytes]:
    """(private PKCS#8 DER, public SubjectPublicKeyInfo DER) of a new device key."""
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "Ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unknown signature algorithm {alg!r}: {' or '.join(SIGNATURE_ALGS)}")
    private = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return private, key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)


def signing_public(data: bytes) -> tuple[str, bytes, object]:
    """(algorithm, SubjectPublicKeyInfo DER, key object) of a PEM or DER public key; ``ValueError`` unless it is
    an ECDSA P-256 or an Ed25519 key."""
    key = (serialization.load_pem_public_key(data) if data.lstrip().startswith(b"-----")
           else serialization.load_der_public_key(data))
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        alg = "ES256"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        alg = "Ed25519"
    else:
        raise ValueError("a device key must be ECDSA P-256 (ES256) or Ed25519")
    return alg, key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo), key


def signing_private(data: bytes) -> tuple[str, object, bytes, bytes]:
    """(algorithm, key object, PKCS#8 DER, public SubjectPublicKeyInfo DER) of a PEM or DER PKCS#8 private device
    key (unencrypted); ``ValueError`` unless it is ECDSA P-256 or Ed25519."""
    key = (serialization.load_pem_private_key(data, password=None) if data.lstrip().startswith(b"-----")
           else serialization.load_der_private_key(data, password=None))
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        alg = "ES256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        alg = "Ed25519"
    else:
        raise ValueError("a device key must be ECDSA P-256 (ES256) or Ed25519")
    private = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return alg, key, private, public


def signing_sign(alg: str, key: object, data: bytes) -> bytes:
    """ES256: an ASN.1 DER ECDSA signature over SHA-256(data); Ed25519: the 64-byte signature."""
    if alg == "ES256":
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    return key.sign(data)


def signing_verify(alg: str, key: object, signature: bytes, data: bytes) -> bool:
    try:
        if alg == "ES256":
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, data)
    except (_InvalidSignature, ValueError, TypeError):
        return False
    return True


def private_pem(private_der: bytes) -> str:
    key = serialization.load_der_private_key(private_der, password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


# --- X.509 for the MQTT broker's TLS (streams.mqtt.pki): a CA and the certificates it issues --------------------

def x509_issue(common_name: str, *, issuer: tuple[bytes, bytes] | None = None, ca: bool = False,
               days: int = 825, ip: str | None = None, dns: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) of a new ECDSA P-256 key for ``common_name``, signed by ``issuer``
    ((certificate PEM, private key PEM); None: self-signed, for a CA). ``ip``/``dns``: a server's names."""
    import datetime as _dt
    import ipaddress

    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    if issuer is None:
        issuer_name, issuer_key = name, key
    else:
        issuer_name = x509.load_pem_x509_certificate(issuer[0]).subject
        issuer_key = serialization.load_pem_private_key(issuer[1], password=None)
    now = _dt.datetime.now(_dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
               .not_valid_after(now + _dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if (ip or dns) else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        names = ([x509.IPAddress(ipaddress.ip_address(ip))] if ip else []) + [x509.DNSName(d) for d in dns]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
