"""Aggregator stage: registers -> consumption -> standard coal, carbon and intensity.

The pure computation, one job per module, LazyFrames in and out:

- `reference` — coefficient, emission-factor and intensity reference tables (packaged, with
  the user's overrides), and which row applies to a meter or enterprise in a given year;
- `consumption` — readings -> one classified row per distinct reading: the interval it closes,
  its delta, and the fault rules (duplicates, rollover, reset, spike, dip, jump);
- `windows` — classified intervals -> quantity, readings and completeness per meter and
  window (15m, 1h, local 1d and 1mo), spread over windows in proportion to time;
- `energy` — per-meter kgce and kgCO2 (``meter_energy``) and per-enterprise comprehensive and
  double-control consumption (``energy``), DESIGN.md §3-§4;
- `intensity` — tce per 10k yuan against the provincial reference, ranks (``intensity``);
- `pipeline` — all of it in one call (`aggregate`), for batch and follow mode;
- `bench` — ``greenmon bench aggregate``: the same computation in Polars, DuckDB SQL and pandas.

The InfluxDB reading and writing, follow mode and the command line live in `store`, `service`
and `cli`.
"""
