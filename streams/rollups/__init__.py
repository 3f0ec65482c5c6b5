"""Rollups: hourly and daily consumption kept up to date by the worker as readings are stored, so that charts,
SQL, billing, Green Button feeds and DP queries read a few rows per meter-hour or region-hour instead of
opening every reading. ``cells`` is the arithmetic of one partition (pure), ``state`` its sealed saved form,
``keeper`` the worker's side (called by ``streams.pipeline`` inside the partition's store lock: contributions
in, state saved, rows written), ``read`` the readers' side (region cells in clear; per-meter rows opened with
the owner's keys through ``streams.unseal``), ``rebuild`` the owner's recomputation from raw rows, and
``registration`` what they hold for erasure. May import the spine (``streams.seal``, ``streams.unseal``,
``streams.settings``, ``streams.exceptions``), ``streams.crypto``, ``streams.store`` and ``schemas``; never the
pipeline, the console, the CLI or Faust."""
