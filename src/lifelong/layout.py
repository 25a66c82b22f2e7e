"""File names that a writer and a reader in different layers must agree on: `bench` writes a grid's manifest and
`report` reads it, so the name lives below both rather than in either."""

BENCH_MANIFEST = "bench.json"  # DIR/bench.json: the command and the cells of the last bench grid, in order
