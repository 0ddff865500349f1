"""Serving: a stream of requests on the simulated chip (iterations costed by the engine, schedulers, a
paged KV cache, per-request metrics)."""
