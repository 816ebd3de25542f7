"""xcon nodes: each a pure core (core.py) and a thin ZeroMQ runtime (__main__.py)."""
