"""A minimal client of the policy protocol, for cotrain's own harnesses (`cotrain sim eval --server`).

It speaks what openpi-client's `WebsocketClientPolicy` speaks (server.py), without that package's
numpy<2 pin. Unlike openpi's client it does not retry a refused connection: a harness pointed at
the wrong port should fail at once, with a one-line error.
"""

from __future__ import annotations

from typing import Any, cast

from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException
from websockets.sync.client import ClientConnection, connect

from cotrain.errors import ConfigError
from cotrain.serve.codec import MAX_MESSAGE_BYTES, pack, unpack

__all__ = ["PolicyClient"]


class PolicyClient:
    """One connection to a policy server: `metadata` from the handshake, `infer(obs) -> {"actions": ...}`.

    Args:
        url: `ws://HOST:PORT`.
        timeout_s: longest wait for the connection and for each reply.
    """

    def __init__(self, url: str, timeout_s: float = 300.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        try:
            self._ws: ClientConnection = connect(url, compression=None, max_size=MAX_MESSAGE_BYTES,
                                                 open_timeout=timeout_s)
            # The server sends binary frames only; recv() is typed str | bytes for text frames.
            self.metadata: dict[str, Any] = unpack(cast(bytes, self._ws.recv(timeout_s)))
        except (OSError, InvalidURI, WebSocketException, TimeoutError) as exc:
            raise ConfigError(f"--server {url}: cannot connect to a policy server ({exc})") from None

    def infer(self, observation: dict[str, Any]) -> dict[str, Any]:
        """The server's reply to one observation; a ConfigError carrying the server's message on error."""
        try:
            self._ws.send(pack(observation))
            reply = self._ws.recv(self.timeout_s)
        except (ConnectionClosed, TimeoutError) as exc:
            raise ConfigError(f"--server {self.url}: connection lost ({exc})") from None
        if isinstance(reply, str):  # the protocol's error frame
            raise ConfigError(f"--server {self.url}: {reply}")
        return unpack(reply)

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
