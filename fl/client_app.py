"""The Flower ``ClientApp`` of a deployment: one SuperNode per region, on that region's machine.

A SuperNode is started with its region and data directory in its node config
(``meterseal fl supernode --region north``); its client opens only that region's readings from the
store, with the keystore passphrase of its own environment (``METERSEAL_PASSPHRASE``), and trains the
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

from .rounds import RegionClient


@lru_cache(maxsize=8)
def _region_data(data_dir: str, region: str, interval_min: int):
    from streams.keystore import Keystore
    from streams.query import Reader

    from .data import region_data, region_readings

    passphrase = os.environ.get("METERSEAL_PASSPHRASE")
    if not passphrase:
        raise RuntimeError("the SuperNode needs METERSEAL_PASSPHRASE to open its region's readings")
    keys = Keystore.load(data_dir).unlock(passphrase)
    readings = region_readings(Reader(os.path.join(data_dir, "store"), keys), region)
    return region_data(readings, region, step_s=interval_min * 60)


def client_fn(context: Context):
    region = str(context.node_config["region"])
    data_dir = str(context.node_config.get("data-dir") or os.environ.get("METERSEAL_DATA_DIR", "meterseal-data"))
    data = _region_data(data_dir, region, int(context.run_config.get("interval-min", 60)))
    return RegionClient(data, epochs=int(context.run_config.get("local-epochs", 2))).to_client()


def secagg_if_asked(msg, ctxt, call_next):
    """Flower's SecAgg+ client mod, for training messages that carry its configuration (``secagg = true``)."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


app = ClientApp(client_fn=client_fn, mods=[secagg_if_asked])
