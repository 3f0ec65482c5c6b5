"""The ``meterseal`` command, one module per command group; ``main`` builds the click group and ``common``
holds what the command modules share (console, passphrase prompts).

The top floor: it may import everything, and nothing outside ``streams/cli/`` imports it.
"""
