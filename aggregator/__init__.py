"""Aggregator stage: registers -> consumption -> standard coal, carbon and intensity.

The pure computation, one job per module, LazyFrames in and out:

- `reference` — coefficient, emission-factor and intensity reference tables (packaged, with
  the user's overrides), and which row applies to a meter or enterprise in a given year;
- `consumption` — readings -> one classified row per distinct reading: the interval it closes,
  its delta, and the fault rules (duplicates, rollover, reset, spike, dip, jump);
- `windows` — classified intervals -> quantity, readings and completeness per meter and
  window (15m, 1h, local 1d and 1mo), spread over windows in proportion to time, and
  `roll_up` (coarser windows summed from finer ones);
- `energy` — per-meter kgce and kgCO2 (``meter_energy``) and per-enterprise comprehensive and
  double-control consumption (``energy``), DESIGN.md §3-§4;
- `intensity` — tce per 10k yuan against the provincial reference, ranks (``intensity``);
- `pipeline` — all of it in one call (`aggregate`), for a range;
- `bench` — ``greenmon bench aggregate``: the same computation in Polars, DuckDB SQL and pandas.

The InfluxDB reading and writing live in `store`; batch ranges in groups of enterprises in
`service` (with `chunks`, which sizes the groups); follow mode in `follow`; the command line in
`cli`; ``greenmon bench aggregate --source influx`` in `bench_influx`.
"""
