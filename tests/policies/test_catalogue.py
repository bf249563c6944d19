"""The control catalogue: schema validation, seed references, and consistency with the repo's checks."""

from __future__ import annotations

import copy
import types
from pathlib import Path

import pytest
import yaml
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy

from policies.catalogue import (
    CATALOGUE_PATH,
    REPO_ROOT,
    CatalogueError,
    check_consistency,
    discover_checks,
    discover_marked_tests,
    drills_in,
    load_catalogue,
    parse_catalogue,
    policies_in,
)

# The shared control list (common brief): the catalogue holds exactly these ids.
SHARED_IDS = [
    "SC-NET-01",
    "SC-NET-02",
    "SC-NET-03",
    "SC-DATA-01",
    "SC-DATA-02",
    "SC-AVL-01",
    "SC-AVL-02",
    "SC-BCK-01",
    "SC-BCK-02",
    "SC-CRY-01",
    "SC-CRY-02",
    "SC-LOG-01",
    "SC-LOG-02",
    "SC-HST-01",
    "SC-HST-02",
    "SC-HST-03",
    "SC-HST-04",
    "SC-HST-05",
    "SC-HST-06",
    "SC-HST-07",
    "SC-HST-08",
    "SC-HST-09",
    "SC-K8S-01",
    "SC-K8S-02",
    "SC-K8S-03",
    "SC-K8S-04",
    "SC-MON-01",
]

SEEDS = REPO_ROOT.parent / "shared" / "seeds"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CATALOGUE_PATH.read_text(encoding="utf-8"))


def test_catalogue_holds_exactly_the_shared_ids_in_three_languages():
    cat = load_catalogue()
    assert [c.id for c in cat.controls] == SHARED_IDS
    for c in cat.controls:
        for text in (c.title, c.statement):
            assert text.kk and text.ru and text.en
            # Kazakh and Russian texts are really Cyrillic, not copies of the English one.
            assert text.kk != text.en and any("\u0400" <= ch <= "\u04ff" for ch in text.kk + text.ru)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["controls"][0]["title"].pop("kk"), "controls[0].title.kk: Field required (every text"),
        (lambda d: d["controls"][1].update(id="SC-NET-1"), "controls[1].id"),
        (lambda d: d["controls"][2].update(id=d["controls"][0]["id"]), "duplicate control id SC-NET-01"),
        (lambda d: d["controls"][0]["sources"][0].update(ref="NOPE"), "source ref 'NOPE' is not defined"),
        (lambda d: d["controls"][0]["checks"].update(grafana=["x"]), "controls[0].checks.grafana"),
        (lambda d: d["controls"][0]["statement"].update(ru="  "), "controls[0].statement.ru"),
    ],
)
def test_invalid_catalogue_names_the_field(raw, mutate, expected):
    data = copy.deepcopy(raw)
    mutate(data)
    with pytest.raises(CatalogueError) as err:
        parse_catalogue(data, "controls.yaml")
    assert expected in str(err.value)


def test_check_listed_as_both_built_and_planned_is_rejected(raw):
    data = copy.deepcopy(raw)
    data["controls"][0]["checks"] = {"alert": ["X"]}
    data["controls"][0]["planned"] = {"alert": ["X"]}
    with pytest.raises(CatalogueError, match="both under `checks` and `planned`"):
        parse_catalogue(data)


def test_seed_references_point_at_the_quoted_kazakh_term():
    if not SEEDS.is_dir():
        pytest.fail(f"seed documents not found at {SEEDS} (shared/ must sit beside the repo)")
    refs = [(c.id, s.seed) for c in load_catalogue().controls for s in c.sources if s.seed]
    assert len(refs) >= 15
    for cid, seed in refs:
        [doc] = SEEDS.glob(f"{seed.doc}_*.txt")
        lines = doc.read_text(encoding="utf-8").splitlines()
        window = " ".join(lines[max(0, seed.line - 15) : seed.line + 15]).lower()
        assert seed.term.lower() in window, f"{cid}: {seed.term!r} not near {doc.name}:{seed.line}"


def test_catalogue_matches_the_checks_in_the_repo(capsys):
    """Every named check exists and is tagged; every tagged check in the repo is named; coverage printed."""
    cat = load_catalogue()
    res = check_consistency(cat, discover_checks(REPO_ROOT))
    with capsys.disabled():
        print(f"\n{res.summary()}")
    assert res.missing == [], "catalogue names checks the repo does not have"
    assert res.unknown_ids == [], "repo checks tag ids the catalogue does not define"
    assert res.unlisted == [], "repo checks missing from the catalogue's `checks`"
    for c in cat.controls:
        # Not built yet is allowed, unproven by design is not: each control has a real or planned check.
        assert c.checks.count() + c.planned.count() > 0, f"{c.id} has no check at all"
    assert len(res.covered) + len(res.uncovered) == len(SHARED_IDS)


# --- discovery on a synthetic repo ----------------------------------------------------------------


