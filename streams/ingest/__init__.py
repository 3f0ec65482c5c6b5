"""Getting data in: the Kafka-protocol broker (``broker``: the embedded Tansu broker, producers, consumers,
topics), the sources of raw readings and bills (``sources``: seed CSV, UCI household power, the simulator)
and encoding + producing them to the raw topics (``produce``).

May import ``schemas``, ``streams.validate`` and ``streams.exceptions``; never Faust.
"""
