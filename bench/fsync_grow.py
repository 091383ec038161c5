#!/usr/bin/env python3
# fsync_grow.py DIR — CPU per fdatasync of a small write, by how the file's
# size behaves: "append" grows it on every write (a turn.ring slot written
# past its end), "sized" was ftruncate'd to 4 MiB first (sparse, size fixed),
# "written" was written full first.  1500 x (300-byte pwrite + fdatasync)
# each, the three alternated twice.  docs/benchmarks.md "Concurrency" (H4).
import os, time, resource, sys
d = sys.argv[1]
def run(mode, n=1500):
    p = os.path.join(d, 'f-'+mode)
    if os.path.exists(p): os.unlink(p)
    fd = os.open(p, os.O_RDWR|os.O_CREAT, 0o600)
    if mode == 'sized':
        os.ftruncate(fd, 4<<20)
    if mode == 'written':
        os.pwrite(fd, b'\0'*(1<<20), 0); os.fdatasync(fd)
    os.fdatasync(fd)
    r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.time()
    off = 0
    for i in range(n):
        os.pwrite(fd, b'x'*300, off); off += 300
        os.fdatasync(fd)
    r1 = resource.getrusage(resource.RUSAGE_SELF); t1 = time.time()
    cpu = (r1.ru_utime+r1.ru_stime - r0.ru_utime-r0.ru_stime)/n*1e6
    print(f"{mode:8s} cpu {cpu:6.1f} us/sync, wall {(t1-t0)/n*1e6:7.1f} us/sync")
    os.close(fd); os.unlink(p)
for rep in range(2):
    for m in ['append','sized','written']: run(m)
