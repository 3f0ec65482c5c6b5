"""meterseal's pure core: validation, the crypto envelope, blind-index tokens, the store, settings and the CLI.

Modules here never import Faust; the Faust wiring lives in ``agents``.
"""
