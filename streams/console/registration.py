"""What the console keeps, registered with the capability registry (``streams.registry``): its accounts name
customers' meters (``<data-dir>/console/users.json``), so erasing a subject takes its meters out of every account
— whose sessions end at once, in every console. A customer left with no meter keeps its account (nothing in its
scope) to read the erasure's outcome and receipt; an administrator removes it when asked to."""

from __future__ import annotations

from streams.console.users import UserStore
from streams.registry import ErasureContext, Registry, Subject, SubjectHolder


def erase_meters_from_accounts(context: ErasureContext, subject: Subject) -> int:
    """Drop the subject's meters from every console account; returns how many accounts changed (0 on a rerun)."""
    users = UserStore.for_data_dir(context.data_dir)
    erased, changed = set(subject.meters), 0
    for user in users.list():
        kept = [m for m in user.meters if m not in erased]
        if len(kept) == len(user.meters):
            continue
        users.erase_meters(user.name, erased)
        changed += 1
    return changed


def register(registry: Registry) -> None:
    registry.add_holder(SubjectHolder("console-accounts", "console accounts naming the subject's meters",
                                      erase_meters_from_accounts))
