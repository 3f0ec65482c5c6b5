"""From the meter: MQTT into readings.raw, and the fleet and broker for trials and tests.

``route`` (a topic and payload to a readings.raw message: key, value, or a forwarded dead letter), ``acks``
(PUBACKs in the order the PUBLISHes came, each only once Kafka has the message), ``bridge`` (``meterseal bridge
mqtt``: paho-mqtt with manual acks, a persistent session, MQTT 5 shared subscriptions, a librdkafka producer
with acks=all), ``fleet`` (``meterseal simulate meters``: meters publishing over MQTT, signed or not), ``pki``
(a CA and the broker's, bridge's and meters' certificates) and ``mosquitto`` (Debian's Mosquitto on loopback
with TLS client certificates and the per-meter ACL, for trials and tests).

May import ``streams.ingest``, ``streams.devices``, ``streams.crypto``, ``streams.settings``,
``streams.exceptions`` and ``schemas``; never Faust or ``streams.cli``.
"""
