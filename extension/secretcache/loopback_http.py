"""A minimal HTTP/1.1 client for loopback calls at start-up: one request per socket.

Built on ``_socket`` alone (``socket.py`` imports enum and selectors, and ``http.client`` the
email package: milliseconds the exec wrapper cannot spare on a cold start).
"""

from __future__ import annotations

import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds at start
if TYPE_CHECKING:
    from collections.abc import Mapping

#: Connections refused are retried this long: outside Lambda the server may still be starting.
CONNECT_RETRY_SECONDS = 2.0


def http_call(
    address: tuple[str, int],
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes | None,
    deadline: float,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on its own socket; the response read by its Content-Length.

    No ``Connection: close``: the extension's fast path serves plain GETs only, and the wrapper
    must not wait for aiohttp to load when it need not.
    """
    import _socket  # socket.py imports enum, selectors, ...: milliseconds this does not need

    give_up = min(deadline, time.monotonic() + CONNECT_RETRY_SECONDS)
    while True:
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.connect(address)
            break
        except ConnectionRefusedError:
            sock.close()
            # Lambda starts the runtime after the extension bound its socket; elsewhere (RIE,
            # a by-hand run) the extension may still be starting: wait a little, not forever.
            if time.monotonic() + 0.02 > give_up:
                raise
            time.sleep(0.02)
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {address[0]}:{address[1]}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        data = b""
        while b"\r\n\r\n" not in data:
            data += _recv(sock, deadline)
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        length = None
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            while True:
                chunk = _recv(sock, deadline, allow_eof=True)
                if not chunk:
                    return status, rest
                rest += chunk
        while len(rest) < length:
            rest += _recv(sock, deadline)
        return status, rest[:length]
    finally:
        sock.close()


def _recv(sock: object, deadline: float, allow_eof: bool = False) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    sock.settimeout(remaining)  # type: ignore[attr-defined]
    chunk: bytes = sock.recv(65536)  # type: ignore[attr-defined]
    if not chunk and not allow_eof:
        raise ConnectionError("the connection closed mid-response")
    return chunk
