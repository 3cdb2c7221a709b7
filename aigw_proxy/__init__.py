"""aigw-proxy: a MITM forward proxy that records AI coding-agent traffic."""
__version__ = "0.1.0"
