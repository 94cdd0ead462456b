#!/usr/bin/python3
"""The disk's own limit for durable Maildir writes.

Each thread repeats what a durable Maildir delivery does for one message, and nothing else:
open(tmp/NAME, O_CREAT|O_EXCL), write SIZE bytes, fsync, close, rename(tmp/NAME, new/NAME),
open(new/), fsync, close. Prints one line of JSON: files/s per thread count.

    disk_rate.py DIR [--threads 1,16] [--seconds 3] [--size 1024]

DIR is made (DIR/tN/tmp/ and DIR/tN/new/ per thread count) and removed afterwards. Run it
on the file system the Maildir is on.
"""

import argparse
import json
import os
import shutil
import threading
import time


def worker(root, size, deadline, counts, idx):
    tmp = os.path.join(root, "tmp")
    new = os.path.join(root, "new")
    data = b"x" * (size - 2) + b"\r\n"
    n = 0
    pid = os.getpid()
    while time.monotonic() < deadline:
        name = "%d.%d_%d_%d.bench" % (int(time.time()), pid, idx, n)
        src = os.path.join(tmp, name)
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(src, os.path.join(new, name))
        dfd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        n += 1
    counts[idx] = n


def run(root, threads, seconds, size):
    root = os.path.join(root, "t%d" % threads)
    for sub in ("tmp", "new"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    counts = [0] * threads
    start = time.monotonic()
    deadline = start + seconds
    pool = [
        threading.Thread(target=worker, args=(root, size, deadline, counts, i))
        for i in range(threads)
    ]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - start
    return sum(counts) / elapsed


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--threads", default="1,16")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--size", type=int, default=1024)
    a = p.parse_args()
    result = {}
    # Files are removed only at the end: on ext4 without a journal, inodes deleted in the
    # last ~30 s are skipped one by one when a new one is allocated (recently_deleted()),
    # which would slow the runs after a removal.
    try:
        for t in [int(x) for x in a.threads.split(",")]:
            result[str(t)] = round(run(a.dir, t, a.seconds, a.size), 1)
    finally:
        shutil.rmtree(a.dir, ignore_errors=True)
    print(json.dumps({"files_per_s": result, "size": a.size, "seconds": a.seconds}))


if __name__ == "__main__":
    main()
