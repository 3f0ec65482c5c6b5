"""``python -m streams.cli``: the ``meterseal`` command."""

from streams.cli.main import main

if __name__ == "__main__":
    main()
