"""The web console: server-rendered pages on the admin listener, mounted at `/console/` (see app.py)."""
