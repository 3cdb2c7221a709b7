"""Secrets and size limits for what the proxy records: the redaction engine (`engine`) and its application to
record events before they are stored, logged, traced or exported (`records`)."""
