"""End-to-end check of packed kernels on the test cluster (``tools/cluster.sh check``).

Only public interfaces: the Hub's REST API (create a user, start and stop their
server, which is a Slurm job), the single-user server's REST API and kernel
websocket (through the proxy).  Per node it checks that a packed kernel runs from
the store (``sys.prefix``), inside the job (``SLURM_JOB_ID``, the node's hostname),
with the engine chosen on the node; that a long cell is interrupted (signal mode
through the REST API, message mode through the control channel) within 2 s;
restart; shutdown; that stopping the server ends the job; and that nothing of the
user is left (processes, /tmp, /dev/shm, scratch directories).  It times "start
server -> first executed cell" for the packed kernel and for the pack's plain
ipykernel kernel in the same Hub.  Then the bad inputs: a pack missing on the node,
a pack the user can write into, a node where no allowed engine works, a job
cancelled while starting: each must fail in the Hub with one readable line and
leave nothing behind.

Prints one line per step and a JSON summary (``--json FILE``); exit status 1 if
anything failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

INTERRUPT_LIMIT_S = 2.0

PROBE = """
import json, os, socket, sys
print(json.dumps({"prefix": sys.prefix, "job": os.environ.get("SLURM_JOB_ID"),
                  "node": os.environ.get("SLURMD_NODENAME"), "host": socket.gethostname(),
                  "server_engine": os.environ.get("NBSANDBOX_SERVER_ENGINE"),
                  "pid": os.getpid(), "home": os.path.expanduser("~")}))
"""


class CheckFailed(Exception):
    pass


class Hub:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise CheckFailed(f"{method} {path}: HTTP {exc.code}: {detail[:300]}") from None
        return json.loads(text) if text.strip() else None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self.request(method, "/hub/api" + path, body)

    def progress_failure(self, user: str) -> str | None:
        """The Hub's last spawn message for a failed start (its progress event stream)."""
        req = urllib.request.Request(f"{self.url}/hub/api/users/{user}/server/progress")
        req.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                last = None
                for raw in resp:
                    line = raw.decode().strip()
                    if line.startswith("data:"):
                        last = json.loads(line[5:])
                        if last.get("failed") or last.get("ready"):
                            break
        except (urllib.error.URLError, OSError, ValueError):
            return None
        if last and last.get("failed"):
            return str(last.get("message"))
        return None


def ensure_user(hub: Hub, user: str) -> None:
    try:
        hub.api("POST", f"/users/{user}")
    except CheckFailed as exc:
        if "409" not in str(exc):
            raise


def start_server(hub: Hub, user: str, options: dict[str, Any], timeout: float = 180) -> dict:
    """Start the user's server and wait until it is ready; returns the user model."""
    hub.api("POST", f"/users/{user}/server", options)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = hub.api("GET", f"/users/{user}")
        server = model.get("servers", {}).get("")
        if server and server.get("ready"):
            return model
        if not server or (server.get("pending") is None and not server.get("ready")):
            message = hub.progress_failure(user) or "the server stopped while starting"
            raise CheckFailed(f"server of {user} did not start: {message}")
        time.sleep(0.2)
    raise CheckFailed(f"server of {user} not ready within {timeout} s")


def start_failure(hub: Hub, user: str, options: dict[str, Any], timeout: float = 120) -> str:
    """Start a server that must fail; returns the Hub's message."""
    try:
        hub.api("POST", f"/users/{user}/server", options)
    except CheckFailed as exc:  # failed at once: the reason is in the spawn's progress
        return hub.progress_failure(user) or str(exc)
    deadline = time.monotonic() + timeout
    message = None
    while time.monotonic() < deadline:
        message = hub.progress_failure(user)
        if message:
            break
        model = hub.api("GET", f"/users/{user}")
        if model.get("servers", {}).get("", {}).get("ready"):
            raise CheckFailed(f"server of {user} started, but it should have failed")
        time.sleep(0.5)
    wait_stopped(hub, user)
    if not message:
        raise CheckFailed(f"server of {user} neither failed nor started within {timeout} s")
    return message


