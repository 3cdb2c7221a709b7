"""Pure parsers: bytes in, facts out. No mitmproxy imports; tested with plain bytes."""
