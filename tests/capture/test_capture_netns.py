"""Capture rules in real network namespaces, applied through the real `sidemesh iptables`.

Each test builds two throwaway namespaces joined by a veth pair, "pod" (10.200.0.1,
fd00:5e::1) and "server" (10.200.0.2 and .3, fd00:5e::2). The pair is created inside the pod
namespace, so nothing is ever added to the host's network and no traffic leaves the two
namespaces. The pod's Envoy is played by listeners on 15001/15006 that report the connection's
original destination; the app by a client that drops to a non-proxy uid before connecting.
"""

from __future__ import annotations

import itertools
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sidemesh.capture import build_capture_rules, parse_capture_config
from sidemesh.capture.restore import OUR_CHAINS, parse_save


def _missing_requirement() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces and change iptables rules"
    for tool in ("ip", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            return f"{tool} not found in PATH"
    return None


pytestmark = pytest.mark.skipif(
    _missing_requirement() is not None, reason=str(_missing_requirement())
)

PROBE = Path(__file__).with_name("netns_probe.py")
SIDEMESH = [sys.executable, "-c", "from sidemesh.cli.main import main; main()"]
POD_IP, SERVER_IP, SERVER_EXCLUDED_IP = "10.200.0.1", "10.200.0.2", "10.200.0.3"
POD_IP6, SERVER_IP6 = "fd00:5e::1", "fd00:5e::2"
APP_UID = APP_GID = 4242
INJECTOR_ARGS = [
    "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
    "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020",
]  # fmt: skip
COMMAND_TIMEOUT = 30
_names = itertools.count()


@dataclass(frozen=True)
class Reply:
    """What a probe listener answered: who it is, the pre-NAT destination, the local address."""

    tag: str
    original: str
    local: str


@dataclass
class Pod:
    """A pod network namespace, a server namespace, and the processes running in them."""

    name: str
    server: str
    ipv6: bool = False
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, namespace: str, *argv: str) -> str:
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, *argv],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        assert result.returncode == 0, f"{argv} failed: {result.stderr}"
        return result.stdout

    def sidemesh_iptables(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `sidemesh iptables ARGS` inside the pod namespace, as istio-init would."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *SIDEMESH, "iptables", *args],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            env=env,
        )

    def capture(self, *args: str) -> None:
        result = self.sidemesh_iptables(*args)
        assert result.returncode == 0, result.stderr

    def listen(
        self, namespace: str, port: int, tag: str, *, family: int = 4, transparent: bool = False
    ) -> None:
        argv = [sys.executable, str(PROBE), "listen", str(port), tag, "--family", str(family)]
        if transparent:
            argv.append("--transparent")
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv], stdout=subprocess.PIPE, text=True
        )
        self.processes.append(process)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 5)
        assert ready and process.stdout.readline().strip() == "ready", f"listener {tag} failed"

    def connect(
        self,
        namespace: str,
        host: str,
        port: int,
        *,
        uid: int | None = None,
        gid: int | None = None,
    ) -> Reply:
        argv = [sys.executable, str(PROBE), "connect", host, str(port)]
        argv += ["--uid", str(uid)] if uid is not None else []
        argv += ["--gid", str(gid)] if gid is not None else []
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, *argv],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        words = result.stdout.split()
        assert result.returncode == 0 and words, f"{host}:{port}: {result.stdout}{result.stderr}"
        return Reply(*words)

    def app_connect(self, host: str, port: int) -> Reply:
        return self.connect(self.name, host, port, uid=APP_UID, gid=APP_GID)

    def save(self, command: str = "iptables-save") -> str:
        """The namespace's tables, without the timestamped comment lines."""
        text = self.run(self.name, command)
        return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))


def _ipv6_usable(pod: Pod) -> bool:
    if shutil.which("ip6tables-restore") is None or shutil.which("ip6tables-save") is None:
        return False
    disabled = pod.run(pod.name, "cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6").strip()
    return disabled == "0" and Path("/proc/net/if_inet6").exists()


