"""Benchmarks behind ``meterseal bench``: every figure beside a baseline measured in the same run.

``micro`` (seal step, ledger), ``store`` (queries and unseal over a built store), ``pipeline`` (workers on the
embedded broker: throughput, latency, replay, bare Faust, the whole suite), ``fl`` (the forecaster and
federated rounds). May import anything below ``streams.cli``; nothing imports it but the CLI.
"""
