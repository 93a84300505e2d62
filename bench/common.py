"""Shared helpers of the benchmarks: daemons, databases, load generation, verdicts.

Every benchmark starts what it measures itself (the ``merchant-authd`` console script
on a free loopback port with a generated configuration, in a temporary folder) and
removes it again.  Load comes from ``wrk`` when it is installed; otherwise from an
aiohttp client running in a separate process (``python bench/common.py load SPEC``),
so that the load generator never shares a process, or a GIL, with what it measures.

Run as a script, this module also provides the bare aiohttp server of the reference
measurements (``serve-bare``) and the latency prober of the login storm (``probe``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
DAEMON = VENV_BIN / "merchant-authd"
PYTHON = VENV_BIN / "python"
CONCURRENCY = 32
#: bcrypt work factor of production (the daemon's default), used by every benchmark.
BCRYPT_COST = 12
#: Password of every generated instance; benchmarks run on throw-away databases.
PASSWORD = "bench-password"

sys.path.insert(0, str(ROOT))

from merchant_authd import crypto  # noqa: E402
from merchant_authd.instances import settings_from  # noqa: E402
from merchant_authd.sqlite_store import SqliteStore  # noqa: E402

# -- environment ----------------------------------------------------------------------


def machine_summary(load_generator: bool = True) -> str:
    """CPU count, CPU model, Python version and current load (and the load
    generator benchmarks use), for the output."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    summary = (
        f"nproc {os.cpu_count()}, {model}, Python {sys.version.split()[0]},"
        f" load average {load}"
    )
    if load_generator:
        summary += f", load generator {'wrk' if have_wrk() else 'aiohttp'}"
    return summary


def have_wrk() -> bool:
    """Whether ``wrk`` is installed (``BENCH_NO_WRK=1`` forces the fallback)."""
    return not os.environ.get("BENCH_NO_WRK") and shutil.which("wrk") is not None


def free_port() -> int:
    """A TCP port on the loopback interface that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def verdict(name: str, value: float, target: str, ok: bool) -> bool:
    """Print one checked figure and return whether it met its target."""
    print(f"{name}: {value:.3f} (target {target}) {'PASS' if ok else 'FAIL'}")
    return ok


def finish(results: Sequence[bool]) -> int:
    """Print the overall verdict; the exit status (0 PASS, 1 FAIL)."""
    ok = all(results)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary folder removed afterwards, whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f"merchant-authd-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- processes ------------------------------------------------------------------------


def write_config(folder: Path, port: int, database: Path) -> Path:
    """A configuration file for a benchmark daemon (production bcrypt cost)."""
    conf = folder / f"merchant-authd-{port}.conf"
    conf.write_text(
        "[merchant]\n"
        "SERVE = tcp\n"
        f"PORT = {port}\n"
        "BIND_TO = 127.0.0.1\n"
        "[merchantdb-sqlite]\n"
        f"DATABASE = {database}\n"
        "[merchant-authd]\n"
        f"BCRYPT_COST = {BCRYPT_COST}\n"
        "LOG_LEVEL = INFO\n",
        encoding="utf-8",
    )
    return conf


@dataclass
class Server:
    """A process serving HTTP on a loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        """Process id."""
        return self.process.pid

    @property
    def url(self) -> str:
        """Base URL without trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM of the process in KiB."""
        found: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
        return found

    def cpu_seconds(self) -> float:
        """User plus system CPU time consumed so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, limit_s: float = 180.0) -> None:
        """Wait until the process stops using CPU (abandoned work has drained)."""
        deadline = time.monotonic() + limit_s
        before = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.cpu_seconds()
            if now - before < 0.05:
                return
            before = now

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not end within 20 s."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The end of the process's standard error, for failure reports."""
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(text[-lines:])
        return ""


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One GET on a fresh connection: (status, body)."""
    host, _, rest = url.removeprefix("http://").partition("/")
    name, _, port = host.partition(":")
    conn = http.client.HTTPConnection(name, int(port), timeout=10)
    try:
        conn.request("GET", "/" + rest, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(server: Server, path: str = "/config", limit_s: float = 30.0) -> float:
    """Poll ``path`` until it answers 200; seconds since the process was started."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get(server.url + path)[0] == 200:
                return time.monotonic()
        time.sleep(0.005)
    raise RuntimeError(f"server not ready after {limit_s} s:\n{server.log_tail()}")


