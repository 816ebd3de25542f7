"""`xcon serve`: a local web app over a run-dir (orchestrator.serve.app), its pages rendered on the
server from Jinja2 templates (pages), from what the other tools read (data)."""
