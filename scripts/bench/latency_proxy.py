"""A TCP proxy that adds a fixed delay each way, so that every request/answer crosses a round trip
of `--rtt-ms` (netem is not available here). Each chunk is forwarded `rtt/2` after it arrived, in
order, so a stream keeps its throughput and gains latency, as on a long link.

    python3 scripts/bench/latency_proxy.py --listen 127.0.0.1:4600 --upstream 127.0.0.1:4566 --rtt-ms 50
"""

import argparse
import asyncio


async def pump(reader, writer, delay):
    queue = asyncio.Queue()

    async def send():
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            queue.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((0, None))
    try:
        await sender
    except ConnectionError:
        pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--rtt-ms", type=float, required=True)
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    uhost, uport = a.upstream.rsplit(":", 1)
    delay = a.rtt_ms / 2000.0

    async def handle(reader, writer):
        try:
            ureader, uwriter = await asyncio.open_connection(uhost, int(uport))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pump(reader, uwriter, delay), pump(ureader, writer, delay))

    server = await asyncio.start_server(handle, host, int(port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