@contextlib.contextmanager
def daemon(
    folder: Path, database: Path, wrapper: Sequence[str] = (), limit_s: float = 30.0
) -> Iterator[Server]:
    """``merchant-authd -c <conf>`` on a free port, ready to answer; stopped after.

    ``wrapper`` is a command the daemon runs under (a profiler), given ``limit_s``
    seconds to answer its first request.
    """
    port = free_port()
    conf = write_config(folder, port, database)
    log_path = folder / f"daemon-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*wrapper, str(DAEMON), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={k: v for k, v in os.environ.items() if not k.startswith("TALER_")},
        )
    server = Server(process, port, log_path)
    try:
        wait_ready(server, limit_s=limit_s)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def bare_app(
    folder: Path, body_file: Path, wrapper: Sequence[str] = (), limit_s: float = 30.0
) -> Iterator[Server]:
    """The reference: a bare aiohttp app answering a fixed JSON body, own process.

    ``wrapper`` and ``limit_s`` as for :func:`daemon`.
    """
    port = free_port()
    log_path = folder / f"bare-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*wrapper, str(PYTHON), __file__, "serve-bare", str(port), str(body_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = Server(process, port, log_path)
    try:
        wait_ready(server, "/", limit_s=limit_s)
        yield server
    finally:
        server.stop()


# -- databases ------------------------------------------------------------------------


@dataclass
class Credential:
    """An instance id with one of its access tokens (``secret-token:...``)."""

    instance_id: str
    token: str

    @property
    def path(self) -> str:
        """The authenticated read of this instance."""
        return f"/instances/{self.instance_id}/private"

    @property
    def headers(self) -> dict[str, str]:
        """The bearer header of the token."""
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Population:
    """What :func:`populate` wrote, and a sample of usable credentials."""

    instances: int
    tokens: int
    seconds: float
    sample: list[Credential] = field(default_factory=list)


def instance_id(number: int) -> str:
    """Id of the n-th generated instance."""
    return f"shop{number:05d}"


def basic_header(instance: str, password: str = PASSWORD) -> dict[str, str]:
    """HTTP Basic credentials of an instance."""
    raw = base64.b64encode(f"{instance}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {raw}"}


def init_database(path: Path) -> None:
    """Create the schema exactly as the daemon does when it first starts."""

    async def run() -> None:
        store = await SqliteStore.open(path)
        await store.close()

    asyncio.run(run())


