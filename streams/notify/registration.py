"""What alert routing keeps, registered with the capability registry (``streams.registry``): the alert history
(rows by meter token) and customers' email opt-ins (by meter token) are a subject's data; the history is under
retention by alert time (kind ``alerts``)."""

from __future__ import annotations

from streams.registry import ErasureContext, Registry, RetainedKind, Subject, SubjectHolder


def erase_history(context: ErasureContext, subject: Subject) -> int:
    from streams.notify.history import erase

    return erase(context.store, subject.meter_toks)


def erase_optins(context: ErasureContext, subject: Subject) -> int:
    from streams.notify.optins import erase

    return erase(context.store.blobs, subject.meter_toks)


def delete_old_alerts(context: ErasureContext, cutoff: float) -> int:
    from streams.notify.history import delete_older
    from streams.store.base import connect

    return delete_older(context.store, connect(context.store), cutoff)


def register(registry: Registry) -> None:
    registry.add_holder(SubjectHolder("alert-history", "alerts naming the subject's meters (store table alerts)",
                                      erase_history))
    registry.add_holder(SubjectHolder("alert-optins", "the subject's email opt-in to alerts on its meters",
                                      erase_optins))
    registry.add_retained(RetainedKind("alerts", "the alert history, by the time each alert was detected",
                                       delete_old_alerts))
