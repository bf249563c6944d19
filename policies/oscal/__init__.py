"""The control catalogue and its evidence in OSCAL, the format compliance teams' GRC tools import.

- `catalog.py`: policies/controls.yaml as an OSCAL catalog (one group per control family) and back, and the
  sovcloud baseline as a profile importing every control of it;
- `components.py`: each Ansible role, Helm chart and the Pulumi policy pack as a component of one component
  definition, listing the controls it implements and how;
- `assessment.py`: an evidence run (policies/evidence) as assessment results: one observation per check result,
  one finding per control, satisfied or not;
- `documents.py`: writes them and validates them with compliance-trestle (its OSCAL models, its validators and
  its profile resolver), and checks every control id they name is in the catalog.

`python -m policies.oscal --out DIR [--results DIR_OR_FILE --stack NAME]` writes and validates the documents;
`python -m policies.evidence build` puts them in the signed bundle.
"""
