"""The ``mqm serve`` process: scheduler, leadership, HTTP API and Prometheus metrics."""
