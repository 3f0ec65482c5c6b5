"""Faust wiring of meterseal: topics, the validator-state table and thin agents around ``streams.pipeline``.

Nothing happens at import time; ``agents.app.build_app(settings, pipeline)`` builds the app.
"""
