"""Writing a streamed answer to a client that may have stopped reading.

A write waits only when it takes the transport's buffer past its high-water mark (the transport then
pauses its protocol until the client reads); only such a write is timed, since a timer per write would
cost more than the write itself. A client that takes nothing within the time given would otherwise hold
its call, and a connection to the provider, for as long as it stays connected.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

CHUNK_FRAMING = 32  # bytes HTTP's chunked encoding adds around a chunk (its length line, CRLFs, the last chunk)


async def write_within(request: web.Request, response: web.StreamResponse, data: bytes, seconds: float,
                       eof: bool = False) -> None:
    """Write ``data`` to the client (``eof``: as the answer's last); raises :class:`TimeoutError` when the
    client has not taken it within ``seconds``."""
    write = response.write_eof(data) if eof else response.write(data)
    transport = request.transport
    if transport is not None and (transport.get_write_buffer_size() + len(data) + CHUNK_FRAMING
                                  <= transport.get_write_buffer_limits()[1]):
        await write  # cannot wait on the client
        return
    async with asyncio.timeout(seconds):
        await write
