"""Serving a trained run over openpi's websocket policy protocol (docs/serving.md).

codec.py: msgpack-numpy frames; obs_map.py: client keys -> cameras, state, prompt; batching.py:
concurrent requests -> one forward pass; server.py: the websocket server; client.py: a small client
for cotrain's own harnesses. Needs the `serve` extra (websockets, msgpack).
"""
