"""The admin page's key-service table and the console's unwrap counter: every unwrap the console asked for is
counted per process and shown per hour (the passphrase keystore counts too: the same keyring path)."""

from __future__ import annotations

import re

from .conftest import login


def test_unwraps_are_counted_and_shown_per_hour_per_process(served):
    alice = login(served.url, "alice")
    assert alice.get("/api/meters/M-ALICE/readings", params={"from": "2024-03-01", "to": "2024-03-02"}).status_code == 200
    page = login(served.url, "root").get("/admin").text
    table = page[page.index('aria-label="Key service unwraps"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>(\d+)</td></tr>", table)
    process = served.state.vault.keys.usage.process
    mine = [r for r in rows if r[1] == process]
    assert mine and mine[0][2] == "console" and int(mine[0][3]) >= 1
    assert "local (passphrase keystore)" in page
    metrics = alice.get("/metrics").text
    assert f'meterseal_kms_unwraps_total{{key="dek",process="{process}"}}' in metrics
