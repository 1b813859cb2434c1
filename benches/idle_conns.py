#!/usr/bin/env python3
"""Holds N idle keep-alive HTTP/1.1 connections to a proxy: each sends one GET, reads its
whole answer (by Content-Length) and then stays open, idle. Prints "held N" once every
connection has had its answer, then waits for a line on stdin and closes them all
("closed"). Source addresses rotate over 127.0.0.1-127.0.0.8 so that 50,000 connections
to one port fit in the ephemeral port range.

    benches/idle_conns.py <port> <connections> [path]
"""

import asyncio
import resource
import socket
import sys


async def one(port, path, src, ready):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((src, 0))
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    buf = b""
    while True:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ConnectionError("closed before the answer")
        buf += chunk
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            continue
        length = 0
        for line in buf[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if len(buf) >= end + 4 + length:
            break
    ready.append(sock)


async def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    path = sys.argv[3] if len(sys.argv) > 3 else "/pass"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ready = []
    failed = 0
    batch = 500
    for start in range(0, n, batch):
        tasks = [
            one(port, path, f"127.0.0.{1 + (i % 8)}", ready)
            for i in range(start, min(n, start + batch))
        ]
        for r in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(r, Exception):
                failed += 1
    print(f"held {len(ready)} failed {failed}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for s in ready:
        s.close()
    print("closed", flush=True)


asyncio.run(main())
