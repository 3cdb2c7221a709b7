"""Raw capture (`--capture-bodies`, off by default): each model call's request and response bodies as relayed,
kept for inspection beside its record.

- `raw`: what the proxy's event loop collects while a call runs (bounded buffers, no copies of the relay);
- `build`: what the record writer makes of it on its own thread (credential headers removed, secrets redacted,
  bodies cut to `--capture-max-bytes` and compressed with zstd), and reading it back.
"""
