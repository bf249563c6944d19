"""Exporters proving availability, backup freshness, restore drills, certificate expiry and transport links.

Run one with `python -m monitoring.exporters <name> --config FILE --listen 127.0.0.1:PORT`.
"""
