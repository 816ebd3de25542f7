"""The store node (Information Store of one server)."""
