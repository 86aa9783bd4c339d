#!/usr/bin/env python3
"""Opens N client connections to ADDR, makes one call on each (kept alive),
and prints the serving process's resident memory before and after, per
connection. Used by bench/idle-memory.sh.

    idle_connections.py HOST:PORT PID N PATH HEADER_LINE NAME
"""
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


def read_answer(conn):
    """Reads one answer framed by Content-Length; returns its status line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise SystemExit("connection closed before an answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head.split(b"\r\n")[0].decode()


def main():
    addr, pid, n, path, header, name = sys.argv[1:7]
    host, port = addr.rsplit(":", 1)
    pid, n = int(pid), int(n)
    extra = f"{header}\r\n" if header else ""
    call = f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode()
    before = rss_kib(pid)
    conns = []
    for _ in range(n):
        conn = socket.create_connection((host, int(port)))
        conn.sendall(call)
        conns.append(conn)
    for conn in conns:
        status = read_answer(conn)
        if " 200 " not in status:
            raise SystemExit(f"{name}: {status}")
    # Past the gateway's 1 s before an idle connection is parked, and its
    # allocator's delay before freed memory goes back to the system.
    time.sleep(3)
    after = rss_kib(pid)
    print(f"{name:<28} {before:>12} {after:>12} {(after - before) / n:>10.1f}")
    for conn in conns:
        conn.close()


if __name__ == "__main__":
    main()