def _fake_repo(tmp_path: Path) -> Path:
    rules = tmp_path / "monitoring" / "prometheus" / "rules"
    rules.mkdir(parents=True)
    (rules / "backup.yml").write_text(
        "groups:\n- name: b\n  rules:\n"
        "  - alert: BackupTooOld\n    expr: vector(1)\n    labels: {controls: 'SC-BCK-01,SC-DATA-01'}\n"
        "  - record: job:x\n    expr: vector(1)\n"
    )
    audit = tmp_path / "tests" / "audit"
    audit.mkdir(parents=True)
    (audit / "test_ssh.py").write_text(
        "import pytest\n"
        "pytestmark = [pytest.mark.lab]\n"
        "@pytest.mark.control('SC-HST-01')\n"
        "def test_keys_only(host):\n    pass\n"
        "def test_untagged(host):\n    pass\n"
        "@pytest.mark.control('SC-HST-09', 'SC-HST-02')\n"
        "class TestFiles:\n"
        "    @pytest.mark.parametrize('p', ['/etc/passwd'])\n"
        "    def test_mode(self, host, p):\n        pass\n"
    )
    (audit / "test_k8s.py").write_text(
        "from pytest import mark\npytestmark = mark.control('SC-K8S-04')\ndef test_anon(host):\n    pass\n"
    )
    return tmp_path


def test_discovery_reads_rule_labels_and_test_markers(tmp_path):
    found = discover_checks(_fake_repo(tmp_path))
    assert {k: v.controls for k, v in found["alert"].items()} == {"BackupTooOld": {"SC-BCK-01", "SC-DATA-01"}}
    assert {k: v.controls for k, v in found["audit"].items()} == {
        "tests/audit/test_ssh.py::test_keys_only": {"SC-HST-01"},
        "tests/audit/test_ssh.py::TestFiles::test_mode": {"SC-HST-09", "SC-HST-02"},
        "tests/audit/test_k8s.py::test_anon": {"SC-K8S-04"},
    }
    # Layers not built in this repo are empty, not errors.
    assert found["chart"] == {} and found["pulumi_policy"] == {} and found["drill"] == {}


def test_discovery_reads_policy_pack_objects_and_drill_tables():
    mod = types.ModuleType("fake_pack")
    mod.POLICIES = [
        ResourceValidationPolicy(
            name="no-public-ip",
            description="SC-NET-01: no public addresses",
            validate=lambda args, report: None,
            enforcement_level=EnforcementLevel.MANDATORY,
        )
    ]
    assert list(policies_in(mod)) == [("no-public-ip", ["SC-NET-01"])]
    mod.DRILL_CHECKS = {"restore-drill": ["SC-BCK-02"], "rpo": "SC-BCK-01 SC-BCK-02"}
    assert list(drills_in(mod)) == [("restore-drill", ["SC-BCK-02"]), ("rpo", ["SC-BCK-01", "SC-BCK-02"])]


def test_consistency_fails_when_a_named_check_is_removed_or_mistagged(tmp_path, raw):
    repo = _fake_repo(tmp_path)
    data = copy.deepcopy(raw)
    by_id = {c["id"]: c for c in data["controls"]}
    for c in by_id.values():
        c["checks"], c["planned"] = {}, {}
    by_id["SC-BCK-01"]["checks"] = {"alert": ["BackupTooOld"]}
    by_id["SC-DATA-01"]["checks"] = {"alert": ["BackupTooOld"]}
    by_id["SC-HST-01"]["checks"] = {"audit": ["tests/audit/test_ssh.py::test_keys_only"]}
    by_id["SC-HST-02"]["checks"] = {"audit": ["tests/audit/test_ssh.py::TestFiles::test_mode"]}
    by_id["SC-HST-09"]["checks"] = {"audit": ["tests/audit/test_ssh.py::TestFiles::test_mode"]}
    by_id["SC-K8S-04"]["checks"] = {"audit": ["tests/audit/test_k8s.py::test_anon"]}
    cat = parse_catalogue(data)
    res = check_consistency(cat, discover_checks(repo))
    assert (res.missing, res.unknown_ids, res.unlisted) == ([], [], [])
    assert sorted(res.covered) == [
        "SC-BCK-01",
        "SC-DATA-01",
        "SC-HST-01",
        "SC-HST-02",
        "SC-HST-09",
        "SC-K8S-04",
    ]

    # The check disappears from the code: the catalogue now names a missing check.
    (repo / "tests/audit/test_k8s.py").unlink()
    res = check_consistency(cat, discover_checks(repo))
    assert res.missing == [
        "SC-K8S-04: audit check 'tests/audit/test_k8s.py::test_anon' not found in the repo"
    ]

    # A test tags an id the catalogue lacks, and one the catalogue does not list under that check.
    (repo / "tests/audit/test_new.py").write_text(
        "import pytest\n@pytest.mark.control('SC-NET-09')\ndef test_a():\n    pass\n"
        "@pytest.mark.control('SC-NET-02')\ndef test_b():\n    pass\n"
    )
    found = discover_marked_tests(repo, "tests/audit", "audit")
    res = check_consistency(cat, {**discover_checks(repo), "audit": found})
    assert any("SC-NET-09" in u for u in res.unknown_ids)
    assert any(u.startswith("SC-NET-02: audit check 'tests/audit/test_new.py::test_b'") for u in res.unlisted)
