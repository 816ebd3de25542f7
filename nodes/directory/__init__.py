"""The directory node."""
