"""Homomorphic slab billing under BFV (Microsoft SEAL via TenSEAL): exact integer bills computed by a party
that never sees consumption.

**Parties and keys.**

- *Key holder* (the data owner's metering side): makes the BFV key pair (``KeyHolder.generate``), splits
  each customer's period units into per-slab units (the tariff is public), encrypts them, and alone
  decrypts the bills.
- *Billing side* (a billing processor): holds only the **public** context (parameters + public key, no
  secret key, ``KeyHolder.public_context``); computes every customer's bill as the dot product of the
  encrypted per-slab units with the public rates (``compute_bills``). It learns the number of customers
  and the tariff, nothing about any customer's consumption or bill.
- What encryption does *not* hide: whoever reads a bill learns the period's total consumption from it
  (the tariff is invertible). As in Rial & Danezis' privacy-preserving billing, encryption protects
  consumption from whoever *computes* the bill, not from whoever reads it.

**Packing.** Slot ``j`` of ciphertext ``s`` of a chunk holds customer ``j``'s units in slab ``s``; a chunk
packs ``slots - 1`` customers (8,191 at poly modulus 8192) in one ciphertext per slab, and the bill
ciphertext is ``sum_s rate_s * ct_s`` (plaintext-scalar products and additions only: no relinearisation
or Galois keys). Parameters: poly modulus 8192, SEAL's default 218-bit coefficient modulus for it (128-bit
security, HomomorphicEncryption.org standard), plain modulus a 41-bit batching prime, so every bill below
``(t-1)/2`` 0.01-paise (~5.5e9 rupees) is exact.

**Another key's ciphertext is refused**, two ways: (1) every bundle carries the SHA-256 fingerprint of the
public context it was encrypted under; the billing side refuses a bundle whose fingerprint is not its
context's, and the key holder one that is not its own; (2) the last slot of every ciphertext is a *canary*
— a value derived with HMAC-SHA256 from a secret only the key holder has, per batch, chunk and slab. The
key holder recomputes ``sum_s rate_s * canary_s mod t`` and compares it with the decrypted last slot: a
ciphertext made (or bills computed) under another key decrypts to noise and fails this with probability
1 - 2^-41, even if its fingerprint label was copied. (The canary is not a MAC against a malicious billing
side, which could still add encrypted values to customer slots.)
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..exceptions import MeterSealError
from .tariff import Tariff, paise_of, split

POLY_MODULUS = 8192
PLAIN_MODULUS = 1099511922689  # prime, = 1 mod 2*8192 (batching), 41 bits
VERSION = 1


class BillingError(MeterSealError):
    """Encrypted billing could not proceed (bad input, or values past the plaintext modulus)."""


class ForeignCiphertext(BillingError):
    """A ciphertext bundle not made under this key (or altered): refused, nothing decrypted is used."""


def _ts():
    import tenseal as ts

    return ts


def fingerprint(public_context: bytes) -> str:
    """SHA-256 of a serialized public context (parameters + public key): names the key a bundle is under."""
    return hashlib.sha256(public_context).hexdigest()


@dataclass
class KeyHolder:
    """The BFV key pair and the canary secret; the only party that can decrypt."""

    context: Any = field(repr=False)
    canary_key: bytes = field(repr=False)
    public_context: bytes = field(repr=False)
    slots: int = POLY_MODULUS

    @classmethod
    def generate(cls, *, poly_modulus: int = POLY_MODULUS) -> "KeyHolder":
        ts = _ts()
        context = ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=poly_modulus, plain_modulus=PLAIN_MODULUS)
        public = context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                                   save_relin_keys=False)
        return cls(context, os.urandom(32), public, poly_modulus)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_context)

    def canary(self, batch: bytes, chunk: int, slab: int) -> int:
        mac = hmac.new(self.canary_key, batch + chunk.to_bytes(4, "big") + slab.to_bytes(2, "big"), hashlib.sha256)
        return int.from_bytes(mac.digest(), "big") % PLAIN_MODULUS


def _chunks(n: int, per: int) -> list[range]:
    return [range(i, min(i + per, n)) for i in range(0, n, per)]


def encrypt_usage(holder: KeyHolder, units: Sequence[int], tariff: Tariff) -> dict[str, Any]:
    """Key holder: per-slab units of every customer (``units`` in 0.01 kWh, one per customer), packed
    ``slots - 1`` customers per ciphertext, one ciphertext per slab per chunk, plus the canary slot."""
    ts = _ts()
    limit = (PLAIN_MODULUS - 1) // 2 // max(tariff.rates + (1,))
    if any(not isinstance(u, int) or u < 0 or u > limit for u in units):
        raise BillingError(f"units must be integers in [0, {limit}] (0.01 kWh) for exact BFV bills")
    batch, slots = os.urandom(16), holder.slots
    per = slots - 1
    chunks = []
    for c, idx in enumerate(_chunks(len(units), per)):
        per_slab = [split(units[i], tariff) for i in idx]
        cts = []
        for s in range(tariff.slabs):
            values = [row[s] for row in per_slab] + [0] * (per - len(per_slab)) + [holder.canary(batch, c, s)]
            cts.append(ts.bfv_vector(holder.context, values).serialize())
        chunks.append(cts)
    return {"version": VERSION, "fingerprint": holder.fingerprint, "batch": batch.hex(), "count": len(units),
            "slabs": tariff.slabs, "slots": slots, "chunks": chunks}


def compute_bills(public_context: bytes, usage: dict[str, Any], rates: Sequence[int]) -> dict[str, Any]:
    """Billing side, public material only: each chunk's bill ciphertext = sum over slabs of rate x units."""
    ts = _ts()
    if usage.get("version") != VERSION or usage.get("fingerprint") != fingerprint(public_context):
        raise ForeignCiphertext("this usage bundle was not encrypted under the public key the billing side holds "
                                "(key fingerprints differ): ask the key holder for its current public context")
    if usage["slabs"] != len(rates):
        raise BillingError(f"the bundle has {usage['slabs']} slabs but the tariff {len(rates)}")
    context = ts.context_from(public_context)
    if context.has_secret_key():
        raise BillingError("the billing side must not hold the secret key: pass the public context only")
    bills = []
    for cts in usage["chunks"]:
        total = None
        for blob, rate in zip(cts, rates):
            term = ts.bfv_vector_from(context, blob) * int(rate)
            total = term if total is None else total + term
        bills.append(total.serialize())
    return {"version": VERSION, "fingerprint": usage["fingerprint"], "batch": usage["batch"], "count": usage["count"],
            "rates": list(rates), "slots": usage["slots"], "bills": bills}


