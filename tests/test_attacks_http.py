"""Hostile HTTP clients (issue 14, finding 5): bodies bounded while read, the key and the
session before the body, large JSON off the event loop.

The server is a real ``dunmail run`` in its own process, as the red team attacked it, so its
memory (``VmHWM`` in ``/proc``) and its event loop are its own and the client's timing is not
the server's. Attacks go through a raw socket (:func:`_push`): it writes the body chunk by
chunk while it waits for the answer, and counts what it had written when the answer came and
when the server closed the connection, so "the body was not read" is a number (a server that
reads everything answers only after all of it). Runs on SQLite and PostgreSQL (``db_url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_cli import _env, in_process, write_config
from tests.test_run import _free_port, _get

MiB = 1024 * 1024
ATTACK_BYTES = 48 * MiB  # the red team's body
MAX_BODY = 4 * MiB  # web.max_body_bytes's default: the upserts
MAX_FORM = 64 * 1024  # web.max_form_bytes's default: everything else
# Written before the answer came: the limit (at most), plus what the two sockets' buffers hold
# on loopback. A server that reads the whole body first lets all 48 MB through.
UNREAD = 16 * MiB
# Written before the server closed the connection: after an early answer it reads on (and
# discards) at most the limit again, for at most 2 s (limits.LINGER_SECONDS).
CUT_SHORT = ATTACK_BYTES // 2
CHUNK = b"x" * (64 * 1024)


@dataclass(frozen=True)
class Server:
    """A running ``dunmail run``: its process, web port and an API key of tenant acme."""

    process: subprocess.Popen[str]
    port: int
    key: str

    def peak_rss(self) -> int:
        """The process's peak resident memory so far, in bytes (Linux ``VmHWM``)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024


