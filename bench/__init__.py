"""`make bench` / `python -m bench`: the gateway against its upstream called directly, on loopback."""


class BenchError(Exception):
    """A setup problem reported as one plain line (missing tool, failed start, wrong answer)."""
