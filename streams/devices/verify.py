"""The step before the ``Sealer``: signed envelopes checked against the registry, the signature and the counter.

For each raw message of a seal batch, ``DeviceCheck.check_all`` says one of three things:

- None: not a signed envelope — the ``Sealer`` judges it as an unsigned reading (or, with
  ``METERSEAL_REQUIRE_SIGNED``, it is refused here with rule ``signature``);
- ``Verified``: the inner reading's bytes and the device fields; the ``Sealer`` seals the reading as schema v3,
  signature, KEY_ID and counter inside its envelope, so the ledger leaf (which covers the envelope) covers them;
- ``InvalidInput``: a dead letter — rule ``device`` (unknown or revoked key, or a key registered for another
  meter), ``signature`` (a malformed envelope, another algorithm than the key's, a signature that does not verify
  over the payload bytes), ``replay`` (``streams.devices.counters``), ``decode``/``schema`` (a payload that is not
  one JSON reading, a missing ``device_seq``).

A message that is not a signed envelope costs one substring test (``signed.maybe_signed``): the unsigned path
does not slow down. Pure apart from the registry ``Directory`` it is given; the windows come in through
``windows`` (a ``streams.pipeline.BatchState`` over the worker's ``device-seq`` table).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

from streams.crypto.tokens import BlindIndex
from streams.devices import counters, signed
from streams.devices.registry import Device
from streams.exceptions import InvalidInput
from streams.seal import DeviceFields


class Verified(NamedTuple):
    payload: bytes  # the signed reading, as the Sealer takes a raw message
    device: DeviceFields


class Windows(Protocol):
    def get(self, key: str) -> counters.Window | None: ...
    def put(self, key: str, value: counters.Window, context: Any = None) -> None: ...


class DeviceCheck:
    """``directory(kid)`` is the registry's device of a KEY_ID (``registry.Directory.get``); ``index`` makes each
    device's window key (a keyed token of its KEY_ID: the changelog names no key id in clear)."""

    def __init__(self, directory: Callable[[str], Device | None], index: BlindIndex, *, require_signed: bool = False,
                 max_message_bytes: int = 65_536) -> None:
        self.directory, self.index = directory, index
        self.require_signed, self.max_message_bytes = require_signed, max_message_bytes
        self._window_keys: dict[str, str] = {}

    def window_key(self, kid: str) -> str:
        key = self._window_keys.get(kid)
        if key is None:
            if len(self._window_keys) >= 100_000:
                self._window_keys.clear()
            key = self._window_keys[kid] = self.index.record_id("device-seq", kid)
        return key

    def check_all(self, messages: list[bytes], windows: Windows,
                  contexts: list[Any] | None = None) -> list[Verified | InvalidInput | None] | None:
        """Each message's verdict, in order; None for the whole batch when no message is a signed envelope and
        unsigned ones are allowed (the usual unsigned batch: nothing to do)."""
        if not self.require_signed and not any(signed.maybe_signed(m) for m in messages):
            return None
        return [self.check(m, windows, None if contexts is None else contexts[i]) for i, m in enumerate(messages)]

    def check(self, data: bytes, windows: Windows, context: Any = None) -> Verified | InvalidInput | None:
        if len(data) > self.max_message_bytes:
            return None  # the Sealer's size rule
        try:
            envelope = signed.parse(data)
            if envelope is None:
                if self.require_signed:
                    raise InvalidInput("signature", "not a signed envelope, and METERSEAL_REQUIRE_SIGNED is on")
                return None
            return self._verify(envelope, windows, context)
        except InvalidInput as exc:
            return exc

    def _verify(self, envelope: signed.Signed, windows: Windows, context: Any) -> Verified:
        device = self.directory(envelope.kid)
        if device is None:
            raise InvalidInput("device", "unknown device key: register it with `meterseal device add`")
        if not device.active:
            raise InvalidInput("device", "the device key was revoked")
        if envelope.alg != device.alg:
            raise InvalidInput("signature", f"alg {envelope.alg} is not the registered key's ({device.alg})")
        if not device.public_key.verify(envelope.payload, envelope.sig):
            raise InvalidInput("signature", "the signature does not verify over the payload with the registered key")
        reading = signed.payload_reading(envelope)
        meter = reading.get("meter_id")
        if not isinstance(meter, (str, int)) or isinstance(meter, bool) or str(meter).strip() != device.meter_id:
            raise InvalidInput("device", "the reading names another meter than the one the key is registered for")
        seq = reading.get("device_seq")
        key = self.window_key(device.kid)
        windows.put(key, counters.advance(windows.get(key), seq, envelope.payload), context)
        return Verified(envelope.payload, DeviceFields(envelope.alg, device.kid, seq, envelope.sig, envelope.payload))
