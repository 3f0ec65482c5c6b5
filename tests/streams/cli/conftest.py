from tests.streams.share.conftest import party, party_key, shared_store  # noqa: F401 - fixtures for test_share