def wait_stopped(hub: Hub, user: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = hub.api("GET", f"/users/{user}")
        server = model.get("servers", {}).get("")
        if not server:
            return
        if server.get("pending") is None and server.get("ready"):
            hub.api("DELETE", f"/users/{user}/server")
        time.sleep(0.3)
    raise CheckFailed(f"server of {user} did not stop within {timeout} s")


def stop_server(hub: Hub, user: str) -> None:
    try:
        hub.api("DELETE", f"/users/{user}/server")
    except CheckFailed as exc:
        if "400" not in str(exc):  # not running
            raise
    wait_stopped(hub, user)


class Kernel:
    """A kernel of a single-user server, through its REST API and websocket."""

    def __init__(self, hub: Hub, user: str) -> None:
        self.hub = hub
        self.base = f"/user/{user}/api"
        self.id: str | None = None
        self.ws = None
        self.session = uuid.uuid4().hex

    async def start(self, name: str) -> None:
        model = await asyncio.to_thread(self.hub.request, "POST", self.base + "/kernels",
                                        {"name": name}, 120)
        self.id = model["id"]
        await self.connect()

    async def connect(self) -> None:
        url = self.hub.url.replace("http", "ws", 1) + \
            f"{self.base}/kernels/{self.id}/channels?session_id={self.session}"
        req = HTTPRequest(url, headers={"Authorization": f"token {self.hub.token}"})
        self.ws = await websocket_connect(req)

    async def send(self, channel: str, msg_type: str, content: dict) -> str:
        msg_id = uuid.uuid4().hex
        msg = {"header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session,
                          "username": "check", "version": "5.3", "date": ""},
               "parent_header": {}, "metadata": {}, "content": content, "channel": channel,
               "buffers": []}
        await self.ws.write_message(json.dumps(msg))
        return msg_id

    async def execute(self, code: str, timeout: float = 120,
                      on_busy=None) -> tuple[dict, str]:
        """Run ``code``; returns (execute_reply content, stdout text)."""
        msg_id = await self.send("shell", "execute_request",
                                 {"code": code, "silent": False, "store_history": False,
                                  "user_expressions": {}, "allow_stdin": False,
                                  "stop_on_error": True})
        out: list[str] = []
        reply = None
        idle = False
        deadline = time.monotonic() + timeout
        while reply is None or not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed(f"no reply to {code[:40]!r} within {timeout} s")
            raw = await asyncio.wait_for(self.ws.read_message(), left)
            if raw is None:
                raise CheckFailed("the kernel's websocket closed")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "status" and msg["content"]["execution_state"] == "busy" and on_busy:
                await on_busy()
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                reply = msg["content"]
        return reply, "".join(out)

    async def probe(self) -> dict:
        reply, out = await self.execute(PROBE)
        if reply["status"] != "ok":
            raise CheckFailed(f"probe cell failed: {reply.get('ename')}: {reply.get('evalue')}")
        return json.loads(out.strip().splitlines()[-1])

    async def interrupt(self, how: str) -> float:
        """Interrupt a sleeping cell; returns seconds from the request to the reply."""
        t: dict[str, float] = {}

        async def fire() -> None:
            await asyncio.sleep(0.5)
            t["sent"] = time.monotonic()
            if how == "signal":
                await asyncio.to_thread(self.hub.request, "POST",
                                        f"{self.base}/kernels/{self.id}/interrupt", {})
            else:
                await self.send("control", "interrupt_request", {})

        task = None

        async def on_busy() -> None:
            nonlocal task
            task = asyncio.ensure_future(fire())

        reply, _ = await self.execute("import time; time.sleep(60)", timeout=30, on_busy=on_busy)
        took = time.monotonic() - t["sent"]
        if reply.get("ename") != "KeyboardInterrupt":
            raise CheckFailed(f"{how} interrupt: the cell ended with {reply.get('status')} "
                              f"{reply.get('ename')}, not KeyboardInterrupt")
        return took

    async def restart(self) -> None:
        await asyncio.to_thread(self.hub.request, "POST",
                                f"{self.base}/kernels/{self.id}/restart", {}, 120)
        self.ws.close()
        await self.connect()

    async def shutdown(self) -> None:
        self.ws.close()
        await asyncio.to_thread(self.hub.request, "DELETE", f"{self.base}/kernels/{self.id}")
        left = await asyncio.to_thread(self.hub.request, "GET", self.base + "/kernels")
        if left:
            raise CheckFailed(f"kernels left after shutdown: {[k['id'] for k in left]}")


