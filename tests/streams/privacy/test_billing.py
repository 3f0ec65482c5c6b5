"""Encrypted slab bills equal the clear ones to the paisa; another key's ciphertexts are refused."""

from __future__ import annotations

import csv

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from streams.exceptions import ConfigError
from streams.privacy import billing, tariff

T = tariff.default_tariff()


@pytest.fixture(scope="module")
def holder():
    return billing.KeyHolder.generate()


def bill_encrypted(holder, units, tar=T):
    usage = billing.encrypt_usage(holder, units, tar)
    bills = billing.compute_bills(holder.public_context, usage, tar.rates)  # public material only
    return billing.decrypt_bills(holder, bills)


def test_tariff_edges_and_rounding():
    assert T.edges == (10_000, 20_000, 30_000) and T.rates == (415, 560, 715, 820)
    assert tariff.split(tariff.units_of("300.01"), T) == [10_000, 10_000, 10_000, 1]
    assert tariff.units_of(0.125) == 13 and tariff.units_of("0.004999") == 0 and tariff.units_of(0.005) == 1
    assert tariff.clear_bill(tariff.units_of(100), T) == 41_500
    assert tariff.clear_bill(tariff.units_of("100.01"), T) == 41_506  # 415 + 0.0560 rupees, half up
    with pytest.raises(ConfigError, match="negative"):
        tariff.units_of(-1)


def test_every_seed_bill_to_the_paisa(holder, seed_csv):
    with open(seed_csv, newline="", encoding="utf-8-sig") as fh:
        billed = [tariff.units_of(row["Billed Unit"]) for row in csv.DictReader(fh)]
    assert len(billed) == 1000
    assert bill_encrypted(holder, billed) == [tariff.clear_bill(u, T) for u in billed]


EDGES = [0, 1, 9_999, 10_000, 10_001, 19_999, 20_000, 20_001, 29_999, 30_000, 30_001, 10**7]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(EDGES), st.integers(0, 2_000_000),
                          st.sampled_from(EDGES).flatmap(lambda e: st.integers(max(e - 3, 0), e + 3))),
                min_size=1, max_size=300))
def test_random_units_across_slab_edges_to_the_paisa(holder, units):
    assert bill_encrypted(holder, units) == [tariff.clear_bill(u, T) for u in units]


def test_many_customers_span_chunks(holder):
    units = [(i * 37) % 45_000 for i in range(holder.slots + 5)]  # two chunks
    usage = billing.encrypt_usage(holder, units, T)
    assert len(usage["chunks"]) == 2 and all(len(c) == T.slabs for c in usage["chunks"])
    assert billing.decrypt_bills(holder, billing.compute_bills(holder.public_context, usage, T.rates)) == \
        [tariff.clear_bill(u, T) for u in units]


def test_a_ciphertext_from_another_key_is_refused(holder):
    other = billing.KeyHolder.generate()
    usage = billing.encrypt_usage(other, [15_200, 42_200], T)
    with pytest.raises(billing.ForeignCiphertext, match="fingerprints differ"):
        billing.compute_bills(holder.public_context, usage, T.rates)  # billing side: not under its key
    bills = billing.compute_bills(other.public_context, usage, T.rates)
    with pytest.raises(billing.ForeignCiphertext, match="fingerprint differs"):
        billing.decrypt_bills(holder, bills)
    forged = {**bills, "fingerprint": holder.fingerprint}  # the label copied: the canary still catches it
    with pytest.raises(billing.ForeignCiphertext, match="check value"):
        billing.decrypt_bills(holder, forged)


def test_billing_side_holds_no_secret_and_refuses_one(holder):
    import tenseal as ts

    assert not ts.context_from(holder.public_context).has_secret_key()
    usage = billing.encrypt_usage(holder, [1], T)
    secret = holder.context.serialize(save_secret_key=True)
    with pytest.raises(billing.BillingError, match="must not hold the secret key"):
        billing.compute_bills(secret, {**usage, "fingerprint": billing.fingerprint(secret)}, T.rates)


def test_units_past_the_exact_range_are_refused(holder):
    with pytest.raises(billing.BillingError, match="integers in"):
        billing.encrypt_usage(holder, [10**12], T)
    with pytest.raises(billing.BillingError, match="integers in"):
        billing.encrypt_usage(holder, [1.5], T)


def test_custom_tariff_file(tmp_path, holder):
    path = tmp_path / "t.toml"
    path.write_text('name = "two"\n[[slab]]\nupto_kwh = 50.5\nrate_paise = 300\n[[slab]]\nrate_paise = 900\n')
    two = tariff.load_tariff(path)
    assert two.edges == (5050,) and bill_encrypted(holder, [5050, 5051], two) == [15150, 15159]
    path.write_text("[[slab]]\nrate_paise = 1\nupto_kwh = 3\n")
    with pytest.raises(ConfigError, match="open-ended"):
        tariff.load_tariff(path)


def test_uci_meter_months_to_the_paisa(holder):
    from streams.ingest import sources
    from streams.privacy import billrun

    # 40 UCI meters x ~5,000 minutes: every meter-month of the slice, incl. months cut at the slice's ends
    usage = billrun.meter_months(sources.uci_readings(meters=40, limit=200_000))
    assert len(usage) >= 40 and all(u["period"].count("-") == 1 for u in usage)
    result = billrun.run_encrypted(usage, T, holder=holder)
    assert result["identical_to_clear"] == result["customers"] == len(usage)
    assert [r["amount_paise"] for r in result["rows"]] == [tariff.clear_bill(u["units"], T) for u in usage]
