"""The move orchestrator node and the xcon command line."""