# -- leftovers -------------------------------------------------------------------------------


def leftovers(user: str, home: str) -> list[str]:
    """What of ``user`` is left on the machine: processes, jobs, scratch entries."""
    uid = pwd.getpwnam(user).pw_uid
    found = []
    ps = subprocess.run(["ps", "-o", "pid=,args=", "-u", str(uid)], capture_output=True,
                        text=True, check=False).stdout
    found += [f"process {line.strip()}" for line in ps.splitlines() if line.strip()]
    sq = subprocess.run(["squeue", "-h", "-u", user, "-o", "%i %T"], capture_output=True,
                        text=True, check=False).stdout
    found += [f"job {line.strip()}" for line in sq.splitlines() if line.strip()]
    for top in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid == uid:
                    found.append(f"file {e.path}")
            except OSError:
                continue
    for path in Path(home).rglob("nbsandbox-*"):
        found.append(f"scratch {path}")
    return found


def wait_no_leftovers(user: str, home: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(user, home)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


# -- the scenarios ----------------------------------------------------------------------------


def log(line: str) -> None:
    print(line, flush=True)


async def time_to_first_cell(hub: Hub, user: str, partition: str, kernel: str) -> float:
    t0 = time.monotonic()
    await asyncio.to_thread(start_server, hub, user, {"partition": partition})
    k = Kernel(hub, user)
    await k.start(kernel)
    reply, _ = await k.execute("1 + 1")
    if reply["status"] != "ok":
        raise CheckFailed(f"first cell in {kernel} failed")
    took = time.monotonic() - t0
    await k.shutdown()
    await asyncio.to_thread(stop_server, hub, user)
    return took


async def node_lifecycle(hub: Hub, user: str, partition: str, kernel: str,
                         expect_engine: str, pack: str) -> dict[str, Any]:
    result: dict[str, Any] = {"user": user, "partition": partition}
    t0 = time.monotonic()
    await asyncio.to_thread(start_server, hub, user, {"partition": partition})
    result["server_start_s"] = round(time.monotonic() - t0, 2)
    k = Kernel(hub, user)
    await k.start(kernel)
    facts = await k.probe()
    result["first_cell_s"] = round(time.monotonic() - t0, 2)
    result["facts"] = facts
    log(f"  {partition}: kernel runs: {json.dumps(facts)}")
    if not facts["prefix"].startswith(pack):
        raise CheckFailed(f"sys.prefix {facts['prefix']} is not in the store {pack}")
    if not facts["job"]:
        raise CheckFailed("SLURM_JOB_ID is not set in the kernel")
    if expect_engine not in (facts["server_engine"] or ""):
        raise CheckFailed(f"the server on {partition} runs with {facts['server_engine']!r}, "
                          f"expected engine {expect_engine}")
    reply, _ = await k.execute("%load_ext nbsandbox\n%sandbox_doctor")
    result["doctor_ok"] = reply["status"] == "ok"
    for how in ("signal", "message"):
        took = await k.interrupt(how)
        result[f"interrupt_{how}_s"] = round(took, 2)
        log(f"  {partition}: {how} interrupt answered in {took:.2f} s")
        if took > INTERRUPT_LIMIT_S:
            raise CheckFailed(f"{how} interrupt took {took:.2f} s (limit {INTERRUPT_LIMIT_S} s)")
    await k.restart()
    after = await k.probe()
    if after["pid"] == facts["pid"]:
        raise CheckFailed("restart kept the same kernel process")
    log(f"  {partition}: restarted (pid {facts['pid']} -> {after['pid']})")
    await k.shutdown()
    await asyncio.to_thread(stop_server, hub, user)
    job = facts["job"]
    state = subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"],
                           capture_output=True, text=True, check=False).stdout.strip()
    result["job_state_after_stop"] = state or "gone"
    if state in ("RUNNING", "PENDING"):
        raise CheckFailed(f"job {job} is still {state} after the server stopped")
    left = wait_no_leftovers(user, facts["home"])
    result["leftovers"] = left
    log(f"  {partition}: server stopped (job {job} {state or 'gone'}), leftovers: {len(left)}")
    if left:
        raise CheckFailed(f"left behind on {partition}: {left}")
    return result


