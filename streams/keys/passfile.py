"""What every passphrase-sealed key file shares: the scrypt cost and the base64 text encoding.

The keystore, region key files (and party key files) derive their key-encryption key with scrypt at this
cost and store binary fields as base64 text.
"""

from __future__ import annotations

import base64

SCRYPT = {"n": 2**15, "r": 8, "p": 1}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)
