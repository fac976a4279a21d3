"""The load generator of `benchmarks/serve_load.py`: one point of load on a running `geep serve`, in its own process.

Reads one JSON job on stdin, writes one JSON result on stdout:

- ``{"mode": "open", "rate": R, "requests": N, "max_s": S, ...}``: open-loop Poisson arrivals at R requests/s, N
  requests or S seconds of sending, whichever ends first. Each request is sent at its scheduled time whatever
  happened to the others, and its latency is measured from that scheduled time, so a slow client or a full
  connection pool cannot hide queueing.
- ``{"mode": "closed", "clients": C, "requests": N, "max_s": S, ...}``: C clients, each sending its next request as
  soon as its last is answered; latency from each send.

Every request carries one text (``texts``, drawn with ``seed``). The result has, per request, [latency s, HTTP
status (0: no response), exit layer or null], the wall time of the point (first scheduled send to last answer)
and this process's CPU time over it, so the report can say how much of a core the client itself used.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import httpx


async def _send(http: httpx.AsyncClient, text: str, start: float, loop: asyncio.AbstractEventLoop) -> list:
    try:
        r = await http.post("/predict", json={"inputs": text})
    except httpx.HTTPError:
        return [loop.time() - start, 0, None]
    layer = r.json()["predictions"][0]["exit_layer"] if r.status_code == 200 else None
    return [loop.time() - start, r.status_code, layer]


async def open_loop(http: httpx.AsyncClient, texts: list[str], rate: float, n: int, max_s: float,
                    rng: random.Random) -> tuple[list, float]:
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.05
    scheduled, t = [], begin
    for _ in range(n):
        if t - begin > max_s:
            break
        scheduled.append(t)
        t += rng.expovariate(rate)
    tasks = []
    for at in scheduled:
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(_send(http, rng.choice(texts), at, loop)))
    results = await asyncio.gather(*tasks)
    return results, loop.time() - begin


async def closed_loop(http: httpx.AsyncClient, texts: list[str], clients: int, n: int, max_s: float,
                      rng: random.Random) -> tuple[list, float]:
    loop = asyncio.get_running_loop()
    begin = loop.time()
    results: list = []

    async def client() -> None:
        while len(results) < n and loop.time() - begin < max_s:
            slot = len(results)
            results.append(None)  # claim a slot before sending, so at most n requests go out
            results[slot] = await _send(http, rng.choice(texts), loop.time(), loop)

    await asyncio.gather(*(client() for _ in range(clients)))
    return [r for r in results if r is not None], loop.time() - begin


async def run(job: dict) -> dict:
    rng = random.Random(job.get("seed", 0))
    limits = httpx.Limits(max_connections=job.get("max_connections", 1024), max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=job["url"], timeout=job.get("timeout_s", 60.0), limits=limits) as http:
        cpu = time.process_time()
        if job["mode"] == "open":
            results, wall = await open_loop(http, job["texts"], job["rate"], job["requests"], job["max_s"], rng)
        else:
            results, wall = await closed_loop(http, job["texts"], job["clients"], job["requests"], job["max_s"], rng)
        cpu = time.process_time() - cpu
    return {"results": results, "wall_s": wall, "client_cpu_s": cpu}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.load(sys.stdin)))))
