"""The verdict and its pictures: the invariant's check, the end state's audit, reading the
logs back, and one message's trace."""
