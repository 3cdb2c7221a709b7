"""The REST API under `/api/v2/aibridge/` and `/api/v2/ai-gateway/` (contract §4.3), served from its own thread."""
