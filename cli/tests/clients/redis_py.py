#!/usr/bin/env python3
"""redis-py, unmodified, against a larder server: `redis_py.py HOST PORT`.

Runs the same checks with redis-py's default protocol (RESP3 with HELLO 3
in redis-py 8) and with protocol=2: plain commands, expiry, counters,
binary values, SCAN, errors, and plain and transactional pipelines. Any
failure raises; the last line is "redis-py: N checks passed".
"""

import sys

import redis

HOST, PORT = sys.argv[1], int(sys.argv[2])
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def run(r, tag):
    p = f"py:{tag}:"
    for k in list(r.scan_iter(match=p + "*")):
        r.delete(k)
    check(r.ping() is True, "PING")
    check(r.set(p + "a", "1") is True, "SET")
    check(r.get(p + "a") == b"1", "GET")
    check(r.get(p + "missing") is None, "GET missing")
    check(r.incrby(p + "a", 41) == 42, "INCRBY")
    check(r.set(p + "a", "x", nx=True) is None, "SET NX on a present key")
    check(r.set(p + "t", "v", ex=100) is True, "SET EX")
    check(98 <= r.ttl(p + "t") <= 100, "TTL")
    check(r.persist(p + "t") is True and r.ttl(p + "t") == -1, "PERSIST")
    check(r.expire(p + "t", 50) is True and 48 <= r.ttl(p + "t") <= 50, "EXPIRE")
    check(r.getex(p + "t", persist=True) == b"v" and r.ttl(p + "t") == -1, "GETEX")
    check(r.mset({p + "m1": "1", p + "m2": "2"}) is True, "MSET")
    check(r.mget([p + "m1", p + "nope", p + "m2"]) == [b"1", None, b"2"], "MGET")
    check(r.exists(p + "m1", p + "m2", p + "nope") == 2, "EXISTS")
    check(r.delete(p + "m1", p + "nope") == 1, "DEL")
    blob = bytes(range(256)) * 64
    check(r.set(p + "bin\x00\r\n", blob) is True, "SET binary")
    check(r.get(p + "bin\x00\r\n") == blob, "GET binary")
    check(r.append(p + "s", "ab") == 2 and r.strlen(p + "s") == 2, "APPEND")
    check(r.type(p + "s") in (b"string", "string"), "TYPE")
    try:
        r.incr(p + "s")
        check(False, "INCR on text raises")
    except redis.ResponseError as e:
        check("not an integer" in str(e), "INCR error text")
    for i in range(300):
        r.set(f"{p}scan:{i}", i)
    found = set(r.scan_iter(match=p + "scan:*", count=50))
    check(found == {f"{p}scan:{i}".encode() for i in range(300)}, "SCAN every key once")
    check(r.client_setname("tester") is True and r.client_getname() in (b"tester", "tester"), "CLIENT NAME")
    check(r.dbsize() >= 300, "DBSIZE")
    info = r.info()
    check("redis_version" in info, "INFO")

    # A plain pipeline: many commands, replies in order.
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"{p}pl:{i}", i)
        pipe.get(f"{p}pl:{i}")
    out = pipe.execute()
    check(out == [x for i in range(200) for x in (True, str(i).encode())], "pipeline")

    # A transactional pipeline: MULTI … EXEC, applied whole.
    pipe = r.pipeline(transaction=True)
    pipe.set(p + "tx", 1).incr(p + "tx").incrby(p + "tx", 10).get(p + "tx")
    check(pipe.execute() == [True, 2, 12, b"12"], "MULTI/EXEC")
    # An error inside EXEC is returned in its place; the rest is applied.
    pipe = r.pipeline(transaction=True)
    pipe.set(p + "tx2", "text").incr(p + "tx2").set(p + "tx3", "ok")
    try:
        pipe.execute()
        check(False, "EXEC with an error raises")
    except redis.ResponseError:
        check(r.get(p + "tx3") == b"ok", "the rest of EXEC applied")
    # WATCH is not supported: a pipeline without it works on.
    check(r.delete(*[f"{p}pl:{i}" for i in range(200)]) == 200, "DEL many")


for proto in (None, 2):
    kwargs = {} if proto is None else {"protocol": proto}
    r = redis.Redis(host=HOST, port=PORT, **kwargs)
    tag = "default" if proto is None else "resp2"
    # HELLO with no version tells the connection's protocol: redis-py's
    # default is RESP3 (a map); protocol=2 stays on RESP2 (a flat list).
    hello = r.execute_command("HELLO")
    if proto is None:
        check(isinstance(hello, dict) and hello[b"proto"] == 3, f"RESP3 by default: {hello}")
    else:
        check(isinstance(hello, list) and hello[hello.index(b"proto") + 1] == 2, f"RESP2: {hello}")
    run(r, tag)
    r.close()

print(f"redis-py {redis.__version__}: {checks} checks passed")
