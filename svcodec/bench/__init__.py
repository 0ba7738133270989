"""Benchmark tooling for svcodec: RGB metrics, classical anchors (x265/x264 via PyAV),
BD-rate, reports, and the `svc bench` driver (`svcodec.bench.run.bench_command`).

Kept import-light: submodules pull in PyAV, scipy or matplotlib only when used."""
