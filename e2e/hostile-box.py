#!/usr/bin/env python3
"""A hostile box for the end-to-end tests: the forced command in place of
`zoffsite serve`, speaking (or abusing) the zoffsite protocol on stdin/stdout.

    hostile-box.py MODE LOG

MODE is what it does; LOG receives a line per request it read and, for a
`receive`, the stream bytes it was sent (LOG.stream), so a test can check
what the source let out. Frames: 1 kind byte (M message, D data, E end),
a 4-byte big-endian length, the body (crates/zoffsite-core/src/protocol.rs).

Modes:
  garbage         an HTTP error line, then random bytes forever
  endless         a valid hello, then 1 MiB data frames forever
  huge-message    a valid hello, then a message frame claiming 64 MiB,
                  then random bytes forever
  foreign-name    a listing that names a dataset the source did not ask for
  bad-name        a listing with a snapshot named "../../etc"
  dup-guid        a listing with one GUID twice
  fake-token      a listing with a well-formed resume token it made up
  long-token      a listing with a 1 MiB resume token
  wrong-guid      accepts a full stream, then claims a different GUID
"""
import json
import os
import struct
import sys

MODE, LOG = sys.argv[1], sys.argv[2]
out = sys.stdout.buffer
inp = sys.stdin.buffer


def log(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")


def frame(kind, body):
    out.write(kind + struct.pack(">I", len(body)) + body)
    out.flush()


def msg(obj):
    frame(b"M", json.dumps(obj).encode())


def read_frame():
    hdr = inp.read(5)
    if len(hdr) < 5:
        sys.exit(0)
    kind, n = hdr[:1], struct.unpack(">I", hdr[1:])[0]
    body = inp.read(n)
    return kind, body


def forever_random():
    while True:
        out.write(os.urandom(1 << 16))
        out.flush()


if MODE == "garbage":
    out.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    forever_random()

kind, body = read_frame()
hello = json.loads(body)
log("hello " + json.dumps(hello))
msg({"type": "hello", "protocol": "zoffsite", "version": 1, "server": "hostile", "root": "offsite/home"})

if MODE == "endless":
    chunk = b"D" + struct.pack(">I", 1 << 20) + bytes(1 << 20)
    while True:
        out.write(chunk)
        out.flush()

if MODE == "huge-message":
    out.write(b"M" + struct.pack(">I", 64 << 20))
    forever_random()

while True:
    kind, body = read_frame()
    if kind != b"M":
        continue
    req = json.loads(body)
    log("request " + req["type"])
    if req["type"] == "list":
        asked = req["datasets"]
        ds = [{"name": d, "exists": False, "snapshots": [], "resume_token": None} for d in asked]
        if MODE == "foreign-name":
            ds.append({"name": "otherpool/secret", "exists": False, "snapshots": [], "resume_token": None})
        elif MODE == "bad-name":
            ds[0] = {"name": asked[0], "exists": True,
                     "snapshots": [{"name": "../../etc", "guid": 7, "createtxg": 1}], "resume_token": None}
        elif MODE == "dup-guid":
            snaps = [{"name": "zoffsite-a", "guid": 7, "createtxg": 1}, {"name": "zoffsite-b", "guid": 7, "createtxg": 2}]
            ds[0] = {"name": asked[0], "exists": True, "snapshots": snaps, "resume_token": None}
        elif MODE == "fake-token":
            token = "1-" + os.urandom(5).hex() + "-c0-" + os.urandom(96).hex()
            ds[0] = {"name": asked[0], "exists": True, "snapshots": [], "resume_token": token}
        elif MODE == "long-token":
            ds[0] = {"name": asked[0], "exists": True, "snapshots": [], "resume_token": "1-" + "ab" * (1 << 19)}
        msg({"type": "listing", "datasets": ds})
    elif req["type"] == "receive":
        with open(LOG + ".stream", "ab") as f:
            while True:
                kind, body = read_frame()
                if kind == b"E":
                    break
                f.write(body)
        guid = int(req["guid"]) ^ 1 if MODE == "wrong-guid" else req["guid"]
        msg({"type": "received", "dataset": req["dataset"], "snapshot": req["snapshot"], "guid": guid})
    elif req["type"] == "bye":
        sys.exit(0)
    else:
        msg({"type": "error", "code": "refused", "message": "no"})
