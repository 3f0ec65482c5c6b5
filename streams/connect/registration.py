"""What Connect My Data keeps, registered with the capability registry (``streams.registry``): third parties'
authorizations and tokens naming a subject's meters. Erasure revokes them (a consent-log leaf each, tokens
revoked, the party told through the outbox — queued, never waited for: GDPR Art. 19) and returns how many.
It keeps no Merkle log of its own: its consent events are leaves of the sharing capability's consent log."""

from __future__ import annotations

from streams.registry import ErasureContext, Registry, Subject, SubjectHolder

from .notify import Outbox
from .service import Connect


def erase(context: ErasureContext, subject: Subject) -> int:
    connect = Connect(context.store, context.data_dir, signer=context.signer, index_key=context.index_key,
                      outbox=Outbox.for_data_dir(context.data_dir, context.signer),
                      public_url=context.extra.get("connect_public_url"))
    meters = set(subject.meters)
    done = 0
    for grant in connect.authorizations():
        if not meters & set(grant.meters):
            continue
        if grant.state == "active":
            connect.revoke(grant.grant_id, by="erasure of the data subject")
            done += 1
        done += connect.tokens.revoke_grant(grant.grant_id, reason="erasure of the data subject")
    return done


def register(registry: Registry) -> None:
    registry.add_holder(SubjectHolder("connect-authorizations",
                                      "third parties' OAuth authorizations and tokens naming the subject's meters",
                                      erase))
