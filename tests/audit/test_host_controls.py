"""Host baseline audit: one check per control facet, named and marked by its control ID.

Checks read the LIVE state (sshd -T, nft, sysctl, systemctl) as well as the configuration, so a
control the playbook could only write to disk (e.g. sysctls in a container) fails here honestly.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

STRONG_CIPHERS = {"chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com",
                  "aes256-ctr", "aes192-ctr", "aes128-ctr"}
STRONG_KEX = {"sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org",
              "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512"}
STRONG_MACS = {"hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "umac-128-etm@openssh.com"}
SYSCTLS = {
    "kernel.kptr_restrict": "2", "kernel.dmesg_restrict": "1", "kernel.randomize_va_space": "2",
    "fs.protected_hardlinks": "1", "fs.protected_symlinks": "1", "fs.suid_dumpable": "0",
    "net.ipv4.conf.all.accept_redirects": "0", "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.all.accept_source_route": "0", "net.ipv4.conf.all.rp_filter": "1",
    "net.ipv4.conf.all.log_martians": "1", "net.ipv4.tcp_syncookies": "1",
    "net.ipv4.icmp_echo_ignore_broadcasts": "1",
}
# Below the NodePort range; 10250 (kubelet) is allowed on any Kubernetes node, the rest must match exactly.
ROLE_TCP = {"control_plane": {22, 6443, 2379, 2380}, "worker": {22, 10250},
            "gateway": {22, 80, 443, 6443, 8081, 8888}}
# Monitoring (SC-MON-01), mutual TLS: every node's exporter, the gateway's transport exporter, and on the site's
# monitoring station (inventory var site_monitoring_station) Prometheus, Alertmanager and its cluster gossip.
MONITORING_TCP = {"every": {9100}, "gateway": {9474}, "station": {9090, 9093, 9094}}
# A stack-deployed site's cluster DNS asks its gateway's allow-list resolver (from the pod network).
CLUSTER_DNS = {"gateway": 53}
# The tunnels' UDP is the transport table's to admit (tests/audit/test_network_controls.py), not this one's.
ROLE_UDP = {"control_plane": set(), "worker": set(), "gateway": set()}
BLACKLIST = ["cramfs", "freevxfs", "jffs2", "hfs", "hfsplus", "udf", "usb-storage", "dccp", "sctp", "rds",
             "tipc"]
NEEDLESS = ["telnet", "inetutils-telnet", "rsh-client", "nis", "xinetd", "tftp", "avahi-daemon", "cups",
            "rpcbind"]


def sshd_config(host) -> dict[str, str]:
    out = host.check_output("sshd -T 2>/dev/null")
    return {k: v for k, _, v in (line.partition(" ") for line in out.splitlines())}


def run(host, cmd: str, evidence: list[str]):
    r = host.run(cmd)
    evidence.append(f"$ {cmd} -> rc={r.rc}\n{(r.stdout + r.stderr).strip()[:1500]}")
    return r


# --- SC-HST-01 SSH ---------------------------------------------------------------------------------

@pytest.mark.control("SC-HST-01")
def test_SC_HST_01_ssh_keys_only(host, evidence):
    cfg = sshd_config(host)
    want = {"passwordauthentication": "no", "kbdinteractiveauthentication": "no",
            "pubkeyauthentication": "yes", "permitemptypasswords": "no", "authenticationmethods": "publickey"}
    got = {k: cfg.get(k) for k in want}
    evidence.append(f"sshd -T: {got}")
    assert got == want


@pytest.mark.control("SC-HST-01")
def test_SC_HST_01_no_root_login(host, evidence):
    cfg = sshd_config(host)
    root = host.check_output("getent shadow root | cut -d: -f2")
    evidence.append(f"permitrootlogin={cfg.get('permitrootlogin')} root-hash-prefix={root[:2]!r}")
    assert cfg.get("permitrootlogin") == "no"
    assert root.startswith(("!", "*")), "root has a usable password"


@pytest.mark.control("SC-HST-01")
def test_SC_HST_01_modern_crypto(host, evidence):
    cfg = sshd_config(host)
    found = {k: set(cfg.get(k, "").split(",")) for k in ("ciphers", "kexalgorithms", "macs")}
    evidence.append(f"sshd -T: {({k: sorted(v) for k, v in found.items()})}")
    assert found["ciphers"] <= STRONG_CIPHERS, f"weak ciphers: {found['ciphers'] - STRONG_CIPHERS}"
    assert found["kexalgorithms"] <= STRONG_KEX, f"weak kex: {found['kexalgorithms'] - STRONG_KEX}"
    assert found["macs"] <= STRONG_MACS, f"weak macs: {found['macs'] - STRONG_MACS}"


@pytest.mark.control("SC-HST-01")
def test_SC_HST_01_no_forwarding_and_short_sessions(host, evidence):
    cfg = sshd_config(host)
    keys = ("x11forwarding", "allowtcpforwarding", "allowagentforwarding", "maxauthtries", "maxsessions")
    got = {k: cfg.get(k) for k in keys}
    evidence.append(f"sshd -T: {got}")
    assert got["x11forwarding"] == "no" and got["allowtcpforwarding"] == "no"
    assert got["allowagentforwarding"] == "no" and int(got["maxauthtries"] or 99) <= 3
    assert int(got["maxsessions"] or 99) <= 2


# --- SC-HST-02 accounts, PAM, sudo ------------------------------------------------------------------

@pytest.mark.control("SC-HST-02")
def test_SC_HST_02_password_quality(host, evidence):
    pam = run(host, "grep -E '^password.*pam_pwquality.so' /etc/pam.d/common-password", evidence)
    conf = host.file("/etc/security/pwquality.conf")
    m = re.search(r"^\s*minlen\s*=\s*(\d+)", conf.content_string if conf.exists else "", re.M)
    evidence.append(f"pwquality minlen={m.group(1) if m else None}")
    assert pam.rc == 0, "pam_pwquality not in common-password"
    assert m and int(m.group(1)) >= 14


@pytest.mark.control("SC-HST-02")
def test_SC_HST_02_faillock(host, evidence):
    pam = run(host, "grep -cE '^auth.*pam_faillock.so' /etc/pam.d/common-auth", evidence)
    conf = host.file("/etc/security/faillock.conf")
    m = re.search(r"^\s*deny\s*=\s*(\d+)", conf.content_string if conf.exists else "", re.M)
    evidence.append(f"faillock deny={m.group(1) if m else None}")
    assert pam.rc == 0 and int(pam.stdout.strip() or 0) >= 2, "pam_faillock preauth/authfail missing"
    assert m and 0 < int(m.group(1)) <= 5


@pytest.mark.control("SC-HST-02")
def test_SC_HST_02_password_aging(host, evidence):
    defs = host.file("/etc/login.defs").content_string
    m = re.search(r"^PASS_MAX_DAYS\s+(\d+)", defs, re.M)
    evidence.append(f"PASS_MAX_DAYS={m.group(1) if m else None}")
    assert m and int(m.group(1)) <= 90


@pytest.mark.control("SC-HST-02")
def test_SC_HST_02_no_empty_passwords(host, evidence):
    empty = host.check_output("awk -F: '($2 == \"\") {print $1}' /etc/shadow")
    evidence.append(f"accounts with empty password: {empty.split() or 'none'}")
    assert empty.strip() == ""


@pytest.mark.control("SC-HST-02")
def test_SC_HST_02_private_tmp_and_idle_timeout(host, evidence):
    pam = run(host, "grep -E '^session.*pam_tmpdir.so' /etc/pam.d/common-session", evidence)
    profile = run(host, "cat /etc/profile.d/*.sh", evidence).stdout
    assert pam.rc == 0, "pam_tmpdir not in common-session (shared /tmp for every user)"
    m = re.search(r"^\s*TMOUT=(\d+)", profile, re.M)
    assert m and 0 < int(m.group(1)) <= 900 and re.search(r"^\s*readonly TMOUT", profile, re.M), "no idle timeout"


@pytest.mark.control("SC-HST-02")
def test_SC_HST_02_sudo_logging(host, evidence):
    r = run(host, "grep -rhE '^Defaults.*(logfile|use_pty)' /etc/sudoers /etc/sudoers.d", evidence)
    assert "logfile" in r.stdout and "use_pty" in r.stdout
    assert run(host, "visudo -c", evidence).rc == 0


# --- SC-HST-03 sysctl ---------------------------------------------------------------------------------

@pytest.mark.control("SC-HST-03")
def test_SC_HST_03_sysctl_persisted(host, evidence):
    conf = run(host, "cat /etc/sysctl.d/*.conf 2>/dev/null", evidence).stdout
    persisted = dict(re.findall(r"^\s*([\w.-]+)\s*=\s*(\S+)", conf, re.M))
    missing = {k: v for k, v in SYSCTLS.items() if persisted.get(k) != v}
    assert not missing, f"not persisted in /etc/sysctl.d: {missing}"


@pytest.mark.control("SC-HST-03")
def test_SC_HST_03_sysctl_runtime(host, evidence):
    live = {}
    for key in SYSCTLS:
        r = host.run(f"sysctl -n {key}")
        live[key] = r.stdout.strip() if r.rc == 0 else None
    wrong = {k: (live[k], v) for k, v in SYSCTLS.items() if live[k] != v}
    evidence.append(f"live!=wanted: {wrong}")
    assert not wrong, f"running kernel differs (live, wanted): {wrong}"


@pytest.mark.control("SC-HST-03")
def test_SC_HST_03_kubernetes_forwarding_kept(host, node_role, evidence):
    # Hardening must not break Kubernetes/gateway routing: forwarding stays on where it is needed.
    live = host.run("sysctl -n net.ipv4.ip_forward").stdout.strip()
    conf = run(host, "grep -h ip_forward /etc/sysctl.d/*.conf", evidence).stdout
    evidence.append(f"role={node_role} live ip_forward={live}")
    assert "net.ipv4.ip_forward = 1" in conf or "net.ipv4.ip_forward=1" in conf
    assert live == "1"


# --- SC-HST-04 firewall -------------------------------------------------------------------------------

@pytest.mark.control("SC-HST-04")
def test_SC_HST_04_firewall_default_deny(host, evidence):
    r = run(host, "nft list table inet sovcloud_host", evidence)
    assert r.rc == 0, "host firewall table not loaded"
    assert re.search(r"hook input priority filter; policy drop;", r.stdout)
    assert host.service("sovcloud-firewall").is_enabled


@pytest.mark.control("SC-HST-04")
def test_SC_HST_04_firewall_role_ports(host, node_role, evidence):
    # A node of a stack-deployed site (its inventory names the station) serves monitoring; a node hardened
    # on its own does not.
    facts = host.ansible.get_variables() if type(host.backend).__name__ == "AnsibleBackend" else {}
    station = facts.get("site_monitoring_station")
    expected = ROLE_TCP[node_role] | (
        MONITORING_TCP["every"] | MONITORING_TCP.get(node_role, set())
        | (MONITORING_TCP["station"] if station == facts.get("inventory_hostname") else set())
        | ({CLUSTER_DNS[node_role]} if node_role in CLUSTER_DNS else set()) if station else set())
    r = host.run("nft -j list chain inet sovcloud_host input")
    assert r.rc == 0, f"input chain not readable: {r.stderr}"
    text = host.run("nft list chain inet sovcloud_host input").stdout
    evidence.append(text[:1500])
    tcp = set()
    for m in re.finditer(r"tcp dport (\{[^}]*\}|\S+)", text):
        for p in m.group(1).strip("{} ").split(","):
            p = p.strip()
            tcp.update(range(int(p.split("-")[0]), int(p.split("-")[1]) + 1) if "-" in p else
                       ({int(p)} if p.isdigit() else set()))
    missing = expected - tcp
    assert not missing, f"role {node_role}: tcp ports not open: {sorted(missing)}"
    extra = {p for p in tcp if p < 30000} - expected - {10250}
    assert not extra, f"role {node_role}: unexpected tcp ports open: {sorted(extra)}"
    for p in ROLE_UDP[node_role] | ({CLUSTER_DNS[node_role]} if station and node_role in CLUSTER_DNS else set()):
        assert re.search(rf"udp dport .*\b{p}\b", text), f"udp {p} not open"


# --- SC-HST-05 time -----------------------------------------------------------------------------------

@pytest.mark.control("SC-HST-05")
def test_SC_HST_05_chrony_running_with_sources(host, evidence):
    svc = host.service("chrony")
    conf = run(host, "grep -E '^(server|pool) ' /etc/chrony/chrony.conf", evidence)
    evidence.append(f"chrony running={svc.is_running} enabled={svc.is_enabled}")
    assert svc.is_running and svc.is_enabled
    assert conf.rc == 0 and "debian.pool.ntp.org" not in conf.stdout, "no in-country sources configured"


# --- SC-HST-06 AIDE -----------------------------------------------------------------------------------

@pytest.mark.control("SC-HST-06")
def test_SC_HST_06_aide_baseline(host, evidence):
    r = run(host, "ls -l /var/lib/aide/", evidence)
    assert host.package("aide").is_installed
    assert r.rc == 0 and re.search(r"\.db$", r.stdout, re.M), "no AIDE database"
    timer = run(host, "systemctl is-enabled sovcloud-aide-check.timer dailyaidecheck.timer", evidence)
    assert "enabled" in timer.stdout, "no scheduled AIDE check"


@pytest.mark.control("SC-HST-06")
def test_SC_HST_06_aide_check_clean(host, evidence):
    # The exit code is AIDE's own (a pipe into tail would report tail's): 1/2/4 = files added/removed/changed.
    r = run(host, "out=$(aide --check --config /etc/aide/aide.conf 2>&1); rc=$?; "
                  "printf '%s\\n' \"$out\" | tail -n 20; exit $rc", evidence)
    assert r.rc == 0, f"aide --check exit {r.rc}: files differ from the baseline (or AIDE failed)"
    assert "found differences" not in r.stdout


@pytest.mark.control("SC-HST-06")
def test_SC_HST_06_package_checksums(host, evidence):
    installed = host.package("debsums").is_installed
    evidence.append(f"debsums installed={installed}")
    assert installed, "debsums missing: package files cannot be verified against their checksums"


# --- SC-HST-07 updates --------------------------------------------------------------------------------

@pytest.mark.control("SC-HST-07")
def test_SC_HST_07_unattended_upgrades(host, evidence):
    r = run(host, "apt-config dump APT::Periodic", evidence)
    assert host.package("unattended-upgrades").is_installed
    assert 'APT::Periodic::Unattended-Upgrade "1"' in r.stdout
    assert host.service("apt-daily-upgrade.timer").is_enabled


@pytest.mark.control("SC-HST-07")
def test_SC_HST_07_outdated_services_listed(host, evidence):
    # needrestart reports services still running replaced libraries; it lists, the cluster tooling restarts.
    conf = run(host, "cat /etc/needrestart/conf.d/*.conf 2>/dev/null", evidence).stdout
    assert host.package("needrestart").is_installed and host.package("apt-listchanges").is_installed
    assert re.search(r"^\$nrconf\{restart\}\s*=\s*'l'", conf, re.M), "needrestart may restart services itself"


# --- SC-HST-08 minimal system -------------------------------------------------------------------------

@pytest.mark.control("SC-HST-08")
def test_SC_HST_08_modules_blacklisted(host, evidence):
    conf = run(host, "cat /etc/modprobe.d/*.conf 2>/dev/null", evidence).stdout
    missing = [m for m in BLACKLIST
               if not re.search(rf"^install\s+{re.escape(m)}\s+/bin/(false|true)", conf, re.M)]
    assert not missing, f"modules loadable: {missing}"
    loaded = host.run("cat /proc/modules").stdout
    live = [m for m in BLACKLIST if re.search(rf"^{m.replace('-', '_')}\s", loaded, re.M)]
    assert not live, f"blacklisted modules loaded: {live}"


@pytest.mark.control("SC-HST-08")
def test_SC_HST_08_no_needless_packages(host, evidence):
    present = [p for p in NEEDLESS if host.package(p).is_installed]
    evidence.append(f"needless packages installed: {present or 'none'}")
    assert not present


# --- SC-HST-09 banner and permissions -----------------------------------------------------------------

@pytest.mark.control("SC-HST-09")
def test_SC_HST_09_login_banner(host, evidence):
    issue = host.file("/etc/issue.net")
    evidence.append(f"/etc/issue.net: {issue.content_string[:200] if issue.exists else 'missing'}")
    assert issue.exists and "Authorised use only" in issue.content_string
    assert sshd_config(host).get("banner") == "/etc/issue.net"


@pytest.mark.control("SC-HST-09")
def test_SC_HST_09_file_permissions(host, evidence):
    want = {"/etc/shadow": 0o640, "/etc/gshadow": 0o640, "/etc/passwd": 0o644, "/etc/group": 0o644,
            "/etc/ssh/sshd_config": 0o600, "/etc/crontab": 0o600, "/root": 0o700}
    bad = {}
    for path, mode in want.items():
        f = host.file(path)
        if f.exists:
            evidence.append(f"{path} {oct(f.mode)} {f.user}:{f.group}")
            if f.mode & ~mode or f.user != "root":
                bad[path] = oct(f.mode)
    homes = run(host, "find /home -mindepth 1 -maxdepth 1 -type d -perm /0027", evidence).stdout.split()
    assert not bad, f"too permissive: {bad}"
    assert not homes, f"home directories readable by others: {homes}"


# --- SC-LOG-01 auditd ---------------------------------------------------------------------------------

@pytest.mark.control("SC-LOG-01")
def test_SC_LOG_01_audit_rules_installed(host, evidence):
    rules = run(host, "cat /etc/audit/rules.d/*.rules 2>/dev/null", evidence).stdout
    for key in ("identity", "privilege", "time-change", "modules", "sshd"):
        assert f"-k {key}" in rules, f"no audit rule keyed {key}"


@pytest.mark.control("SC-LOG-01")
def test_SC_LOG_01_auditd_active(host, evidence):
    svc = host.service("auditd")
    loaded = run(host, "auditctl -l", evidence)
    evidence.append(f"auditd running={svc.is_running}")
    assert svc.is_running, "auditd not running"
    assert loaded.rc == 0 and "-k identity" in loaded.stdout, "audit rules not loaded in the kernel"


# --- SC-LOG-02 journald -------------------------------------------------------------------------------

@pytest.mark.control("SC-LOG-02")
def test_SC_LOG_02_persistent_journal(host, evidence):
    conf = run(host, "systemd-analyze cat-config systemd/journald.conf | grep -E '^Storage='", evidence)
    assert conf.stdout.strip().splitlines()[-1:] == ["Storage=persistent"]
    assert host.file("/var/log/journal").is_directory
    files = run(host, "find /var/log/journal -name '*.journal' | head -n 3", evidence).stdout
    assert files.strip(), "journald is not writing to /var/log/journal"


@pytest.mark.control("SC-LOG-02")
def test_SC_LOG_02_forwarding_hook_consistent(host, evidence):
    # Off by default; when configured, the target must be set and the forwarder running.
    fwd = host.file("/etc/rsyslog.d/60-sovcloud-forward.conf")
    upload = host.file("/etc/systemd/journal-upload.conf")
    evidence.append(f"rsyslog forward={fwd.exists} journal-upload={upload.exists}")
    if fwd.exists:
        assert re.search(r'target="[^"]+"', fwd.content_string) and host.service("rsyslog").is_running
    if upload.exists and "sovcloud" in upload.content_string:
        assert "URL=https://" in upload.content_string
        assert host.service("systemd-journal-upload").is_running
    journald = host.run("systemd-analyze cat-config systemd/journald.conf").stdout
    assert "sovcloud" in journald, "journald drop-in (SC-LOG-02 hook) missing"


# --- SC-HST-10 supported release --------------------------------------------------------------------------

# Debian's end of long-term support per release (wiki.debian.org/LTS): security fixes stop after it.
DEBIAN_SUPPORT_ENDS = {"11": dt.date(2026, 8, 31), "12": dt.date(2028, 6, 30), "13": dt.date(2030, 6, 30)}


@pytest.mark.control("SC-HST-10")
def test_SC_HST_10_os_release_supported(host, audit_today, evidence):
    release = dict(ln.split("=", 1) for ln in host.file("/etc/os-release").content_string.splitlines() if "=" in ln)
    distro, version = release.get("ID", "").strip('"'), release.get("VERSION_ID", "").strip('"')
    ends = DEBIAN_SUPPORT_ENDS.get(version) if distro == "debian" else None
    evidence.append(f"/etc/os-release: {release.get('PRETTY_NAME', '?')}; security support ends {ends or 'unknown'}")
    assert ends is not None, f"{distro} {version}: not a release with known security support {DEBIAN_SUPPORT_ENDS}"
    assert audit_today <= ends, f"debian {version} is end of life since {ends}"


# --- SC-HST-11 file ownership and world-writable files ------------------------------------------------------

SYSTEM_PATHS = "/etc /usr /boot /opt"


@pytest.mark.control("SC-HST-11")
def test_SC_HST_11_no_world_writable_or_unowned_system_files(host, evidence):
    found = {
        "world-writable files": f"find {SYSTEM_PATHS} -xdev -type f -perm -0002",
        "world-writable directories without the sticky bit": f"find {SYSTEM_PATHS} -xdev -type d -perm -0002 "
                                                            "! -perm -1000",
        "files of no user or group": f"find {SYSTEM_PATHS} -xdev \\( -nouser -o -nogroup \\)",
    }
    bad = {}
    for what, cmd in found.items():
        r = host.run(f"{cmd} 2>/dev/null")
        evidence.append(f"$ {cmd}\n{r.stdout.strip()[:600] or '(none)'}")
        if r.stdout.strip():
            bad[what] = r.stdout.split()[:20]
    assert not bad, f"in {SYSTEM_PATHS}: {bad}"


# --- SC-HST-12 core dumps -------------------------------------------------------------------------------------

@pytest.mark.control("SC-HST-12")
def test_SC_HST_12_core_dumps_disabled(host, evidence):
    limits = run(host, "grep -rhE '^[[:space:]]*\\*[[:space:]]+hard[[:space:]]+core[[:space:]]+0\\b' "
                       "/etc/security/limits.conf /etc/security/limits.d", evidence)
    assert limits.rc == 0, "no `* hard core 0` limit: processes may write core dumps"
    coredump = run(host, "systemd-analyze cat-config systemd/coredump.conf | grep -E '^(Storage|ProcessSizeMax)='",
                   evidence).stdout
    last = dict(ln.split("=", 1) for ln in coredump.split())
    assert last.get("Storage") == "none" and last.get("ProcessSizeMax") == "0", f"systemd-coredump keeps dumps: {last}"
    persisted = run(host, "grep -rhE '^[[:space:]]*fs.suid_dumpable[[:space:]]*=' /etc/sysctl.d", evidence).stdout
    assert persisted.split("=")[-1].strip() == "0", "fs.suid_dumpable=0 not persisted: setuid programs may dump"


# --- SC-HST-13 SSH sessions -------------------------------------------------------------------------------

@pytest.mark.control("SC-HST-13")
def test_SC_HST_13_ssh_sessions_bounded_and_limited_to_a_group(host, evidence):
    cfg = sshd_config(host)
    keys = ("logingracetime", "clientaliveinterval", "clientalivecountmax", "maxstartups", "allowgroups",
            "allowusers", "hostbasedauthentication", "ignorerhosts", "permituserenvironment")
    got = {k: cfg.get(k) for k in keys}
    evidence.append(f"sshd -T: {got}")
    assert 0 < int(got["logingracetime"] or 0) <= 60, f"LoginGraceTime {got['logingracetime']}"
    assert 0 < int(got["clientaliveinterval"] or 0) <= 300 and 0 < int(got["clientalivecountmax"] or 0) <= 3, got
    start, rate, full = (int(x) for x in (got["maxstartups"] or "0:0:0").split(":"))
    assert 0 < start <= 10 and full <= 60, f"MaxStartups {got['maxstartups']}"
    assert got["allowgroups"] or got["allowusers"], "every local account may log in over SSH"
    assert (got["hostbasedauthentication"], got["ignorerhosts"], got["permituserenvironment"]) == ("no", "yes", "no")


# --- SC-LOG-04 identification and authentication recorded ---------------------------------------------------

# What the audit rules must watch (CIS Debian 4.1.3): who may identify as whom, logins and lockouts, privilege
# and the authentication stack. Each path: the keys it may carry.
AUTH_WATCHES = {
    "/etc/passwd": "identity", "/etc/group": "identity", "/etc/shadow": "identity", "/etc/gshadow": "identity",
    "/etc/security/opasswd": "identity", "/var/log/lastlog": "logins", "/var/log/faillog": "logins",
    "/var/run/faillock": "logins", "/etc/sudoers": "privilege", "/etc/sudoers.d": "privilege",
    "/etc/pam.d": "pam", "/etc/ssh/sshd_config": "sshd",
}


@pytest.mark.control("SC-LOG-04")
def test_SC_LOG_04_identification_and_authentication_audited(host, evidence):
    rules = run(host, "cat /etc/audit/rules.d/*.rules 2>/dev/null", evidence).stdout
    watched = {m.group(1): (m.group(2), m.group(3))
               for m in re.finditer(r"^-w\s+(\S+)\s+-p\s+(\S+)\s+-k\s+(\S+)", rules, re.M)}
    missing = {p: k for p, k in AUTH_WATCHES.items() if p not in watched or "w" not in watched[p][0]
               or watched[p][1] != k}
    assert not missing, f"not audited for writes under its key (path: key): {missing}"
    sudo_log = run(host, "grep -rhoE '^Defaults[[:space:]]+logfile=\\S+' /etc/sudoers /etc/sudoers.d", evidence)
    log_path = sudo_log.stdout.strip().split("=")[-1].strip('"')
    assert log_path and watched.get(log_path, ("", ""))[1] == "privilege", f"the sudo log {log_path!r} is not watched"