async def scancel_kills(hub: Hub, user: str, partition: str, kernel: str) -> dict[str, Any]:
    """scancel of a running server's job leaves no kernel and no scratch."""
    await asyncio.to_thread(start_server, hub, user, {"partition": partition})
    k = Kernel(hub, user)
    await k.start(kernel)
    facts = await k.probe()
    subprocess.run(["scancel", facts["job"]], check=True)
    left = wait_no_leftovers(user, facts["home"])
    await asyncio.to_thread(wait_stopped, hub, user, 120)
    log(f"  {partition}: scancel {facts['job']}: leftovers {len(left)}")
    if left:
        raise CheckFailed(f"left behind after scancel: {left}")
    return {"partition": partition, "leftovers": left}


def bad_site(run: Path, site: Path, name: str, edit) -> Path:
    """A copy of the site directory with its policy changed by ``edit(policy)``."""
    dest = run / "badsites" / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(site, dest)
    path = dest / "etc" / "jupyter" / "nbsandbox_admin_config.json"
    policy = json.loads(path.read_text())
    edit(policy["SandboxPolicy"])
    path.write_text(json.dumps(policy))
    (run / "badsites").chmod(0o755)
    for p in (dest, *dest.rglob("*")):
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def bad_inputs(hub: Hub, user: str, run: Path, site: Path, nbsandbox: str) -> dict[str, str]:
    home = pwd.getpwnam(user).pw_dir
    messages: dict[str, str] = {}
    small = run / "badsites" / "pack-owned-by-user"
    if not small.exists():
        small.parent.mkdir(parents=True, exist_ok=True)
        small.parent.chmod(0o755)
        subprocess.run([nbsandbox, "pack", "--no-python", "--program", "/bin/true", "-o",
                        str(small)], check=True, capture_output=True)
        subprocess.run(["chown", "-R", user, str(small)], check=True)

    def missing(p: dict) -> None:
        p["roots"]["site"] = "/nonexistent/packs/site"

    def writable(p: dict) -> None:
        p["roots"]["site"] = str(small)

    def no_engine(p: dict) -> None:
        p["allowed_engines"] = ["userns"]
        p["engine"] = "userns"

    cases = [("missing pack", "main", missing, "missing on node"),
             ("writable pack", "main", writable, "writable by"),
             ("no engine works", "nouserns", no_engine, "cannot be used")]
    for name, partition, edit, expected in cases:
        where = bad_site(run, site, name.replace(" ", "-"), edit)
        message = start_failure(hub, user, {"partition": partition, "site": str(where)})
        log(f"  {name}: the Hub says: {message}")
        if expected not in message or "\n" in message.strip():
            raise CheckFailed(f"{name}: expected one line with {expected!r}, got {message!r}")
        messages[name] = message
        left = wait_no_leftovers(user, home)
        if left:
            raise CheckFailed(f"{name}: left behind: {left}")
    # a job cancelled while it starts: the start request runs beside us (it blocks for
    # the Hub's slow-spawn time) while we cancel the job as soon as Slurm has it
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        posted = pool.submit(start_failure, hub, user, {"partition": "main"})
        job = ""
        while not job and time.monotonic() < t0 + 60:
            job = subprocess.run(["squeue", "-h", "-u", user, "-o", "%i"], capture_output=True,
                                 text=True, check=False).stdout.strip()
            time.sleep(0.05)
        if not job:
            raise CheckFailed("no job appeared for the start to be cancelled")
        subprocess.run(["scancel", job], check=True)
        log(f"  cancelled job {job} {time.monotonic() - t0:.1f} s after the start request")
        message = posted.result()
    log(f"  job cancelled mid-start: the Hub says: {message}")
    if "\n" in message.strip() or f"Slurm job {job} " not in message:
        raise CheckFailed(f"cancelled start: expected one line naming job {job}, got {message!r}")
    messages["job cancelled mid-start"] = message
    left = wait_no_leftovers(user, home)
    if left:
        raise CheckFailed(f"cancelled start: left behind: {left}")
    return messages


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    hub = Hub(args.hub, Path(args.token_file).read_text().strip())
    summary: dict[str, Any] = {"ok": False}
    users = args.users
    for user in users:
        ensure_user(hub, user)
    pack = args.pack
    if args.only_bad:
        summary["bad_inputs"] = await asyncio.to_thread(
            bad_inputs, hub, users[1], Path(args.run), Path(args.site), args.nbsandbox)
        summary["ok"] = True
        return summary
    log("lifecycle on node1 (user namespaces) and node2 (none: the fallback engine)")
    summary["node1"] = await node_lifecycle(hub, users[0], "main", "site", "userns", pack)
    summary["node2"] = await node_lifecycle(hub, users[1], "nouserns", "site", "fakechroot",
                                            pack)
    log("scancel of a running server")
    summary["scancel"] = await scancel_kills(hub, users[0], "main", "site")
    if args.measure:
        log(f"start server -> first executed cell, {args.measure} rounds each, node1")
        packed, plain = [], []
        for _ in range(args.measure):
            packed.append(await time_to_first_cell(hub, users[0], "main", "site"))
            plain.append(await time_to_first_cell(hub, users[0], "main", "python3"))
        summary["first_cell_packed_s"] = [round(x, 2) for x in packed]
        summary["first_cell_plain_s"] = [round(x, 2) for x in plain]
        ratio = sorted(packed)[len(packed) // 2] / sorted(plain)[len(plain) // 2]
        summary["first_cell_ratio_median"] = round(ratio, 3)
        log(f"  packed {summary['first_cell_packed_s']} s, plain {summary['first_cell_plain_s']}"
            f" s: median ratio {ratio:.2f}")
    if not args.skip_bad:
        log("bad inputs")
        summary["bad_inputs"] = await asyncio.to_thread(
            bad_inputs, hub, users[1], Path(args.run), Path(args.site), args.nbsandbox)
    summary["ok"] = True
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hub", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--users", nargs=2, required=True)
    p.add_argument("--run", required=True, help="the cluster's run directory")
    p.add_argument("--site", required=True, help="the site directory")
    p.add_argument("--pack", required=True, help="the site pack's store prefix, e.g. /gnu/store")
    p.add_argument("--nbsandbox", required=True)
    p.add_argument("--measure", type=int, default=0, metavar="N",
                   help="also time start -> first cell, N rounds per kernel")
    p.add_argument("--skip-bad", action="store_true", help="skip the bad-input cases")
    p.add_argument("--only-bad", action="store_true", help="only the bad-input cases")
    p.add_argument("--json", metavar="FILE", help="write the summary here")
    args = p.parse_args()
    try:
        summary = asyncio.run(main_async(args))
    except CheckFailed as exc:
        print(f"check: FAILED: {exc}", file=sys.stderr)
        summary = {"ok": False, "error": str(exc)}
    except Exception as exc:  # a client-side failure (timeouts...): one line too
        print(f"check: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        summary = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    if summary["ok"]:
        print("check: ok")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
