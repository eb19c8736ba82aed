"""Real parts for tests and benchmarks: moto server and the extension as processes, on loopback."""
