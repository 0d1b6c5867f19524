#!/usr/bin/env python3
"""A small fsx: random reads, writes, truncates, mmap reads and writes, fsyncs
and reopens of one file, checked against an in-memory model after every
operation. Usage: fsx.py FILE SEED OPS. Exits non-zero with the failing op."""
import mmap
import os
import random
import sys

path, seed, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
MAXLEN = 1 << 20
model = bytearray()
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
log = []


def fail(msg):
    print(f"fsx seed {seed}: {msg}\nlast ops:\n  " + "\n  ".join(log[-12:]), file=sys.stderr)
    sys.exit(1)


def check(off, n):
    got = os.pread(fd, n, off)
    want = bytes(model[off:off + n])
    if got != want:
        bad = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
        fail(f"read {off}+{n}: mismatch at {off + bad} (got {len(got)} bytes, want {len(want)})")


for i in range(ops):
    op = rng.choice(["write", "write", "read", "truncate", "mapread", "mapwrite", "fsync", "reopen"])
    size = len(model)
    if op == "write":
        off = rng.randrange(0, MAXLEN)
        n = rng.randrange(1, 64 << 10)
        data = rng.randbytes(n)
        log.append(f"{i} write {off}+{n}")
        os.pwrite(fd, data, off)
        if off > size:
            model.extend(b"\0" * (off - size))
        model[off:off + n] = data
    elif op == "read" and size:
        off = rng.randrange(0, size)
        n = rng.randrange(1, 64 << 10)
        log.append(f"{i} read {off}+{n}")
        check(off, n)
    elif op == "truncate":
        n = rng.randrange(0, MAXLEN)
        log.append(f"{i} truncate {n}")
        os.ftruncate(fd, n)
        if n < size:
            del model[n:]
        else:
            model.extend(b"\0" * (n - size))
    elif op in ("mapread", "mapwrite") and size:
        off = rng.randrange(0, size)
        n = min(rng.randrange(1, 64 << 10), size - off)
        log.append(f"{i} {op} {off}+{n}")
        m = mmap.mmap(fd, size)
        if op == "mapread":
            if m[off:off + n] != bytes(model[off:off + n]):
                fail(f"mapread {off}+{n}: mismatch")
        else:
            data = rng.randbytes(n)
            m[off:off + n] = data
            model[off:off + n] = data
            m.flush()
        m.close()
    elif op == "fsync":
        log.append(f"{i} fsync")
        os.fsync(fd)
    elif op == "reopen":
        log.append(f"{i} reopen")
        os.close(fd)
        fd = os.open(path, os.O_RDWR)
    if os.fstat(fd).st_size != len(model):
        fail(f"size {os.fstat(fd).st_size} != model {len(model)}")
check(0, len(model) + 10)
os.close(fd)
if open(path, "rb").read() != bytes(model):
    fail("final content differs")
print(f"fsx seed {seed}: {ops} ops ok, final size {len(model)}")