@contextlib.contextmanager
def running_engine(workdir: Path, db_url: str, **env: str) -> Iterator[Server]:
    """``dunmail run`` on ``db_url`` (config in ``workdir``, default [web] limits, inbound SMTP
    off, a relay nobody listens on: nothing is sent) and an API key made by the CLI."""
    config = write_config(workdir, db_url, _free_port())
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dunmail.cli", "run", "--config", str(config)],
        cwd=workdir,
        env=_env(DUNMAIL_WEB__PORT=str(port), DUNMAIL_INBOUND__ENABLED="false", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _get(f"http://127.0.0.1:{port}/healthz") == '{"status":"ok"}'
        made = in_process(
            ["apikey", "create", "erp", "--tenant", "acme", "--config", str(config)],
            cwd=workdir,
            env=env,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        yield Server(process, port, made.stdout.strip().splitlines()[-1])
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert "Traceback" not in output, output[-5000:]


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[Server]:
    """:func:`running_engine` on this test's database."""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the server's memory from /proc (Linux)")
    with running_engine(tmp_path, db_url) as running:
        yield running


@dataclass(frozen=True)
class Answer:
    """What the server said; how much of the body the client had written when the answer came
    (``written``) and in all, until the server closed the connection or took it all (``total``)."""

    status: int
    headers: dict[str, str]
    body: bytes
    written: int
    total: int

    def json(self) -> Any:
        return json.loads(self.body)


async def push(port: int, head: str, body: Iterable[bytes], *, chunked: bool = False) -> Answer:
    """Send ``head`` then ``body`` (framed as chunks when ``chunked``) while reading the answer.

    A plain socket, not asyncio streams: a write refused because the server closed the
    connection must not discard an answer already received.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    written = 0

    async def pump() -> None:
        nonlocal written
        try:
            await loop.sock_sendall(sock, head.encode())
            for chunk in body:
                framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
                await loop.sock_sendall(sock, framed)
                written += len(chunk)
            if chunked:
                await loop.sock_sendall(sock, b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection on the upload

    async def receive(until: bytes | int, data: bytes) -> bytes:
        while (until not in data) if isinstance(until, bytes) else (len(data) < until):
            more = await loop.sock_recv(sock, 65536)
            if not more:
                raise ConnectionError(f"closed before the answer was whole: {data!r}")
            data += more
        return data

    pumping = asyncio.create_task(pump())
    try:
        data = await asyncio.wait_for(receive(b"\r\n\r\n", b""), timeout=120)
        seen = written
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        content = await receive(int(headers.get("content-length", "0")), rest)
        await asyncio.wait_for(pumping, timeout=60)
    finally:
        pumping.cancel()
        sock.close()
    return Answer(int(status_line.split()[1]), headers, content, seen, written)


def post_head(path: str, *, key: str | None = None, length: int | None = None, **more: str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in more.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def attack_body(size: int = ATTACK_BYTES) -> Iterator[bytes]:
    """``size`` bytes, made as they are sent (the client never holds them)."""
    for _ in range(size // len(CHUNK)):
        yield CHUNK


async def test_an_oversized_post_is_refused_without_reading_it(server: Server) -> None:
    """48 MB at /api/v1/customers, declared, chunked and with a lying length, with and without
    a key: each is answered long before 48 MB were written, and the server's peak memory does
    not grow by the body (today's main read it all, then parsed it, and only then checked the
    key: 470 MB for one such request)."""
    path = "/api/v1/customers"
    cases: list[tuple[str, str, bool, int]] = [
        # name, head, chunked, status
        ("declared, no key", post_head(path, length=ATTACK_BYTES), False, 413),
        ("chunked, no key", post_head(path), True, 401),
        ("declares 1000 bytes, sends 48 MB, no key", post_head(path, length=1000), False, 401),
        ("chunked, valid key", post_head(path, key=server.key), True, 413),
        ("declared, valid key", post_head(path, key=server.key, length=ATTACK_BYTES), False, 413),
    ]
    for name, head, chunked, status in cases:
        before = server.peak_rss()
        answer = await push(server.port, head, attack_body(), chunked=chunked)
        grown = server.peak_rss() - before
        assert answer.status == status, (name, answer)
        assert answer.written < UNREAD, f"{name}: {answer.written} bytes written before the answer"
        assert answer.total < CUT_SHORT, f"{name}: the server took {answer.total} bytes"
        assert grown < ATTACK_BYTES // 4, f"{name}: the server's peak memory grew {grown} bytes"
        if status == 413:
            assert "web.max_body_bytes" in answer.json()["detail"], answer
            assert answer.headers["connection"] == "close"
        else:
            assert answer.headers["www-authenticate"] == "Bearer"
    assert _get(f"http://127.0.0.1:{server.port}/healthz") == '{"status":"ok"}'


async def test_an_inbox_form_post_without_a_session_is_refused_before_the_form(
    server: Server,
) -> None:
    """The inbox's form posts check the session cookie before the form is read: no session,
    a redirect to sign in, and the upload stops there; a declared size over
    ``web.max_form_bytes`` is a 413."""
    form = "/inbox/threads/1/note"
    head = post_head(form).replace("application/json", "application/x-www-form-urlencoded")
    redirected = await push(server.port, head, attack_body(), chunked=True)
    assert redirected.status == 303, redirected
    assert redirected.headers["location"].startswith("/login?next=")
    assert redirected.written < UNREAD and redirected.total < CUT_SHORT, redirected
    declared = await push(server.port, post_head(form, length=MAX_FORM + 1), attack_body())
    assert declared.status == 413 and "web.max_form_bytes" in declared.json()["detail"]


def big_invoice(lines: int) -> bytes:
    """An invoice of ``lines`` lines, about 170 bytes each, whose last unit price is a float:
    it is parsed and validated to its end, then refused (422), so no import runs."""
    rows: list[dict[str, Any]] = [
        {
            "description": f"Consulting, phase {n}: " + "d" * 100,
            "quantity": "2",
            "unit_price": "9.50",
        }
        for n in range(lines)
    ]
    rows[-1]["unit_price"] = 12.5
    invoice = {
        "id": "i-big",
        "number": "INV-BIG",
        "customer": "C-1",
        "currency": "EUR",
        "issued_at": "2026-03-01",
        "due_at": "2026-03-31",
        "lines": rows,
    }
    return json.dumps(invoice).encode()


async def test_six_large_posts_at_once_leave_healthz_answering(server: Server) -> None:
    """Six authenticated invoices of almost web.max_body_bytes each, at once, while /healthz is
    asked every 50 ms: every /healthz answers (each within its client's 3 s timeout), every
    invoice gets its 422 naming the last line. The bodies are parsed and validated in worker
    threads; today's main did it on the event loop, half a second each, before the route ran."""
    lines = 22_000
    body = big_invoice(lines)
    assert MAX_FORM < len(body) <= MAX_BODY
    base = f"http://127.0.0.1:{server.port}"
    latencies: list[float] = []
    done = asyncio.Event()

    async def poll(client: httpx.AsyncClient) -> None:
        while not done.is_set():
            started = time.perf_counter()
            response = await client.get("/healthz")
            assert response.status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.05)

    headers = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
    async with (
        httpx.AsyncClient(base_url=base, timeout=3) as health,
        httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as api,
    ):
        polling = asyncio.create_task(poll(health))
        await asyncio.sleep(0.2)
        answers = await asyncio.gather(
            *(api.post("/api/v1/invoices", content=body) for _ in range(6))
        )
        done.set()
        await polling
    for answer in answers:
        assert answer.status_code == 422, answer.text[:500]
        (error,) = answer.json()["detail"]
        assert error["loc"] == ["body", "lines", lines - 1, "unit_price"]
    assert len(latencies) >= 5, latencies


async def test_bodies_up_to_the_limit_work_and_one_byte_more_is_refused(server: Server) -> None:
    """An upsert of exactly web.max_body_bytes is imported; one byte more is a 413 naming the
    setting. Other API routes take web.max_form_bytes. Without a key, an invalid body is a
    401, not a 422: the body is not looked at before the key."""
    customer = {"id": "C-9", "name": "Initech", "time_zone": "UTC"}
    exact = json.dumps(customer).encode()
    exact += b" " * (MAX_BODY - len(exact))  # JSON allows trailing whitespace
    headers = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.port}/api/v1", headers=headers, timeout=30
    ) as api:
        created = await api.post("/customers", content=exact)
        assert created.status_code == 200, created.text
        assert created.json()["outcome"] == "created"
        over = await api.post("/customers", content=exact + b" ")
        assert over.status_code == 413, over.text
        assert "4194304 bytes POST /api/v1/customers" in over.json()["detail"]
        assert "web.max_body_bytes" in over.json()["detail"]
        note = {"customer": "C-9", "reason": "manual", "note": "n" * MAX_FORM}
        hold = await api.post("/holds", json=note)
        assert hold.status_code == 413 and "web.max_form_bytes" in hold.json()["detail"]
        placed = await api.post("/holds", json={"customer": "C-9", "reason": "manual"})
        assert placed.status_code == 200, placed.text
        nokey = await api.post("/customers", json={"nope": 1}, headers={"Authorization": ""})
        assert nokey.status_code == 401, nokey.text
        text = await api.post(
            "/customers", content=json.dumps(customer), headers={"Content-Type": "text/plain"}
        )
        assert text.status_code == 422 and text.json()["detail"][0]["loc"] == ["body"]
