"""Tamper-evident ledger (RFC 6962 Merkle log with signed checkpoints): issue 3; nothing here yet."""
