"""What sharing keeps, registered with the capability registry (``streams.registry``): the consent log of
data-sharing grants, and grants as holders of a subject's data — erasing a customer revokes every grant naming one
of its meters or accounts (GDPR Art. 19: the recipients learn it from the consent log and, with a notify URI, by a
notice). Grants over a whole region are not revoked: the customer's records leave them with the records."""

from __future__ import annotations

from ledger import leaf as leaf_codec

from streams.registry import ErasureContext, LedgerLog, Registry, Subject, SubjectHolder
from streams.share.grants import LOG_TABLE, consent_rows, list_grants, revoke_grant


def revoke_subject_grants(context: ErasureContext, subject: Subject) -> int:
    """Revoke the active grants naming the subject's meters or accounts; returns how many (0 on a rerun)."""
    meters, accounts = set(subject.meters), set(subject.accounts)
    revoked = 0
    for grant in list_grants(context.store, index_key=context.index_key, now=context.now):
        if grant.client_id:
            continue  # a third party's OAuth authorization: Connect My Data revokes it with its tokens, and tells it
        if grant.revoked_at is None and (meters & set(grant.meters) or accounts & set(grant.accounts)):
            revoke_grant(context.store, grant.grant_id, signer=context.signer, index_key=context.index_key,
                         reason=f"the data subject's data was erased (erasure {context.erasure_id})", now=context.now)
            revoked += 1
    return revoked


def register(registry: Registry) -> None:
    registry.add_log(LedgerLog(LOG_TABLE, rows=lambda store, partition: consent_rows(store),
                               encode=leaf_codec.encode_consent_event))
    registry.add_holder(SubjectHolder("grants", "data-sharing grants naming the subject's meters or accounts",
                                      revoke_subject_grants))
