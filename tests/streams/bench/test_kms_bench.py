"""``meterseal bench kms`` on a tiny store: every provider measured on the same records, nothing asserted about speed."""

from __future__ import annotations

import pytest

from streams.bench.kms import bench_kms

pytestmark = pytest.mark.kms


def test_every_provider_opens_the_same_range_and_seals(openbao, hsm_uri):
    # (the OpenBao fixture only says whether the server is installed: the bench starts its own)
    result = bench_kms(readings=30_000, dek_records=500, unwraps=5, seal_readings=2000, hsm_uri=hsm_uri)
    assert result["providers"] == ["local", "openbao", "pkcs11"] and result["skipped"] == {}
    ranges = result["range_42_days"]
    assert len({(r["hits"], r["deks"]) for r in ranges.values()}) == 1 and ranges["local"]["hits"] > 0
    assert all(r["warm_ms"] > 0 and r["cold_ms"] > 0 for r in ranges.values())
    seal = result["seal"]["rotation_1000"]
    assert seal["deks_made"] == {"local": 2, "openbao": 2, "pkcs11": 2}
    assert set(seal["vs_local"]) == {"openbao", "pkcs11"}
    assert all(v["median"] > 0 for v in result["unwrap_ms"].values())
