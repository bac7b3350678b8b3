"""The control socket: one JSON request per connection, one JSON response.

The agent listens on ``<run dir>/control.sock`` (mode 0600, or 0660 with group
``hostsec`` when that group exists). ``hostsec status``, ``up``, ``down`` and ``keys`` are
clients. A request is ``{"command": NAME, ...arguments}`` on one line; the response is
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": MESSAGE}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("hostsec.control")

SOCKET_NAME = "control.sock"
MAX_REQUEST = 64 * 1024

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlError(Exception):
    """A request failed; the message is for the operator."""


def socket_path(run_dir: Path) -> Path:
    return run_dir / SOCKET_NAME


class ControlServer:
    """Serves requests on the control socket with ``handlers[command](request)``."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o177)
        try:
            # A deep backlog: many `hostsec up --wait` clients may connect at once.
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), backlog=1024
            )
        finally:
            os.umask(old)
        mode = 0o600
        try:
            gid = grp.getgrnam("hostsec").gr_gid
            os.chown(self.path, -1, gid)
            mode = 0o660
        except KeyError:
            pass
        os.chmod(self.path, mode)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            if len(line) > MAX_REQUEST:
                raise ControlError("request too large")
            try:
                request = json.loads(line)
            except ValueError:
                raise ControlError("request is not JSON") from None
            if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                raise ControlError("request needs a command")
            handler = self.handlers.get(request["command"])
            if handler is None:
                raise ControlError(f"unknown command {request['command']!r}")
            result = await handler(request)
            response: dict[str, Any] = {"ok": True, "result": result}
        except ControlError as exc:
            response = {"ok": False, "error": str(exc)}
        except (TimeoutError, ConnectionError):
            writer.close()
            return
        except Exception as exc:  # never let one request take the agent down
            log.exception("control request failed")
            response = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
        try:
            writer.write(json.dumps(response).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def request(
    run_dir: Path, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0
) -> Any:
    """Send one request to the agent of ``run_dir``; the result, or ControlError."""
    path = socket_path(run_dir)
    payload = json.dumps({"command": command, **(arguments or {})}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(payload)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except FileNotFoundError:
        raise ControlError(f"no agent is running ({path} does not exist)") from None
    except PermissionError:
        raise ControlError(f"permission denied on {path} (run as root)") from None
    except (ConnectionRefusedError, TimeoutError) as exc:
        raise ControlError(f"the agent does not answer on {path}: {exc}") from None
    try:
        response = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError("the agent sent no valid response") from None
    if not response.get("ok"):
        raise ControlError(str(response.get("error", "request failed")))
    return response.get("result")
