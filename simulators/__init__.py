"""Simulators: a seeded fleet of Nantong factories, gateways publishing over MQTT, ground truth.

Modules, one job each (data flows top to bottom):

- `params` — the packaged parameter tables (``data/*.csv``: industries, counties, shift
  patterns, holidays, climate, meter types, constants), each row with source/year/status;
- `profiles` — deterministic load shapes: calendar and holidays, shift patterns, seasons, sun;
- `fleet` — the fleet generator and its registry directory (`generate_fleet`, `write_fleet`,
  `load_fleet`);
- `world` — true consumption and true readings of every meter over a run (`simulate_world`);
- `faults` — the fault vocabulary, ``--faults`` parsing and reading-level fault placement;
- `messages` — the exact MQTT messages (vectorised, byte-identical to the ingest codec),
  message-level faults and malformed extras (`build_messages`);
- `truth` — the ground-truth Parquet tables; `outfile` — messages as JSON lines;
- `gateways` — the publisher (one paho client per gateway on an asyncio loop, QoS 1), and
  `mqtt` — its paho client with a fast path for PUBACKs;
- `runner` — one run end to end; `bench` — rates; `cli` — ``greenmon simulate`` and
  ``greenmon bench simulate``; `errors` — `SimulatorError` and its subclasses.

See ``simulators/README.md`` for the commands, the fault semantics and the truth schema.
"""
