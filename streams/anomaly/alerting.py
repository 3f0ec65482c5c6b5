"""From seal outcomes to alert records: the anomaly detector wired to meters, partitions and keys.

The detector runs inside the ingest trust zone, in the seal agent, on the plaintext the worker
holds anyway for the instant it seals a reading (README, "Anomaly alerts: trust boundary"). What
persists is sealed: each meter's ``Profile`` lives in a changelog-backed table as an AES-GCM
envelope under a key derived from the index key (the changelog carries no reading in clear), and
each partition's River model is saved, sealed the same way, to ``<store>/detector/pNNN.model``.
Alerts name the meter by token only and carry no consumption value unless ``alert_values`` is set.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import pickle
import time
from pathlib import Path
from typing import Any, Callable

from streams.crypto import _primitives
from streams.crypto import envelope as env
from streams.anomaly.detector import Detector
from streams.crypto.envelope import DataKey
from streams.exceptions import InvalidEnvelope, InvalidInput
from streams.anomaly.features import Profile
from streams.seal import Rejected, Sealed, StateCodec
from streams.settings import Settings
from streams.crypto.tokens import BlindIndex
from streams.validate import _parse_ts

ALERT_FORMAT = 1
_PROFILE_KEY_ID = b"meterseal-profl!"
_MODEL_KEY_ID = b"meterseal-model!"


def derive_detector_key(index_root: bytes) -> bytes:
    return _primitives.hkdf_sha256(index_root, info=b"meterseal/detector-state/v1")


def profile_codec(key: bytes) -> StateCodec:
    """Seals a meter's ``Profile`` for the changelog-backed table (key: meter token)."""
    return StateCodec(key, key_id=_PROFILE_KEY_ID, aad_prefix=b"profile|", pack=Profile.pack, unpack=Profile.unpack)


