"""A real multi-node Ray cluster on this machine, every node on 127.0.0.1.

Each node is its own raylet (with its own worker processes) joined to the head's GCS,
as on separate machines, only on loopback. The nodes are started by Ray's own
`ray.cluster_utils.Cluster` in a keeper process (`python -m tests.support.raycluster`): the
`ray start` CLI cannot do this on loopback (with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 it
refuses a second node, with 1 it swaps 127.0.0.1 for the machine's address). Closing the
keeper's stdin shuts the cluster down; every process under the keeper is then ended by
pid, so a test never touches another Ray on the machine (as `ray stop --force` would).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Loopback, no dashboard, no usage stats, no token auth (loopback only).
ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
}
#: A lost node is noticed in about 3 s instead of about 30 (Ray's defaults).
HEALTH_CHECK = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid in _pids():
        ppid = _ppid(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    return children


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> set[int]:
    tree, out, todo = _proc_children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


class RayCluster:
    def __init__(self, cpus_per_node: int = 4) -> None:
        self.cpus = cpus_per_node
        # Short path: Ray's unix sockets live under it (108-byte limit).
        self.temp_dir = tempfile.mkdtemp(prefix="eas-ray-", dir="/tmp")
        self.address = ""
        self.keeper: subprocess.Popen[str] | None = None

    def start(self, worker_resources: dict[str, float], timeout: float = 120) -> "RayCluster":
        """Head (resource head_node) and one worker node (with `worker_resources`)."""
        self.keeper = subprocess.Popen(
            [sys.executable, "-m", "tests.support.raycluster", self.temp_dir, str(self.cpus), json.dumps(worker_resources)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(Path(self.temp_dir) / "keeper.log", "w"),
            text=True, env={**os.environ, **ENV}, cwd=Path(__file__).resolve().parents[2], start_new_session=True,
        )
        assert self.keeper.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and self.keeper.poll() is None:
            line = self.keeper.stdout.readline()
            if line.startswith("{"):
                break
        if not line.startswith("{"):
            raise RuntimeError(f"ray cluster did not start: {(Path(self.temp_dir) / 'keeper.log').read_text()}")
        self.address = json.loads(line)["address"]
        return self

    def raylets(self) -> dict[int, str]:
        """pid -> command line of every live raylet of this cluster."""
        if self.keeper is None:
            return {}
        return {pid: cmdline(pid) for pid in descendants(self.keeper.pid) if _comm(pid) == "raylet"}

    def raylet_with(self, resource: str) -> int:
        found = [pid for pid, cmd in self.raylets().items() if resource in cmd]
        if len(found) != 1:
            raise RuntimeError(f"expected one raylet with {resource}, found {found}")
        return found[0]

    def node_of(self, pid: int) -> str:
        """'head' or 'worker': the raylet whose process tree holds `pid`."""
        for raylet, cmd in self.raylets().items():
            if pid in descendants(raylet):
                return "worker" if "worker_node" in cmd else "head"
        return "unknown"

    def kill_node(self, raylet_pid: int) -> None:
        """A node lost at once: its raylet and every process under it, SIGKILL."""
        for pid in descendants(raylet_pid) | {raylet_pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Let the keeper shut the cluster down, then end whatever is left under it, by pid."""
        if self.keeper is not None:
            left = descendants(self.keeper.pid)
            try:
                assert self.keeper.stdin is not None
                self.keeper.stdin.close()
                self.keeper.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
            for pid in left | {self.keeper.pid}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.keeper = None
        import shutil

        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _keep(temp_dir: str, cpus: int, worker_resources: dict[str, float]) -> None:
    """The keeper: start head + worker with Ray's Cluster, print the address, wait for EOF."""
    import ray._private.utils
    from ray.cluster_utils import Cluster

    # Cluster records its address in /tmp/ray for `ray.init()` to find; other Rays on this
    # machine must not join ours, so it records nothing.
    ray._private.utils.write_ray_address = lambda *args, **kwargs: None

    common = {"node_ip_address": "127.0.0.1", "num_cpus": cpus, "object_store_memory": 200 * 1024**2}
    cluster = Cluster(initialize_head=False)
    cluster.add_node(**common, resources={"head_node": 1}, include_dashboard=False, temp_dir=temp_dir,
                     _system_config=HEALTH_CHECK)
    cluster.add_node(**common, resources=worker_resources)
    print(json.dumps({"address": cluster.address}), flush=True)
    sys.stdin.read()
    cluster.shutdown()


if __name__ == "__main__":
    _keep(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))
