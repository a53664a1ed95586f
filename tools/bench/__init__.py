"""`nightlink bench NAME --json`: speed and memory figures, one module per tier (`api`, `cloud`,
`edge`, `report`, `clock`), the registry in `cli.py`; `backlog.py` fills an edge store with
days of unsent nights for the sync benchmarks and tests."""
