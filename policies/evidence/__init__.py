"""Signed compliance evidence: check results per control as evidence.json + report.html, and the run's OSCAL
documents (oscal/).

`python -m policies.evidence build|verify --help`.
"""
