#!/usr/bin/env python3
"""larder serve against Debian's redis-server, measured with redis-benchmark.

    benches/server/compare.py [--rounds 3] [--quick] [--larder PATH]

Every cell (value size x command x pipeline depth) is run against every
server in the same round, the servers interleaved, for --rounds rounds; the
median ops/s and p99 of each are reported, with larder's ratio to each
redis. The servers, all on 127.0.0.1 and fresh for the run:

  larder       larder serve, memory only
  larder+disk  larder serve with a disk tier (write-behind: every write reaches disk)
  redis        redis-server, persistence off (--save "" --appendonly no)
  redis+aof    redis-server, appendonly yes, appendfsync everysec (the durable peer)

and, through one nutcracker (twemproxy) each, larder and redis again
(64-byte values). 50 clients, 100,000 random keys; SET runs before GET, so
GETs hit. Prints a Markdown table (docs/benchmarks.md records it).
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait(port):
    for _ in range(400):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"nothing answers on port {port}")


class Server:
    def __init__(self, name, argv, port, tmp):
        self.name, self.port = name, port
        self.log = open(os.path.join(tmp, name + ".log"), "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        wait(port)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


LARDER_ARGS = []


def larder(path, tmp, name, disk):
    port = free_port()
    argv = [path, "serve", "--listen", f"127.0.0.1:{port}", "--memory-mib", "2048"] + LARDER_ARGS
    if disk:
        argv += ["--disk-dir", os.path.join(tmp, name), "--disk-mib", "4096"]
    return Server(name, argv, port, tmp)


def redis(tmp, name, aof):
    port = free_port()
    d = os.path.join(tmp, name)
    os.makedirs(d)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
    return Server(name, argv, port, tmp)


def nutcracker(tmp, name, backend):
    port, stats = free_port(), free_port()
    conf = os.path.join(tmp, name + ".yml")
    with open(conf, "w") as f:
        f.write(
            f"p:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: fnv1a_64\n"
            f"  distribution: ketama\n  auto_eject_hosts: false\n  timeout: 5000\n"
            f"  preconnect: true\n  servers:\n   - 127.0.0.1:{backend.port}:1 node1\n"
        )
    binary = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
    return Server(name, [binary, "-c", conf, "-s", str(stats), "-a", "127.0.0.1"], port, tmp)


def bench(port, test, size, pipeline, n):
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50", "-n", str(n),
         "-r", "100000", "-d", str(size), "-P", str(pipeline), "-t", test, "--csv"],
        capture_output=True, text=True, timeout=600,
    )
    lines = [l for l in out.stdout.splitlines() if l.startswith(f'"{test.upper()}"')]
    if out.returncode != 0 or not lines or "error" in out.stdout.lower() + out.stderr.lower():
        sys.exit(f"redis-benchmark failed on port {port}: {out.stdout}{out.stderr}")
    fields = [f.strip('"') for f in lines[-1].split(",")]
    return float(fields[1]), float(fields[6])  # ops/s, p99 ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer requests, one round")
    ap.add_argument("--larder", default=os.path.join(ROOT, "target/release/larder"))
    ap.add_argument("--larder-args", default="", help="more flags for every larder serve")
    args = ap.parse_args()
    LARDER_ARGS.extend(args.larder_args.split())
    rounds = 1 if args.quick else args.rounds
    scale = 10 if args.quick else 1
    tmp = tempfile.mkdtemp(prefix="larder-compare-")
    servers = [
        larder(args.larder, tmp, "larder", False),
        larder(args.larder, tmp, "larder+disk", True),
        redis(tmp, "redis", False),
        redis(tmp, "redis+aof", True),
    ]
    proxied = [
        nutcracker(tmp, "nc:larder", servers[0]),
        nutcracker(tmp, "nc:redis", servers[2]),
    ]
    cells = [(size, test, p) for size in (64, 4096) for p in (1, 16) for test in ("set", "get")]
    cells += [("nc", test, p) for p in (1, 16) for test in ("set", "get")]
    results = {}
    try:
        for r in range(rounds):
            for cell in cells:
                size, test, p = cell
                n = (100_000 if p == 1 else 400_000) // scale
                targets = proxied if size == "nc" else servers
                for s in targets:
                    results.setdefault((cell, s.name), []).append(
                        bench(s.port, test, 64 if size == "nc" else size, p, n))
            print(f"round {r + 1} of {rounds} done", file=sys.stderr)
    finally:
        for s in proxied + servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(cell, name):
        runs = results[(cell, name)]
        return statistics.median(x[0] for x in runs), statistics.median(x[1] for x in runs)

    print("| value | command | -P | larder ops/s (p99 ms) | larder+disk | redis | redis+aof "
          "| larder / redis | larder+disk / redis+aof |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cell in cells:
        size, test, p = cell
        if size == "nc":
            continue
        m = {n: med(cell, n) for n in ("larder", "larder+disk", "redis", "redis+aof")}
        f = lambda n: f"{m[n][0]:,.0f} ({m[n][1]:.2f})"
        print(f"| {size} B | {test.upper()} | {p} | {f('larder')} | {f('larder+disk')} | {f('redis')} "
              f"| {f('redis+aof')} | {m['larder'][0] / m['redis'][0]:.2f} "
              f"| {m['larder+disk'][0] / m['redis+aof'][0]:.2f} |")
    print()
    print("| through nutcracker, 64 B | -P | larder ops/s (p99 ms) | redis ops/s (p99 ms) | larder / redis |")
    print("|---|---|---|---|---|")
    for cell in cells:
        size, test, p = cell
        if size != "nc":
            continue
        a, b = med(cell, "nc:larder"), med(cell, "nc:redis")
        print(f"| {test.upper()} | {p} | {a[0]:,.0f} ({a[1]:.2f}) | {b[0]:,.0f} ({b[1]:.2f}) | {a[0] / b[0]:.2f} |")


if __name__ == "__main__":
    main()
