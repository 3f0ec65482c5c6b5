"""The Flower ``ClientApp`` of a deployment: one SuperNode per region, on that region's machine.

A SuperNode is started with its region and data directory in its node config
(``meterseal fl supernode --region north``); its client opens only that region's readings from the
store with the region's own key file (``--region-key``, passphrase in ``METERSEAL_REGION_PASSPHRASE``;
it opens no other region's records) — or, without one, the owner's keystore — and trains the
global model on them. With SecAgg+ (run config ``secagg = true``) the client masks its update so the
server only ever sees the sum over regions.
"""

from __future__ import annotations

import os
from functools import lru_cache

from flwr.client import ClientApp
from flwr.client.mod import secaggplus_mod
from flwr.common import Context
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from fl.rounds import RegionClient


@lru_cache(maxsize=8)
def _region_data(data_dir: str, region: str, interval_min: int, region_key: str = ""):
    from fl.data import region_data, region_readings, region_readings_with_key

    from streams.settings import Settings

    settings = Settings.from_env(data_dir=data_dir)  # METERSEAL_STORE / METERSEAL_CATALOG / AWS_* of the SuperNode
    store_dir = settings.store_location
    if region_key:  # the region's own capability: opens this region's records, no other's
        from streams.keys.regions import RegionKey

        passphrase = os.environ.get("METERSEAL_REGION_PASSPHRASE")
        if not passphrase:
            raise RuntimeError("the SuperNode needs METERSEAL_REGION_PASSPHRASE to open its region key file")
        key = RegionKey.load(region_key, passphrase)
        if key.region != region:
            raise RuntimeError(f"{region_key} is the key of region {key.region!r}, not {region!r}")
        readings = region_readings_with_key(store_dir, key)
    else:
        from streams.kms.access import open_keys
        from streams.store.query import Reader

        passphrase = os.environ.get("METERSEAL_PASSPHRASE")
        # the owner's keys: a passphrase keystore's (METERSEAL_PASSPHRASE), or a key service's (its token)
        keys = open_keys(settings, role="reader", passphrase=passphrase)
        if keys.local and not passphrase:
            raise RuntimeError("the SuperNode needs a region key (--region-key) or METERSEAL_PASSPHRASE to open "
                               "its region's readings")
        readings = region_readings(Reader(store_dir, keys.unlocked()), region)
    return region_data(readings, region, step_s=interval_min * 60)


def client_fn(context: Context):
    region = str(context.node_config["region"])
    data_dir = str(context.node_config.get("data-dir") or os.environ.get("METERSEAL_DATA_DIR", "meterseal-data"))
    data = _region_data(data_dir, region, int(context.run_config.get("interval-min", 60)),
                        str(context.node_config.get("region-key", "")))
    return RegionClient(data, epochs=int(context.run_config.get("local-epochs", 2))).to_client()


def secagg_if_asked(msg, ctxt, call_next):
    """Flower's SecAgg+ client mod, for training messages that carry its configuration (``secagg = true``)."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


app = ClientApp(client_fn=client_fn, mods=[secagg_if_asked])
