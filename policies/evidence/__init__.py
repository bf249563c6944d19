"""Signed compliance evidence: check results per control as evidence.json + report.html.

`python -m policies.evidence build|verify --help`.
"""
