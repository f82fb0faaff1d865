#!/usr/bin/env python3
"""The two ends of benches/instructions.sh, outside the measured process.

  load.py upstream PORT_FILE [SIZE]
                                  a keep-alive HTTP/1.1 server answering every request with
                                  200 and a body of SIZE bytes (default 3, "ok\\n"); writes its
                                  port to PORT_FILE
  load.py client HOST:PORT N C    N GET requests over C keep-alive connections; exits 1 unless
                                  every answer is 200
"""
import asyncio
import sys



def answer(size):
    body = b"ok\n" if size == 3 else b"x" * size
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-type: text/plain\r\n\r\n" % size + body


ANSWER = answer(3)


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def upstream(port_file):
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    with open(port_file, "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


async def one_connection(host, port, n, failures):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
    request = f"GET / HTTP/1.1\r\nhost: bench\r\n\r\n".encode()
    for _ in range(n):
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        status = head.split(b" ", 2)[1]
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await asyncio.wait_for(reader.readexactly(length), 30)
        if status != b"200":
            failures.append(status)
    writer.close()


async def client(addr, n, c):
    host, port = addr.rsplit(":", 1)
    failures = []
    per = [n // c + (1 if i < n % c else 0) for i in range(c)]
    await asyncio.gather(*(one_connection(host, int(port), k, failures) for k in per))
    if failures:
        print(f"{len(failures)} of {n} answers were not 200: {failures[:5]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "upstream":
        if len(sys.argv) > 3:
            ANSWER = answer(int(sys.argv[3]))
        asyncio.run(upstream(sys.argv[2]))
    else:
        asyncio.run(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
