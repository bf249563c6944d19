"""The Playbook dynamic provider for real: ansible-playbook against this machine (connection local)."""

import stat
import sys

import pytest

from infra.providers import PlaybookProvider, playbook_fingerprint


@pytest.fixture
def book(tmp_path):
    """playbooks/demo.yml with a role that installs a controller-side file, like cluster.yml installs PKI."""
    root = tmp_path / "playbooks"
    (root / "roles" / "demo" / "tasks").mkdir(parents=True)
    (root / "roles" / "other" / "tasks").mkdir(parents=True)
    (root / "roles" / "demo" / "tasks" / "main.yml").write_text(
        "- name: Install the secret\n"
        "  ansible.builtin.copy:\n"
        "    src: \"{{ files_dir }}/site/pki/secret.key\"\n"
        "    dest: \"{{ dest }}\"\n"
        "    mode: \"0600\"\n"
        "- name: Ports are integers\n"
        "  ansible.builtin.assert:\n"
        "    that: port | string == '6443'\n"
        "- name: Fail when told to\n"
        "  ansible.builtin.fail:\n"
        "    msg: \"told to fail: {{ reason }}\"\n"
        "  when: reason is defined\n")
    (root / "roles" / "other" / "tasks" / "main.yml").write_text("- ansible.builtin.ping:\n")
    (root / "demo.yml").write_text("- hosts: nodes\n  gather_facts: false\n  roles: [demo]\n")
    return root / "demo.yml"


def props(tmp_path, book, **extra_vars) -> dict:
    files_dir = tmp_path / "state"
    return {
        "name": "demo", "playbook": str(book), "fingerprint": playbook_fingerprint(str(book)),
        "inventory": {"all": {"children": {"nodes": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}},
        "limit": "nodes", "files_dir": str(files_dir), "timeout_s": 120,
        # Numbers arrive from the engine as doubles; the provider hands integral ones to Ansible as ints.
        "extra_vars": {"files_dir": str(files_dir), "dest": str(tmp_path / "installed.key"), "port": 6443.0,
                       **extra_vars},
        "files": {"site/pki/secret.key": "s3cret\n"},
    }


@pytest.mark.tools
def test_run_writes_files_privately_installs_them_and_is_idempotent(tmp_path, book):
    provider = PlaybookProvider()
    first = provider.create(props(tmp_path, book)).outs
    assert first["recap"]["localhost"]["changed"] == 1 and first["recap"]["localhost"]["failed"] == 0
    assert first["changes"] == {"localhost": ["demo : Install the secret"]}  # names what changed
    written = tmp_path / "state" / "site" / "pki" / "secret.key"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert (tmp_path / "installed.key").read_text() == "s3cret\n"
    second = provider.update("id", first, props(tmp_path, book)).outs
    assert second["recap"]["localhost"]["changed"] == 0 and second["changes"] == {}


@pytest.mark.tools
def test_a_failed_task_fails_the_resource_with_its_message(tmp_path, book):
    with pytest.raises(RuntimeError, match="told to fail: disk full") as exc:
        PlaybookProvider().create(props(tmp_path, book, reason="disk full"))
    assert "demo.yml --limit nodes" in str(exc.value)


def test_fingerprint_follows_the_playbook_and_its_roles_only(tmp_path, book):
    before = playbook_fingerprint(str(book))
    (book.parent / "roles" / "other" / "tasks" / "main.yml").write_text("- ansible.builtin.debug:\n")
    assert playbook_fingerprint(str(book)) == before  # a role the playbook does not use
    (book.parent / "roles" / "demo" / "defaults").mkdir()
    (book.parent / "roles" / "demo" / "defaults" / "main.yml").write_text("dest: /tmp/x\n")
    assert playbook_fingerprint(str(book)) != before


def test_fingerprint_follows_a_role_the_tasks_include(tmp_path, book):
    tasks_book = book.parent / "tasks.yml"
    tasks_book.write_text("- hosts: all\n  tasks:\n    - ansible.builtin.include_role:\n        name: other\n")
    before = playbook_fingerprint(str(tasks_book))
    (book.parent / "roles" / "other" / "tasks" / "main.yml").write_text("- ansible.builtin.debug: {msg: x}\n")
    assert playbook_fingerprint(str(tasks_book)) != before


def test_fingerprint_follows_the_controller_files_the_playbook_copies(tmp_path, book):
    debs, binary = tmp_path / "debs", tmp_path / "kubelet"
    debs.mkdir()
    (debs / "a.deb").write_bytes(b"one")
    binary.write_bytes(b"v1")
    before = playbook_fingerprint(str(book), [str(debs), str(binary)])
    assert playbook_fingerprint(str(book), [str(binary), str(debs)]) == before  # order does not matter
    (debs / "__pycache__").mkdir()
    (debs / "__pycache__" / "x.pyc").write_bytes(b"cache")  # byte-code caches are not inputs
    assert playbook_fingerprint(str(book), [str(debs), str(binary)]) == before
    binary.write_bytes(b"v2")  # a rebuilt binary
    rebuilt = playbook_fingerprint(str(book), [str(debs), str(binary)])
    (debs / "b.deb").write_bytes(b"two")  # a new package
    added = playbook_fingerprint(str(book), [str(debs), str(binary)])
    binary.unlink()  # a source that is missing (yet) is an input too: the run after it appears differs
    assert len({before, rebuilt, added, playbook_fingerprint(str(book), [str(debs), str(binary)])}) == 4


def test_diff_reruns_on_any_input_and_check_names_bad_fields(tmp_path, book):
    provider = PlaybookProvider()
    old = props(tmp_path, book)
    assert not provider.diff("id", old, props(tmp_path, book)).changes
    rotated = {**old, "files": {"site/pki/secret.key": "rotated\n"}}
    assert provider.diff("id", old, rotated).changes  # a re-issued certificate reaches the nodes
    assert provider.diff("id", {**old, "triggers": [1.5]}, {**old, "triggers": [2.0]}).changes  # a step before ran
    failures = provider.check({}, {**old, "playbook": str(tmp_path / "missing.yml"), "files_dir": "rel"}).failures
    assert {f.property for f in failures} == {"playbook", "files_dir"}


@pytest.mark.tools
def test_a_run_does_not_depend_on_the_order_the_inventory_arrives_in(tmp_path):
    """The engine hands maps over in no fixed key order; a group's host order (etcd's member list) must not
    follow it, or a re-run rewrites and restarts everything that lists members."""
    book = tmp_path / "order.yml"
    book.write_text("- hosts: nodes\n  gather_facts: false\n  tasks:\n"
                    "    - ansible.builtin.copy:\n"
                    "        content: \"{{ groups['nodes'] | join(' ') }}\"\n"
                    "        dest: \"{{ dest }}\"\n"
                    "      run_once: true\n")
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    dest = tmp_path / "order.txt"

    def run(hosts: list[str]) -> dict:
        return PlaybookProvider().create({
            "name": "order", "playbook": str(book), "fingerprint": "-", "limit": "nodes", "timeout_s": 120,
            "inventory": {"all": {"children": {"nodes": {"hosts": {h: local for h in hosts}}}}},
            "files_dir": str(tmp_path / "state"), "extra_vars": {"dest": str(dest)}}).outs

    assert run(["node-b", "node-a", "node-c"])["changes"]
    assert dest.read_text() == "node-a node-b node-c"
    assert run(["node-c", "node-a", "node-b"])["changes"] == {}