@pytest.fixture
def pod() -> Iterator[Pod]:
    prefix = f"smt-{os.getpid()}-{next(_names)}"
    pod = Pod(name=f"{prefix}-pod", server=f"{prefix}-srv")
    created: list[str] = []
    try:
        for namespace in (pod.name, pod.server):
            added = subprocess.run(
                ["ip", "netns", "add", namespace], capture_output=True, text=True, timeout=10
            )
            if added.returncode != 0:
                pytest.skip(f"cannot create network namespaces here: {added.stderr.strip()}")
            created.append(namespace)
            subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
        setup = [
            f"ip -n {pod.name} link add eth0 type veth peer name eth0 netns {pod.server}",
            f"ip -n {pod.name} addr add {POD_IP}/24 dev eth0",
            f"ip -n {pod.server} addr add {SERVER_IP}/24 dev eth0",
            f"ip -n {pod.server} addr add {SERVER_EXCLUDED_IP}/24 dev eth0",
        ]
        for command in setup:
            subprocess.run(command.split(), check=True, timeout=10)
        pod.ipv6 = _ipv6_usable(pod)
        if pod.ipv6:
            for namespace, address in ((pod.name, POD_IP6), (pod.server, SERVER_IP6)):
                subprocess.run(
                    ["ip", "-n", namespace, "addr", "add", f"{address}/64", "dev", "eth0", "nodad"],
                    check=True,
                    timeout=10,
                )
        for namespace in (pod.name, pod.server):
            subprocess.run(["ip", "-n", namespace, "link", "set", "eth0", "up"], check=True)
        yield pod
    finally:
        for process in pod.processes:
            process.kill()
            process.wait(timeout=10)
        for namespace in created:
            subprocess.run(["ip", "netns", "del", namespace], check=False, timeout=10)


@pytest.fixture
def envoy(pod: Pod) -> Pod:
    """The pod with stand-ins for Envoy's listeners and a server on ports 80 and 81."""
    pod.listen(pod.name, 15001, "outbound")
    pod.listen(pod.name, 15006, "inbound")
    pod.listen(pod.server, 80, "server")
    pod.listen(pod.server, 81, "server81")
    return pod


def test_app_outbound_lands_on_15001_with_its_original_destination(envoy: Pod) -> None:
    envoy.capture(*INJECTOR_ARGS)
    reply = envoy.app_connect(SERVER_IP, 80)
    assert reply.tag == "outbound"
    assert reply.original == f"{SERVER_IP}:80"


def test_inbound_lands_on_15006(envoy: Pod) -> None:
    envoy.capture(*INJECTOR_ARGS)
    reply = envoy.connect(envoy.server, POD_IP, 8080)
    assert (reply.tag, reply.original) == ("inbound", f"{POD_IP}:8080")


def test_excluded_ports_and_ranges_bypass_capture(envoy: Pod) -> None:
    envoy.listen(envoy.name, 15021, "health")
    envoy.capture(*INJECTOR_ARGS, "-o", "81", "-x", f"{SERVER_EXCLUDED_IP}/32")
    assert envoy.connect(envoy.server, POD_IP, 15021).tag == "health"  # -d
    assert envoy.app_connect(SERVER_IP, 81).tag == "server81"  # -o
    assert envoy.app_connect(SERVER_EXCLUDED_IP, 80).tag == "server"  # -x
    # ... while everything else still is captured
    assert envoy.connect(envoy.server, POD_IP, 8080).tag == "inbound"
    assert envoy.app_connect(SERVER_IP, 80).tag == "outbound"


def test_include_lists_capture_only_what_they_name(envoy: Pod) -> None:
    envoy.listen(envoy.name, 9090, "app9090")
    envoy.capture("-i", f"{SERVER_IP}/32", "-b", "8080")
    assert envoy.app_connect(SERVER_IP, 80).tag == "outbound"
    assert envoy.app_connect(SERVER_EXCLUDED_IP, 80).tag == "server"
    assert envoy.connect(envoy.server, POD_IP, 8080).tag == "inbound"
    assert envoy.connect(envoy.server, POD_IP, 9090).tag == "app9090"


def test_empty_include_lists_capture_nothing(envoy: Pod) -> None:
    envoy.listen(envoy.name, 8080, "app8080")
    envoy.capture("-i", "", "-b", "")
    assert envoy.app_connect(SERVER_IP, 80).tag == "server"
    assert envoy.connect(envoy.server, POD_IP, 8080).tag == "app8080"


