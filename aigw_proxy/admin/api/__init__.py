"""The REST API under `/api/v2/aibridge/` and `/api/v2/ai-gateway/` (docs/compatibility.md#rest-api), served from
its own thread."""
