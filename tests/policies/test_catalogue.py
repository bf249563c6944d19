"""The control catalogue: schema validation, seed references, and consistency with the repo's checks."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy

from policies.catalogue import (
    CATALOGUE_PATH,
    LAYERS,
    REPO_ROOT,
    CatalogueError,
    SeedQuote,
    check_consistency,
    discover_checks,
    discover_marked_tests,
    drills_in,
    load_catalogue,
    main,
    parse_catalogue,
    policies_in,
)

# The catalogue's first controls, in this order; later ones are appended after them.
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

# The seed documents sit outside the repo, in ../shared/seeds relative to its root.
SEEDS = REPO_ROOT.parent / "shared" / "seeds"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CATALOGUE_PATH.read_text(encoding="utf-8"))


def test_catalogue_starts_with_the_shared_ids_and_is_in_three_languages():
    cat = load_catalogue()
    assert [c.id for c in cat.controls][: len(SHARED_IDS)] == SHARED_IDS
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
        (lambda d: d["controls"][0]["sources"][0].pop("note"), "controls[0].sources[0].note: Field required"),
        # An act cited with neither a quote nor `quoted: false`.
        (lambda d: d["controls"][0]["sources"][0].pop("seed"), "SC-NET-01: KZ-RES-832 is cited without a quote"),
        (lambda d: d["controls"][0]["sources"][0].update(quoted=False), "remove `quoted: false`"),
        (lambda d: d["controls"][0]["sources"][0].update(quoted=True), "controls[0].sources[0].quoted"),
        # Resolution 269 is seed 004: a quote of it from another document is a misattribution.
        (lambda d: d["controls"][0]["sources"][1]["seed"].update(doc="001"), "cannot come from document 001"),
        (lambda d: d["controls"][0]["sources"].append({"ref": "CIS-K8S", "note": "x", "quoted": False}),
         "CIS-K8S is external to the seeds"),
        (lambda d: d["controls"][0]["sources"].append({"ref": "SEED-001", "note": "x"}),
         "SEED-001 is a seed document: quote its line"),
        (lambda d: d["sources"]["KZ-RES-832"].pop("named"), "sources.KZ-RES-832.named: an act needs `named"),
        (lambda d: d["sources"]["CIS-K8S"].update(kind="law"), "sources.CIS-K8S.kind"),
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


def seed_quotes(cat) -> list[tuple[str, SeedQuote]]:
    """(where, quote) of every seed line the catalogue quotes: control sources and the lines naming the acts."""
    out = [(f"{c.id} {s.ref}", s.seed) for c in cat.controls for s in c.sources if s.seed]
    return out + [(f"sources.{ref}.named", src.named) for ref, src in cat.sources.items() if src.named]


def seed_line(quote: SeedQuote) -> str:
    [doc] = SEEDS.glob(f"{quote.doc}_*.txt")
    lines = doc.read_text(encoding="utf-8").splitlines()
    return lines[quote.line - 1] if quote.line <= len(lines) else ""


def misplaced(quotes: list[tuple[str, SeedQuote]]) -> list[str]:
    return [f"{where}: {q.term!r} is not on {q.doc}:{q.line}" for where, q in quotes
            if q.term.lower() not in seed_line(q).lower()]


@pytest.fixture
def quotes() -> list[tuple[str, SeedQuote]]:
    if not SEEDS.is_dir():
        pytest.skip(f"the seed documents are not beside the repo ({SEEDS} is absent): nothing to check against")
    return seed_quotes(load_catalogue())


def test_seed_quotes_stand_on_exactly_the_cited_line(quotes):
    assert len(quotes) >= 15
    assert misplaced(quotes) == []


def test_a_quote_one_line_off_is_caught(quotes):
    # Every quote moved to the line before or after is reported: the check reads the cited line, no window.
    for delta in (-1, 1):
        moved = [(where, q.model_copy(update={"line": q.line + delta})) for where, q in quotes]
        assert len(misplaced(moved)) == len(moved)


def test_unquoted_acts_say_so_in_their_note():
    cat = load_catalogue()
    for c in cat.controls:
        for s in c.sources:
            if s.quoted is False:
                assert s.note.startswith("act named in the sources; no provision on "), f"{c.id} {s.ref}: {s.note}"


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
    assert len(res.covered) + len(res.uncovered) == len(cat.controls)


def test_main_prints_the_control_by_layer_matrix_of_the_catalogue():
    r = subprocess.run([sys.executable, "-m", "policies.catalogue"], cwd=REPO_ROOT, capture_output=True, text=True,
                       timeout=300)
    cat = load_catalogue()
    # The exit code is the consistency verdict's, with or without the matrix.
    res = check_consistency(cat, discover_checks(REPO_ROOT))
    assert r.returncode == (1 if res.missing or res.unknown_ids or res.unlisted else 0), r.stderr
    lines = r.stdout.splitlines()
    header = re.split(r"\s{2,}", lines[0])
    assert header == ["control", "title", *LAYERS, "total"]
    rows = [re.split(r"\s{2,}", line) for line in lines if re.match(r"SC-[A-Z0-9]+-\d{2} ", line)]
    assert [row[0] for row in rows] == [c.id for c in cat.controls]
    for c, row in zip(cat.controls, rows, strict=True):
        assert len(row) == len(header), row
        built = [int(cell.split()[0]) if cell[0].isdigit() else 0 for cell in row[2:]]
        assert built == [c.checks.count(layer) for layer in LAYERS] + [c.checks.count()], c.id
        planned = [int(m.group(1)) if (m := re.search(r"\+(\d+)p", cell)) else 0 for cell in row[2:]]
        assert planned == [c.planned.count(layer) for layer in LAYERS] + [c.planned.count()], c.id
    total = next(re.split(r"\s{2,}", line) for line in lines if line.startswith("total "))
    assert total[1] == f"{len(cat.controls)} controls"
    assert res.summary() in lines


def test_main_exits_2_on_an_invalid_catalogue(tmp_path, raw, capsys):
    data = copy.deepcopy(raw)
    data["controls"][0]["sources"][0].pop("note")
    bad = tmp_path / "controls.yaml"
    bad.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert main(["--catalogue", str(bad)]) == 2
    assert "controls[0].sources[0].note: Field required" in capsys.readouterr().err


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