def test_excluded_interface_bypasses_capture(envoy: Pod) -> None:
    envoy.listen(envoy.name, 8080, "app8080")
    envoy.capture(*INJECTOR_ARGS, "-c", "eth0")
    assert envoy.app_connect(SERVER_IP, 80).tag == "server"
    assert envoy.connect(envoy.server, POD_IP, 8080).tag == "app8080"


def test_proxy_uid_and_gid_bypass_capture(envoy: Pod) -> None:
    envoy.capture(*INJECTOR_ARGS)
    assert envoy.connect(envoy.name, SERVER_IP, 80, uid=1337, gid=1337).tag == "server"
    assert envoy.connect(envoy.name, SERVER_IP, 80, uid=APP_UID, gid=1337).tag == "server"
    # root is an ordinary app as far as capture is concerned
    assert envoy.connect(envoy.name, SERVER_IP, 80).tag == "outbound"


def test_loopback_app_to_itself_is_left_alone_proxy_to_pod_goes_inbound(envoy: Pod) -> None:
    envoy.listen(envoy.name, 9090, "app9090")
    envoy.capture(*INJECTOR_ARGS)
    assert envoy.app_connect(POD_IP, 9090).tag == "app9090"
    assert envoy.app_connect("127.0.0.1", 9090).tag == "app9090"
    reply = envoy.connect(envoy.name, POD_IP, 9090, uid=1337, gid=1337)
    assert (reply.tag, reply.original) == ("inbound", f"{POD_IP}:9090")


def test_tproxy_mode_hands_inbound_to_a_transparent_listener(pod: Pod) -> None:
    pod.listen(pod.name, 15001, "outbound")
    pod.listen(pod.name, 15006, "tproxy", transparent=True)
    pod.listen(pod.name, 15021, "health")
    pod.listen(pod.server, 80, "server")
    pod.capture("-m", "TPROXY", "-b", "*", "-d", "15090,15021,15020")
    reply = pod.connect(pod.server, POD_IP, 8080)
    # no NAT: the transparent socket accepted the connection on its original address
    assert (reply.tag, reply.local) == ("tproxy", f"{POD_IP}:8080")
    assert pod.connect(pod.server, POD_IP, 15021).tag == "health"
    assert pod.app_connect(SERVER_IP, 80).tag == "outbound"


@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
def test_applying_twice_changes_nothing_and_leaves_foreign_rules(pod: Pod, mode: str) -> None:
    pod.run(pod.name, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "RETURN")
    args = ["-m", mode, "-d", "15090,15021,15020", "-x", "10.96.0.0/12,fd00:96::/112"]
    pod.capture(*args)
    # A rule someone adds after us sits behind our jump; re-applying must not reorder that.
    pod.run(pod.name, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "ACCEPT")
    first = (pod.save(), pod.save("ip6tables-save") if pod.ipv6 else "", _ip_rules(pod))
    pod.capture(*args)
    assert (pod.save(), pod.save("ip6tables-save") if pod.ipv6 else "", _ip_rules(pod)) == first
    assert [rule.spec for rule in parse_save(first[0])["nat"].rules if rule.chain == "OUTPUT"] == [
        "-p udp -j RETURN",
        "-p tcp -j ISTIO_OUTPUT",
        "-p udp -j ACCEPT",
    ]
    # The kernel holds exactly the rules we built (they are written in iptables-save form)
    # and one jump per hooked built-in chain.
    rules = build_capture_rules(
        parse_capture_config(
            mode=mode,
            exclude_inbound_ports="15090,15021,15020",
            exclude_outbound_ranges="10.96.0.0/12,fd00:96::/112",
        )
    )
    families = [(rules.ipv4, first[0])] + ([(rules.ipv6, first[1])] if pod.ipv6 else [])
    for family, saved_text in families:
        saved = parse_save(saved_text)
        for table in family.tables:
            ours = [rule for rule in saved[table.table].rules if rule.chain in OUR_CHAINS]
            assert sorted(ours, key=lambda rule: rule.chain) == sorted(
                table.rules, key=lambda rule: rule.chain
            )
            for jump in table.jumps:
                assert saved[table.table].rules.count(jump) == 1
    if mode == "TPROXY":  # one policy rule per address family, not one per apply
        assert first[2].count("fwmark 0x539 lookup 133") == (2 if pod.ipv6 else 1)


