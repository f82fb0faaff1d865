#!/usr/bin/env python3
"""A shadow for the mirroring benchmark: an HTTP/1.1 keep-alive server on 127.0.0.1 that reads
each request (head and Content-Length body), waits DELAY seconds, then answers 200.

    slow_shadow.py PORT [DELAY]      # DELAY defaults to 2.0

Stops on SIGTERM or SIGINT."""

import asyncio
import signal
import sys


async def serve(reader, writer, delay):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(delay)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nshadow\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port, delay):
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, delay), "127.0.0.1", port, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 2.0))
