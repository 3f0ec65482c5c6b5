"""Who an erasure reaches: the customer the owner names, and everything its records link it to.

A record's subject key is its account's where it names one, else its meter's (``streams.keys.subjects``), so the
unit of crypto-shredding is the customer: erasing a meter whose readings carry account A destroys A's subject
key, which also sealed A's records of its other meters. ``resolve`` therefore follows the links to closure —
the meters named, the accounts their records name, those accounts' other meters, ... — and reports them, so the
operator sees the whole reach before confirming. Ids of linked meters and accounts are read from one opened
record each (the owner's keys): erasure is the owner's act.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.crypto.tokens import BlindIndex
from streams.exceptions import ErasureError
from streams.keys.subjects import KEYS, Fence, SubjectKeyTable, current_epoch, subject_hash
from streams.registry import Subject
from streams.store.base import Store, rows_matching
from streams.unseal import SEALED_COLUMNS, open_record

LINK_TABLES = ("readings", "bills")
MAX_LINKS = 10_000  # meters and accounts one erasure may reach before it asks for a narrower subject


@dataclass
class Reach:
    """The meters and accounts (id -> current token) one erasure reaches, and their record counts."""

    kind: str
    subject_id: str
    meters: dict[str, str] = field(default_factory=dict)
    accounts: dict[str, str] = field(default_factory=dict)

    @property
    def primary_token(self) -> str:
        return (self.meters if self.kind == "meter" else self.accounts)[self.subject_id]

    def subject(self) -> Subject:
        return Subject(self.kind, self.subject_id, tuple(sorted(self.meters)), tuple(sorted(self.accounts)),
                       tuple(sorted(self.meters.values())), tuple(sorted(self.accounts.values())),
                       subject_hash(self.primary_token))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject_id": self.subject_id, "meters": self.meters, "accounts": self.accounts}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Reach":
        return cls(doc["kind"], doc["subject_id"], dict(doc["meters"]), dict(doc["accounts"]))


def resolve(store: Store, index: BlindIndex, fence: Fence, keyring: Any, kind: str, subject_id: str) -> Reach:
    """The closure of ``kind``/``subject_id`` over the records linking meters and accounts (current epochs)."""
    if kind not in ("meter", "account"):
        raise ErasureError(f"a subject is a meter or an account, not {kind!r}")
    subject_id = subject_id.strip()
    if not subject_id:
        raise ErasureError(f"no {kind} id given")
    reach = Reach(kind, subject_id)
    (reach.meters if kind == "meter" else reach.accounts)[subject_id] = current_epoch(index, fence, kind, subject_id).token
    while True:
        found = _links(store, set(reach.meters.values()), set(reach.accounts.values()))
        known_m, known_a = set(reach.meters.values()), set(reach.accounts.values())
        new = [(m, a, row) for m, a, row in found if m not in known_m or (a is not None and a not in known_a)]
        if not new:
            return reach
        for meter_tok, account_tok, row in new:
            plain = open_record(row, keyring)
            meter_id = str(plain.get("meter_id") or plain.get("meter_no")).strip()
            account_id = plain.get("account_id")
            if meter_tok not in known_m:
                reach.meters[meter_id] = meter_tok
            if account_tok is not None and account_tok not in known_a and account_id:
                reach.accounts[str(account_id).strip()] = account_tok
        if len(reach.meters) + len(reach.accounts) > MAX_LINKS:
            raise ErasureError(f"erasing this {kind} would reach more than {MAX_LINKS} meters and accounts: its "
                               "records link too much of the store together; erase a narrower subject")


def _links(store: Store, meter_toks: set[str], account_toks: set[str]) -> list[tuple[str, str | None, dict[str, Any]]]:
    """One stored record per (meter token, account token) pair touching the given tokens."""
    out = []
    for table in LINK_TABLES:
        rows = rows_matching(store, table, {"meter_tok": meter_toks, "account_tok": account_toks},
                             columns=list(SEALED_COLUMNS))
        pairs = zip(rows.column("meter_tok").to_pylist(), rows.column("account_tok").to_pylist())
        first: dict[tuple[str, str | None], int] = {}
        for i, pair in enumerate(pairs):
            first.setdefault(pair, i)
        for (meter_tok, account_tok), i in first.items():
            out.append((meter_tok, account_tok, rows.slice(i, 1).to_pylist()[0]))
    return out


def has_data(store: Store, table: SubjectKeyTable, reach: Reach) -> bool:
    """Whether anything holds the subject now: a subject key or a stored record of any of its tokens."""
    tokens = [*reach.meters.values(), *reach.accounts.values()]
    if any(table.blobs.exists(f"{KEYS}{t}.json") for t in tokens):
        return True
    return bool(_links(store, set(reach.meters.values()), set(reach.accounts.values())))