def test_reapplying_with_other_flags_leaves_only_the_new_rules(pod: Pod) -> None:
    pod.capture(*INJECTOR_ARGS)
    redirect_only = _rule_lines(pod.save())
    pod.capture("-m", "TPROXY", "-b", "8080", "-c", "eth0")
    assert "ISTIO_TPROXY" in pod.save()
    pod.capture(*INJECTOR_ARGS)
    assert _rule_lines(pod.save()) == redirect_only
    assert ":ISTIO_TPROXY" not in pod.save() and ":ISTIO_DIVERT" not in pod.save()


def test_cleanup_removes_everything_of_ours_and_is_repeatable(pod: Pod) -> None:
    pod.run(pod.name, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "RETURN")
    before = _rule_lines(pod.save())
    pod.capture("-m", "TPROXY", "-d", "15090,15021,15020")
    assert "ISTIO_" in pod.save()
    for _ in range(2):
        result = pod.sidemesh_iptables("--cleanup", "-m", "TPROXY")
        assert result.returncode == 0, result.stderr
        assert "ISTIO_" not in pod.save()
        assert _rule_lines(pod.save()) == before
        assert "lookup 133" not in _ip_rules(pod)
        if pod.ipv6:
            assert "ISTIO_" not in pod.save("ip6tables-save")
            assert "::6/128" not in pod.run(pod.name, "ip", "-6", "addr", "show", "dev", "lo")


def test_ipv6_is_captured_like_ipv4(envoy: Pod) -> None:
    if not envoy.ipv6:
        pytest.skip("IPv6 is not available in network namespaces on this host (or no ip6tables)")
    envoy.listen(envoy.name, 15001, "outbound6", family=6)
    envoy.listen(envoy.name, 15006, "inbound6", family=6)
    envoy.listen(envoy.server, 80, "server6", family=6)
    envoy.capture(*INJECTOR_ARGS)
    assert "::6/128" in envoy.run(envoy.name, "ip", "-6", "addr", "show", "dev", "lo")
    reply = envoy.app_connect(SERVER_IP6, 80)
    assert (reply.tag, reply.original) == ("outbound6", f"[{SERVER_IP6}]:80")
    reply = envoy.connect(envoy.server, POD_IP6, 8080)
    assert (reply.tag, reply.original) == ("inbound6", f"[{POD_IP6}]:8080")
    assert envoy.connect(envoy.name, SERVER_IP6, 80, uid=1337, gid=1337).tag == "server6"


