"""``mqm loadtest``: requests generated from a model's contract and reference set, sent to
a serving endpoint at a target rate, with the answers, latencies and the serving process's
CPU and memory measured (``generate``, ``drive``, ``procstat``, ``results``)."""

__all__: list[str] = []
