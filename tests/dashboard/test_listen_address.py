"""Safe by default (issue 20, part 2): whoever reaches the dashboard uses the team's fal key, and
Streamlit listens on every interface unless told otherwise. So `scripts/run` with the default
settings, and a hand-typed `streamlit run dashboard/app.py`, listen on loopback only; only
DASHBOARD_LISTEN_ON_ALL_INTERFACES (environment or secrets.toml) opens it, and the sidebar says
who can reach it. The sockets are read from the kernel (/proc/net/tcp and tcp6), not from logs."""
from __future__ import annotations

import ipaddress
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit import config as st_config

from core.config import is_loopback, load_settings
from tests.apptest_support import all_text, open_page
from tests.serving import free_port, start_streamlit, stop

ROOT = Path(__file__).resolve().parents[2]
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def _family(pid: int) -> set[int]:
    """The process and every descendant (a runner or worker it spawns counts too)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo += children.get(p, [])
    return found


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)
    # the kernel prints each 32-bit word in host (little-endian) order
    return ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process or its descendants listen on."""
    inodes = set()
    for p in _family(pid):
        try:
            fds = list(Path(f"/proc/{p}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and inode in inodes:
                host, port = local.split(":")
                found.add((str(_address(host)), int(port, 16)))
    return found


def _serve(argv: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    return start_streamlit(argv, cwd=ROOT, env=env, port=port, log=log, timeout_s=30)


def _scripts_run(port: int) -> list[str]:
    """scripts/run itself, but for `bash scripts/setup` (the test's environment is installed, and a
    test never calls pip) and with this interpreter for .venv/bin/python."""
    script = (ROOT / "scripts" / "run").read_text()
    assert "bash scripts/setup\n" in script and ".venv/bin/python" in script
    script = script.replace("bash scripts/setup\n", "").replace(".venv/bin/python", shlex.quote(sys.executable))
    # $0 is the script's path, so its `cd "$(dirname "$0")/.."` lands in the repository
    return ["bash", "-c", script, str(ROOT / "scripts" / "run"), "--server.port", str(port)]


@pytest.fixture
def env(tmp_path):
    """The test's isolated settings, with no address chosen by anything but the dashboard."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    environ.pop("DASHBOARD_LISTEN_ON_ALL_INTERFACES", None)
    return environ


@pytest.mark.parametrize("how", ["scripts/run", "a hand-typed streamlit run"])
def test_by_default_the_dashboard_listens_on_loopback_only(env, tmp_path, how):
    """scripts/run with the default settings, and `streamlit run` typed by hand (no flag:
    .streamlit/config.toml's server.address keeps it on this machine)."""
    port = free_port()
    command = (_scripts_run(port) if how == "scripts/run" else
               [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port)])
    proc = _serve(command, env, port, tmp_path / "run.log")
    try:
        sockets = listening(proc.pid)
    finally:
        stop(proc)
    assert ("127.0.0.1", port) in sockets, sockets
    assert all(ipaddress.ip_address(host).is_loopback for host, _ in sockets), sockets


def test_the_setting_in_secrets_toml_opens_scripts_run_to_every_interface(env, tmp_path):
    """Set in secrets.toml, as an operator would: it counts as the environment does, and the
    command-line flag scripts/run passes wins over config.toml's loopback address."""
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('DASHBOARD_LISTEN_ON_ALL_INTERFACES = "on"\n')
    env["DASHBOARD_SECRETS"] = str(secrets)
    port = free_port()
    proc = _serve(_scripts_run(port), env, port, tmp_path / "run.log")
    try:
        sockets = listening(proc.pid)
    finally:
        stop(proc)
    assert ("0.0.0.0", port) in sockets, sockets


def test_a_bad_value_stops_scripts_run_in_one_line_before_anything_listens(env, tmp_path):
    env["DASHBOARD_LISTEN_ON_ALL_INTERFACES"] = "maybe"
    done = subprocess.run(_scripts_run(free_port()), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: DASHBOARD_LISTEN_ON_ALL_INTERFACES must be on or off, got 'maybe'."


def test_the_listen_address_follows_the_setting():
    assert load_settings({}).listen_address == "127.0.0.1"
    assert load_settings({"DASHBOARD_LISTEN_ON_ALL_INTERFACES": "on"}).listen_address == "0.0.0.0"
    assert [a for a in ("127.0.0.1", "localhost", "::1", "127.0.0.2") if not is_loopback(a)] == []
    assert [a for a in ("", None, "0.0.0.0", "::", "192.168.1.5", "example.com") if is_loopback(a)] == []


@pytest.fixture
def server_address():
    """Set Streamlit's server.address for one test (as the running server's flag would)."""
    before = st_config.get_option("server.address")
    yield lambda value: st_config.set_option("server.address", value)
    st_config.set_option("server.address", before)


def test_the_sidebar_says_a_loopback_dashboard_is_reachable_from_this_machine_only(server_address):
    server_address("127.0.0.1")
    at = open_page()
    assert "Reachable from this machine only." in [c.value for c in at.sidebar.caption]
    assert "Open to the network" not in all_text(at)


def test_the_sidebar_warns_that_an_open_dashboard_lends_the_fal_key_to_the_network(server_address, monkeypatch):
    server_address("0.0.0.0")
    monkeypatch.setenv("FAL_KEY", "test-key:not-a-secret")
    at = open_page()
    port = st_config.get_option("server.port")
    warning = [w.value for w in at.sidebar.warning if "Open to the network" in w.value]
    assert warning == [f"**Open to the network** (`DASHBOARD_LISTEN_ON_ALL_INTERFACES`): anyone who can reach "
                       f"port {port} can use this dashboard and the team's fal key."], warning
    assert "Reachable from this machine only." not in all_text(at)