def test_ipv6_is_skipped_when_disabled_in_the_namespace(pod: Pod) -> None:
    pod.run(pod.name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    result = pod.sidemesh_iptables(*INJECTOR_ARGS)
    assert result.returncode == 0, result.stderr
    assert "IPv6 skipped: IPv6 is disabled in this network namespace" in result.stderr
    assert "ISTIO_OUTPUT" in pod.save()
    if shutil.which("ip6tables-save"):
        assert "ISTIO_" not in pod.save("ip6tables-save")


def test_ipv6_is_skipped_without_ip6tables(pod: Pod, tmp_path: Path) -> None:
    for tool in ("ip", "iptables-restore", "iptables-save"):
        (tmp_path / tool).symlink_to(shutil.which(tool) or tool)
    result = pod.sidemesh_iptables(*INJECTOR_ARGS, env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "IPv6 skipped: ip6tables-restore, ip6tables-save not found in PATH" in result.stderr
    assert "ISTIO_OUTPUT" in pod.save()


def test_dry_run_changes_nothing(pod: Pod) -> None:
    result = pod.sidemesh_iptables("--dry-run", *INJECTOR_ARGS)
    assert result.returncode == 0 and "-A OUTPUT -p tcp -j ISTIO_OUTPUT" in result.stdout
    assert "ISTIO_" not in pod.save()


def test_without_net_admin_the_error_says_what_is_missing(pod: Pod) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not found")
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            pod.name,
            "setpriv",
            "--bounding-set",
            "-net_admin",
            *SIDEMESH,
            "iptables",
            *INJECTOR_ARGS,
        ],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 1
    assert "CAP_NET_ADMIN" in result.stderr
    assert "ISTIO_" not in pod.save()


def _ip_rules(pod: Pod) -> str:
    rules = pod.run(pod.name, "ip", "-4", "rule", "show")
    return rules + (pod.run(pod.name, "ip", "-6", "rule", "show") if pod.ipv6 else "")


def _rule_lines(saved: str) -> list[str]:
    return [line for line in saved.splitlines() if line.startswith("-A")]


def _dropped_syns(pod: Pod, port: int) -> int:
    """Packets the hold rule for `port` dropped so far (its counter in the filter table)."""
    listing = pod.run(
        pod.name, "iptables", "-t", "filter", "-L", "ISTIO_AWAIT_PROXY", "-n", "-v", "-x"
    )
    for line in listing.splitlines():
        words = line.split()
        if "DROP" in words and f"dpt:{port}" in words:
            return int(words[0])
    raise AssertionError(f"no hold rule for port {port}:\n{listing}")


def _connect_in_background(
    pod: Pod, namespace: str, host: str, port: int, *, uid: int | None = None
) -> subprocess.Popen[str]:
    argv = [sys.executable, str(PROBE), "connect", host, str(port)]
    if uid is not None:
        argv += ["--uid", str(uid), "--gid", str(uid)]
    process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pod.processes.append(process)
    return process


def _wait_for_dropped_syn(pod: Pod, port: int, process: subprocess.Popen[str]) -> None:
    """Until the hold rule has dropped the connection's first SYN (the kernel's counter)."""
    for _ in range(COMMAND_TIMEOUT * 20):
        if _dropped_syns(pod, port) > 0:
            return
        assert process.poll() is None, process.communicate()
        select.select([], [], [], 0.05)  # a poll interval, not an assertion on time
    raise AssertionError(f"no SYN to {port} was held")


@pytest.mark.parametrize(
    ("port", "tag"), [(15006, "inbound"), (15001, "outbound")], ids=["inbound", "outbound"]
)
def test_connections_wait_for_a_proxy_that_is_not_listening_yet(
    pod: Pod, port: int, tag: str
) -> None:
    """No listener on the proxy's port: the SYN is dropped, not refused, and the client's
    retransmitted SYN connects once the proxy listens (a proxy restart delays, never fails)."""
    pod.listen(pod.server, 80, "server")
    pod.capture(*INJECTOR_ARGS)
    if tag == "inbound":
        client = _connect_in_background(pod, pod.server, POD_IP, 8080)
    else:
        client = _connect_in_background(pod, pod.name, SERVER_IP, 80, uid=APP_UID)
    _wait_for_dropped_syn(pod, port, client)
    pod.listen(pod.name, port, tag)
    out, err = client.communicate(timeout=COMMAND_TIMEOUT)
    assert client.returncode == 0, out + err
    original = f"{POD_IP}:8080" if tag == "inbound" else f"{SERVER_IP}:80"
    assert Reply(*out.split()) == Reply(
        tag, original, f"{'127.0.0.1' if tag == 'outbound' else POD_IP}:{port}"
    )


def test_a_listening_proxy_is_not_held(envoy: Pod) -> None:
    envoy.capture(*INJECTOR_ARGS)
    assert envoy.connect(envoy.server, POD_IP, 8080).tag == "inbound"
    assert envoy.app_connect(SERVER_IP, 80).tag == "outbound"
    assert _dropped_syns(envoy, 15006) == _dropped_syns(envoy, 15001) == 0


def test_refuse_mode_answers_a_missing_proxy_with_a_reset(pod: Pod) -> None:
    pod.capture(*INJECTOR_ARGS, "--while-proxy-down", "refuse")
    assert "ISTIO_AWAIT_PROXY" not in pod.save()
    argv = [sys.executable, str(PROBE), "connect", POD_IP, "8080"]
    result = subprocess.run(
        ["ip", "netns", "exec", pod.server, *argv],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 1 and "refused" in result.stdout, result.stdout