def populate(
    path: Path, instances: int, tokens_per_instance: int, sample: int, seed: int = 1
) -> Population:
    """A database of ``instances`` x ``tokens_per_instance`` live ``readonly`` tokens.

    The schema comes from the daemon itself; rows are bulk-inserted in one
    transaction.  Every instance has the password :data:`PASSWORD` (one bcrypt hash
    at production cost, shared).  ``sample`` random (instance, token) pairs are kept
    in clear for the load generator.
    """
    started = time.monotonic()
    init_database(path)
    rng = random.Random(seed)
    password_hash = asyncio.run(crypto.hash_password(PASSWORD, BCRYPT_COST))
    now = int(time.time())
    total = instances * tokens_per_instance
    chosen = set(rng.sample(range(total), min(sample, total)))
    raw = os.urandom(32 * total)
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO instances (serial, id, id_folded, merchant_pub,"
            " auth_method, password_hash, settings, created_at)"
            " VALUES (?, ?, ?, ?, 'token', ?, ?, ?)",
            (
                (
                    n + 1,
                    instance_id(n),
                    instance_id(n),
                    os.urandom(32),
                    password_hash,
                    json.dumps(
                        settings_from({"name": f"Shop {instance_id(n)}"}),
                        sort_keys=True,
                    ),
                    now,
                )
                for n in range(instances)
            ),
        )
        conn.executemany(
            "INSERT INTO merchant_keys (instance_serial, merchant_priv) VALUES (?, ?)",
            ((n + 1, os.urandom(32)) for n in range(instances)),
        )
        conn.executemany(
            "INSERT INTO access_tokens (instance_serial, token_digest, creation_time,"
            " expiration, scope, refreshable, description)"
            " VALUES (?, ?, ?, NULL, 'readonly', 0, NULL)",
            (
                (
                    t // tokens_per_instance + 1,
                    crypto.digest_secret(raw[32 * t : 32 * t + 32]),
                    now,
                )
                for t in range(total)
            ),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    credentials = [
        Credential(
            instance_id(t // tokens_per_instance),
            crypto.TOKEN_PREFIX + crypto.crockford_encode(raw[32 * t : 32 * t + 32]),
        )
        for t in sorted(chosen)
    ]
    rng.shuffle(credentials)
    return Population(instances, total, time.monotonic() - started, credentials)


# -- load generation ------------------------------------------------------------------


@dataclass
class Request:
    """One request the load generator may send."""

    method: str
    path: str
    headers: dict[str, str]
    body: str | None = None


@dataclass
class LoadResult:
    """What a load run measured."""

    requests: int
    failures: int  # non-2xx answers, socket errors and timeouts
    seconds: float
    p50_ms: float
    p99_ms: float
    #: CPU time the server process used per request (all its threads), if measured.
    cpu_ms: float = float("nan")

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.failures) / self.seconds

    def describe(self) -> str:
        """One line for the output."""
        return (
            f"{self.rate:.1f} req/s ({self.requests} requests, {self.failures} failed,"
            f" {self.seconds:.1f} s, p50 {self.p50_ms:.1f} ms,"
            f" p99 {self.p99_ms:.1f} ms,"
            f" server CPU {self.cpu_ms:.3f} ms/request)"
        )


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal


def _wrk_script(requests: Sequence[Request]) -> str:
    lines = ["local reqs = {}", "init = function(args)"]
    for number, req in enumerate(requests, 1):
        headers = ", ".join(
            f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in req.headers.items()
        )
        body = _lua_string(req.body) if req.body is not None else "nil"
        lines.append(
            f"  reqs[{number}] = wrk.format({_lua_string(req.method)},"
            f" {_lua_string(req.path)}, {{{headers}}}, {body})"
        )
    lines += [
        "  math.randomseed(os.time() + math.floor(os.clock() * 1000000))",
        "end",
        "request = function() return reqs[math.random(#reqs)] end",
    ]
    return "\n".join(lines) + "\n"


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk time {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def _run_wrk(
    url: str, requests: Sequence[Request], duration: float, timeout: float
) -> LoadResult:
    seconds = max(1, math.ceil(duration))  # wrk counts whole seconds
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_wrk_script(requests))
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(2, CONCURRENCY)}",
                f"-c{CONCURRENCY}",
                f"-d{seconds}s",
                f"--timeout={int(timeout)}s",
                "--latency",
                "-s",
                script.name,
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(script.name)
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not done:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    total = int(done.group(1))
    failures = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        failures += int(non2xx.group(1))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if errors:
        failures += sum(int(x) for x in errors.groups())
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    return LoadResult(
        total,
        min(failures, total),
        float(seconds),
        _wrk_ms(pct["50"]) if "50" in pct else float("nan"),
        _wrk_ms(pct["99"]) if "99" in pct else float("nan"),
    )


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _aiohttp_load(
    url: str,
    requests: list[Request],
    duration: float,
    timeout: float,
    count: int | None = None,
) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    counts = {"requests": 0, "failures": 0}
    unsent = [count if count is not None else math.inf]
    started = time.monotonic()
    deadline = started + duration
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=client_timeout
    ) as session:

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline and unsent[0] > 0:
                unsent[0] -= 1
                req = rng.choice(requests)
                sent = time.monotonic()
                try:
                    async with session.request(
                        req.method, url + req.path, headers=req.headers, data=req.body
                    ) as response:
                        await response.read()
                        ok = 200 <= response.status < 400
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                if time.monotonic() > deadline:
                    return  # finished after the end: not counted, as with wrk
                counts["requests"] += 1
                counts["failures"] += not ok
                latencies.append((time.monotonic() - sent) * 1000)

        workers = [asyncio.create_task(worker(n)) for n in range(CONCURRENCY)]
        await asyncio.wait(workers, timeout=duration + 1)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return {
        **counts,
        # A run of a fixed count lasts as long as it takes.
        "seconds": duration if count is None else time.monotonic() - started,
        "p50_ms": _percentile(latencies, 0.5),
        "p99_ms": _percentile(latencies, 0.99),
    }