def decrypt_bills(holder: KeyHolder, result: dict[str, Any]) -> list[int]:
    """Key holder: each customer's bill in paise (exact amount in 0.01 paise, rounded half up). Raises
    ``ForeignCiphertext`` for a bundle under another key (fingerprint, then the canary slot)."""
    ts = _ts()
    if result.get("version") != VERSION or result.get("fingerprint") != holder.fingerprint:
        raise ForeignCiphertext("these bills were not computed under this key holder's key (fingerprint differs); "
                                "nothing was decrypted")
    batch, per, out = bytes.fromhex(result["batch"]), result["slots"] - 1, []
    for c, (blob, idx) in enumerate(zip(result["bills"], _chunks(result["count"], per))):
        slots = [v % PLAIN_MODULUS for v in ts.bfv_vector_from(holder.context, blob).decrypt()]
        expected = sum(r * holder.canary(batch, c, s) for s, r in enumerate(result["rates"])) % PLAIN_MODULUS
        if slots[per] != expected:
            raise ForeignCiphertext("a bill ciphertext does not decrypt to this key holder's check value: it was "
                                    "made under another key or altered; refused")
        out += [paise_of(slots[j]) for j in range(len(idx))]
    return out


def ciphertext_bytes(bundle: dict[str, Any]) -> int:
    """Serialized ciphertext bytes in a usage or bills bundle."""
    if "chunks" in bundle:
        return sum(len(b) for cts in bundle["chunks"] for b in cts)
    return sum(len(b) for b in bundle["bills"])
