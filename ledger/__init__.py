"""meterseal's tamper-evident ledger: an RFC 6962 / RFC 9162 Merkle log with signed checkpoints.

Laid out like transparency-dev/merkle: ``hashing`` (the RFC's leaf and node hashes), ``compact``
(the right-edge frontier an appender keeps), ``proof`` (which nodes a proof needs), ``verify`` (pure
checks that raise ``ProofError``), ``note``/``checkpoint`` (C2SP signed notes). No Kafka, no disk.
"""
