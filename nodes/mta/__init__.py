"""The MTA node of one server."""