class Alerting:
    """One worker's detectors (one per readings.raw partition) and the alert records they produce."""

    def __init__(self, settings: Settings, index: BlindIndex, index_root: bytes, model_dir: Path | str,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self.index, self.clock = settings, index, clock
        key = derive_detector_key(index_root)
        self.profiles = profile_codec(key)
        self._model_key = {_MODEL_KEY_ID: DataKey(_MODEL_KEY_ID, key)}
        self.model_dir = Path(model_dir)
        self._detectors: dict[int, Detector] = {}

    # -- detectors, saved and loaded per partition ------------------------------------------------
    def new_detector(self) -> Detector:
        return Detector(quantile=self.settings.alert_quantile, flatline_run=self.settings.flatline_readings)

    def model_path(self, partition: int) -> Path:
        return self.model_dir / f"p{partition:03d}.model"

    def detector(self, partition: int) -> Detector:
        """The partition's detector: cached, else loaded from its sealed model file, else new."""
        d = self._detectors.get(partition)
        if d is None:
            path = self.model_path(partition)
            d = self._load(path) if path.exists() else self.new_detector()
            self._detectors[partition] = d
        return d

    def _load(self, path: Path) -> Detector:
        aad = b"detector|" + path.name.encode()
        try:
            # the file opens only under the detector key, so it was written by a worker holding it
            return pickle.loads(env.open_with(self._model_key, path.read_bytes(), aad=aad))  # noqa: S301
        except (InvalidEnvelope, pickle.UnpicklingError, EOFError) as exc:
            raise InvalidEnvelope(f"{path}: detector model does not open with this index key ({exc})") from None

    def save(self, partitions: list[int] | None = None) -> int:
        """Write the cached detectors (atomically); returns how many."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        saved = 0
        for partition, d in list(self._detectors.items()):
            if partitions is not None and partition not in partitions:
                continue
            path = self.model_path(partition)
            blob = env.seal(self._model_key[_MODEL_KEY_ID], pickle.dumps(d), aad=b"detector|" + path.name.encode())
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(blob)
            os.replace(tmp, path)
            saved += 1
        return saved

    def release(self, partitions: list[int]) -> None:
        """Save and forget partitions handed to another worker (it loads them from the files)."""
        self.save(partitions)
        for p in partitions:
            self._detectors.pop(p, None)

    # -- one outcome ----------------------------------------------------------------------------
    def observe(self, outcome: Sealed | Rejected, partition: int, profiles: Any, *, context: Any = None,
                ingested_ms: int | None = None) -> list[tuple[bytes, dict[str, Any]]]:
        """Alert messages ``(key, Alert record)`` for one seal outcome; ``profiles`` is a ``BatchState``."""
        return self.observe_many([(outcome, partition, context, ingested_ms)], profiles)

    def observe_many(self, outcomes: list[tuple[Sealed | Rejected, int, Any, int | None]],
                     profiles: Any) -> list[tuple[bytes, dict[str, Any]]]:
        """Alert messages for a seal batch's ``(outcome, raw partition, context, ingested ms)``, in order: each
        partition's detector looks at its readings at once (``Detector.observe_many``)."""
        by_partition: dict[int, list[tuple]] = {}
        for outcome, partition, context, ingested_ms in outcomes:
            seen = _reading_of(outcome)
            if seen is None:
                continue
            meter_id, ts, epoch, kwh, register, region = seen
            meter_tok = outcome.record["meter_tok"] if isinstance(outcome, Sealed) else self.index.meter(meter_id)
            profile = profiles.get(meter_tok) or Profile()
            profiles.put(meter_tok, profile, context)  # (the same object for the meter's next reading)
            by_partition.setdefault(partition, []).append((profile, epoch, kwh, register, meter_id, ts, region,
                                                          meter_tok, ingested_ms))
        alerts = []
        for partition, items in by_partition.items():
            verdicts = self.detector(partition).observe_many([item[:4] for item in items])
            now_ms = int(self.clock() * 1000)
            for (_, _, kwh, _, meter_id, ts, region, meter_tok, ingested_ms), verdict in zip(items, verdicts):
                alerts += [(meter_tok.encode(), {
                    "format": ALERT_FORMAT, "alert_id": self.index.record_id("alert", meter_id, ts, f.kind),
                    "meter_tok": meter_tok, "ts": ts, "kind": f.kind, "score": float(f.score), "severity": f.severity,
                    "reason": f.reason, "region": region, "kwh": kwh if self.settings.alert_values else None,
                    "ingested_at_ms": ingested_ms, "detected_at_ms": now_ms,
                }) for f in verdict.findings if f.new]
        return alerts


def _reading_of(outcome: Sealed | Rejected) -> tuple[str, str, float, float, float, str | None] | None:
    """(meter id, ts, epoch, kwh, register, region) of a sealed reading, or of a reading rejected for a
    hard fault the detector reports (register rollback, negative energy); None for anything else."""
    if isinstance(outcome, Sealed):
        r = outcome.reading
        return None if r is None else (r.meter_id, r.ts, r.epoch, r.kwh, r.register_kwh, r.region)
    d, rule = outcome.decoded, outcome.record["rule"]
    if d is None or rule not in ("register", "kwh"):
        return None
    try:
        kwh, register = float(d["kwh"]), float(d["register_kwh"])
        stamp = _parse_ts(d["ts"])
        meter_id = d["meter_id"]
    except (KeyError, TypeError, ValueError, InvalidInput):
        return None
    if not (math.isfinite(kwh) and math.isfinite(register)) or isinstance(meter_id, bool) \
            or not isinstance(meter_id, (str, int)):
        return None
    if rule == "kwh" and kwh >= 0:
        return None  # implausibly large: a data error, already a dead letter, not a meter fault
    region = d.get("region") if isinstance(d.get("region"), str) else None
    utc = stamp.astimezone(dt.timezone.utc).isoformat()
    return str(meter_id), utc, stamp.timestamp(), kwh, register, region
