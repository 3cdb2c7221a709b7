"""mitmproxy addons the benchmarks load into the proxies they compare aigw-proxy with."""