def _run_aiohttp(
    url: str,
    requests: Sequence[Request],
    duration: float,
    timeout: float,
    count: int | None = None,
) -> LoadResult:
    spec = {
        "url": url,
        "duration": duration,
        "timeout": timeout,
        "count": count,
        "requests": [vars(r) for r in requests],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    try:
        out = subprocess.run(
            [str(PYTHON), __file__, "load", handle.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    return LoadResult(**json.loads(out))


def load(
    server: Server,
    requests: Sequence[Request],
    duration: float,
    timeout: float = 10.0,
) -> LoadResult:
    """``CONCURRENCY`` connections sending random picks of ``requests`` to ``server``
    for ``duration`` seconds; wrk if installed, else an aiohttp client process.

    The server's CPU time per request is measured too: unlike the rate, it hardly
    depends on what else the machine is doing.
    """
    run = _run_wrk if have_wrk() else _run_aiohttp
    cpu = server.cpu_seconds()
    result = run(server.url, requests, duration, timeout)
    server.wait_idle(limit_s=timeout * 2)
    if result.requests:
        result.cpu_ms = (server.cpu_seconds() - cpu) * 1000 / result.requests
    return result


def send(
    server: Server, requests: Sequence[Request], count: int, timeout: float = 600.0
) -> LoadResult:
    """Exactly ``count`` random picks of ``requests``, over ``CONCURRENCY``
    connections of an aiohttp client process, however long they take."""
    return _run_aiohttp(server.url, requests, timeout, timeout, count)


def best(results: Sequence[LoadResult]) -> LoadResult:
    """The least disturbed of repeated runs (other work shares this machine)."""
    return max(results, key=lambda r: r.rate)


@contextlib.contextmanager
def prober(url: str, duration: float, interval: float) -> Iterator[dict[str, Any]]:
    """Sequential GETs of ``url`` from a separate process while the block runs.

    The dict yielded is filled, after the block, with ``latencies_ms`` and
    ``failures``.
    """
    process = subprocess.Popen(
        [str(PYTHON), __file__, "probe", url, str(duration), str(interval)],
        stdout=subprocess.PIPE,
        text=True,
    )
    found: dict[str, Any] = {}
    try:
        yield found
    finally:
        out, _ = process.communicate(timeout=duration + 60)
        found.update(json.loads(out))


# -- subcommands run in their own processes -------------------------------------------


def _serve_bare(port: int, body_file: Path) -> None:
    from aiohttp import web

    body = json.loads(body_file.read_text())

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def _probe(url: str, duration: float, interval: float) -> None:
    host, _, rest = url.removeprefix("http://").partition("/")
    name, _, port = host.partition(":")
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + duration
    conn = http.client.HTTPConnection(name, int(port), timeout=30)
    while time.monotonic() < deadline:
        sent = time.monotonic()
        try:
            conn.request("GET", "/" + rest)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures += 1
            latencies.append((time.monotonic() - sent) * 1000)
        except (OSError, http.client.HTTPException):
            failures += 1
            conn.close()
            conn = http.client.HTTPConnection(name, int(port), timeout=30)
        time.sleep(max(0.0, interval - (time.monotonic() - sent)))
    conn.close()
    print(json.dumps({"latencies_ms": latencies, "failures": failures}))


def main(argv: list[str]) -> int:
    """Subcommands: ``serve-bare PORT BODY``, ``load SPEC``,
    ``probe URL S INTERVAL``."""
    if argv[:1] == ["serve-bare"]:
        _serve_bare(int(argv[1]), Path(argv[2]))
    elif argv[:1] == ["load"]:
        spec = json.loads(Path(argv[1]).read_text())
        result = asyncio.run(
            _aiohttp_load(
                spec["url"],
                [Request(**r) for r in spec["requests"]],
                spec["duration"],
                spec["timeout"],
                spec.get("count"),
            )
        )
        print(json.dumps(result))
    elif argv[:1] == ["probe"]:
        _probe(argv[1], float(argv[2]), float(argv[3]))
    else:
        print(main.__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
