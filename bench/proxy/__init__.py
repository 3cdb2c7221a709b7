"""The proxy benchmark (entry point: bench/proxy_bench.py), one module per part: workload, standin, loadgen,
orchestrator, report, measure; mitm_min runs the embedded-mitmproxy baseline."""
