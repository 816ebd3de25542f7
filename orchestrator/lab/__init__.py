"""Experiments on fresh clusters: chaos campaigns (real and simulated), the KB's scenario and
its family, the timing-space search, the bench."""
