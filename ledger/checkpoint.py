"""C2SP tlog-checkpoint bodies: origin, tree size, base64 root hash — signed as a note.

>>> body = Checkpoint("meterseal.example/readings/0", 3, bytes(32)).body()
>>> body.splitlines()[:2]
['meterseal.example/readings/0', '3']
>>> Checkpoint.parse(body) == Checkpoint("meterseal.example/readings/0", 3, bytes(32))
True
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from .exceptions import NoteError
from .hashing import HASH_LEN


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def from_note(cls, note: str) -> "Checkpoint":
        """The checkpoint in a signed note's text, signatures NOT checked (for sizes and listings of notes
        this process wrote or already verified; use ``note.open_note`` for anything from outside)."""
        return cls.parse(note.split("\n\n")[0] + "\n")

    @classmethod
    def parse(cls, text: str) -> "Checkpoint":
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("checkpoint must have origin, size and root lines, each ending in a newline")
        origin, size, root_b64 = lines[:3]
        if not origin or not size.isdigit() or (size != "0" and size.startswith("0")):
            raise NoteError("malformed checkpoint origin or size")
        try:
            root = base64.b64decode(root_b64, validate=True)
        except binascii.Error:
            raise NoteError("checkpoint root is not base64") from None
        if len(root) != HASH_LEN:
            raise NoteError("checkpoint root is not 32 bytes")
        return cls(origin, int(size), root)
