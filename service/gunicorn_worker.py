"""Gunicorn's threaded worker, made safe against slow clients, with a quick stop (SIGINT/SIGQUIT) that cannot hang.

Slow clients. Gunicorn 26.2's gthread worker hands a connection to a thread as soon as its first byte
arrives; the thread then blocks until the head and the body are in. A client that sends half its headers
or half its body and waits holds that thread for as long as it likes: with 4 threads per worker, 8 such
clients stopped a 2-worker server. Pipelined requests were lost too: the second one sits in the parser's
buffer, not on the socket, so the poller never wakes for it. Here the worker's event loop (the main thread)
reads each request with non-blocking reads until it holds the whole of it (head, then Content-Length or
chunked body, framed by service.request_buffer); only then does a thread serve it, from memory. Each
request has deadlines: its head within ``read_header_timeout_s`` of its first byte (or of the accept),
its body within ``read_body_timeout_s`` of the end of its head; past them the client gets a 408 and the
connection closes. A kept-alive connection waits ``keepalive`` seconds (gunicorn's setting) for the next
request. Bytes left over after a request (pipelining) are the next request's start, answered in order.
A body over ``max_body_bytes`` is not buffered: the app answers 413 without reading it and the connection
closes after the answer; socket reads and writes in a thread time out after ``read_body_timeout_s``.
Plain HTTP only: terminate TLS in front.

Quick stop. Gunicorn 26.2's ``ThreadWorker.handle_quit`` calls ``ThreadPoolExecutor.shutdown()`` inside the
signal handler. When the signal lands while the main thread is in ``tpool.submit()`` (holding the
executor's non-reentrant ``_shutdown_lock``), the worker deadlocks until the master SIGKILLs it a
graceful_timeout later (CPython issue #121649). Seen here on Ctrl-C right after traffic. The base worker's
quit just exits; concurrent.futures then stops the pool at interpreter exit, letting running requests finish.

It also answers what gunicorn refuses before the app sees the request (a request line over
``limit_request_line``, too many or too large headers, a malformed request line or header) in JSON,
``{"error": "..."}`` like every other refusal, where gunicorn writes an HTML page (found by the chaos
suite's fuzzing, benchmarks/chaos.py: a 5,000-character model name in the path).
"""
from __future__ import annotations

import errno
import io
import json
import selectors
import socket
import time
from functools import partial

from gunicorn import http, util
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.message import DEFAULT_MAX_HEADERFIELD_SIZE, MAX_HEADERS, MAX_REQUEST_LINE
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import TConn
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker

from service.request_buffer import MAX_CHUNK_LINE, Stage, scan_request
from service.request_id import HEADER as REQUEST_ID_HEADER
from service.request_id import new_request_id

READ_BYTES = 64 * 1024
LINGER_S = 2.0  # after our last byte, how long a closing connection may still send before it is cut
SWEEP_S = 0.25  # deadlines are checked this often (the loop turns on every event: under load, thousands a second)


def json_error_bytes(status_int: int, reason: str, mesg: str) -> bytes:
    """The whole answer to a request refused before the app saw it, shaped as the app's refusals are (a new request
    id: the request was not read far enough to trust its own)."""
    request_id = new_request_id()
    body = json.dumps({"error": mesg or reason, "request_id": request_id}).encode("utf-8")
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"{REQUEST_ID_HEADER}: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error's contract (status, reason, message; the connection closes), JSON body."""
    util.write_nonblock(sock, json_error_bytes(status_int, reason, mesg))


# Worker.handle_error looks it up on the module at each call. Only this process (a worker of our server, or
# the master, which never writes HTTP errors) sees the change.
util.write_error = write_json_error


class DeadlineUnreader(SocketUnreader):
    """Every socket read a thread makes times out: a request handed over before it was all buffered (a body
    over max_body_bytes, a head only gunicorn's parser can judge) cannot hold its thread for ever."""

    def __init__(self, sock, timeout_s: float):
        super().__init__(sock)
        self.timeout_s = timeout_s

    def chunk(self):
        self.sock.settimeout(self.timeout_s)
        return self.sock.recv(self.mxchunk)


class BufferedConn(TConn):
    """A connection while the event loop reads its next request (or lingers before closing it)."""

    def __init__(self, cfg, sock, client, server, read_timeout_s: float):
        super().__init__(cfg, sock, client, server)  # non-blocking
        self.parser = http.get_parser(cfg, sock, client)
        self.parser.unreader = DeadlineUnreader(sock, read_timeout_s)
        self.initialized = True  # gthread's handle() must neither wait for data nor build another parser
        self.buffer = bytearray()
        self.stage = Stage.HEAD
        self.body_end = 0  # with Content-Length: the buffer's length once the request is whole
        self.deadline = 0.0
        self.continue_sent = False
        self.whole = False    # the request a thread serves was all in memory
        self.closing = False  # our side is shut; reading only to let the client finish before the close


def head_limit(cfg) -> int:
    """Bytes of head past which gunicorn's parser refuses a request (LimitRequestHeaders / LimitRequestLine)."""
    fields = cfg.limit_request_fields if 0 < cfg.limit_request_fields <= MAX_HEADERS else MAX_HEADERS
    field_size = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else DEFAULT_MAX_HEADERFIELD_SIZE
    line = min(cfg.limit_request_line, MAX_REQUEST_LINE) if cfg.limit_request_line > 0 else 1024 * 1024
    return fields * (field_size + 2) + 4 + line


class ThreadWorker(GunicornThreadWorker):
    @classmethod
    def check_config(cls, cfg, log) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl:
            raise RuntimeError("service.gunicorn_worker reads requests as plain HTTP: terminate TLS in a proxy "
                               "in front of the server, not in gunicorn (certfile/keyfile)")

    def init_process(self) -> None:
        from service.config import load_config

        # GunicornServer (service.serve) carries the service config; `gunicorn service.wsgi:app` has the environment.
        settings = load_config(getattr(self.app, "service_config", None))
        self.header_timeout_s = settings.read_header_timeout_s
        self.body_timeout_s = settings.read_body_timeout_s
        self.body_limit = settings.max_body_bytes
        self.head_limit = head_limit(self.cfg)
        self.buffering: dict[int, BufferedConn] = {}  # by file descriptor: every connection the loop reads
        self.next_sweep = 0.0
        super().init_process()

    def handle_quit(self, sig, frame) -> None:
        Worker.handle_quit(self, sig, frame)

    # The event loop's side: accept, read, hand over, take back.

    def accept(self, listener) -> None:
        try:
            sock, client = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = BufferedConn(self.cfg, sock, client, listener.getsockname(), self.body_timeout_s)
        self.wait_for_request(conn, self.header_timeout_s)

    def wait_for_request(self, conn: BufferedConn, idle_s: float) -> None:
        """Read ``conn``'s next request in the loop; a thread gets it once it is whole. Bytes the last request
        left in the parser (a pipelined request) come first; with none, the client has ``idle_s`` to start."""
        conn.sock.setblocking(False)
        conn.buffer = bytearray(conn.parser.unreader.take_buffered())
        conn.stage, conn.body_end, conn.continue_sent, conn.whole = Stage.HEAD, 0, False, False
        conn.deadline = time.monotonic() + (self.header_timeout_s if conn.buffer else idle_s)
        self.buffering[conn.sock.fileno()] = conn
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_readable, conn))
        if conn.buffer:
            self.advance(conn)

    def on_readable(self, conn: BufferedConn, _sock) -> None:
        try:
            data = conn.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed (or reset) its side
            self.drop(conn)
        elif conn.closing:
            pass  # discarded: the answer is out, the connection is only waiting for the client to finish
        else:
            if not conn.buffer:  # a request starts: the head's deadline runs from here
                conn.deadline = time.monotonic() + self.header_timeout_s
            conn.buffer += data
            self.advance(conn)

    def advance(self, conn: BufferedConn) -> None:
        if len(conn.buffer) < conn.body_end:
            return  # the length is known and not all here: no need to scan again
        scan = scan_request(conn.buffer, self.head_limit, self.body_limit)
        if scan.stage is Stage.BODY and conn.stage is Stage.HEAD:
            conn.stage, conn.body_end = Stage.BODY, scan.end
            conn.deadline = time.monotonic() + self.body_timeout_s
            if scan.expects_continue:  # the client waits for this before it sends the body
                conn.continue_sent = self.send_some(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
        too_much = len(conn.buffer) > self.head_limit + self.body_limit + MAX_CHUNK_LINE
        if scan.stage in (Stage.HEAD, Stage.BODY) and not too_much:
            return
        conn.whole = scan.stage is Stage.COMPLETE
        self.unwatch(conn)
        conn.parser.unreader.unread(bytes(conn.buffer))
        conn.buffer = bytearray()
        self.enqueue_req(conn)

    def finish_request(self, conn: BufferedConn, fs) -> None:
        """A thread is done with ``conn`` (main thread, through the method queue)."""
        try:
            keep_alive = not fs.cancelled() and fs.result()
            if keep_alive and self.alive:
                self.wait_for_request(conn, self.cfg.keepalive)
            else:
                self.start_closing(conn)
        except Exception:
            self.drop(conn)

    def murder_keepalived(self) -> None:
        """After each turn of the loop, at most every SWEEP_S: cut connections past their deadline, and idle ones
        once the worker stops."""
        now = time.monotonic()
        if now < self.next_sweep and self.alive:
            return
        self.next_sweep = now + SWEEP_S
        for conn in list(self.buffering.values()):
            if conn.closing:
                if conn.deadline <= now or not self.alive:
                    self.drop(conn)
            elif conn.deadline <= now:
                if conn.buffer:  # a request began and did not finish in time
                    part = "body" if conn.stage is Stage.BODY else "headers"
                    limit = self.body_timeout_s if conn.stage is Stage.BODY else self.header_timeout_s
                    self.log.info("Closing %s: request %s not received within %g s", conn.client, part, limit)
                    self.send_some(conn, json_error_bytes(408, "Request Timeout",
                                                          f"request {part} not received within {limit:g} s"))
                    self.start_closing(conn)
                else:
                    self.drop(conn)
            elif not self.alive and not conn.buffer:
                self.drop(conn)

    def start_closing(self, conn: BufferedConn) -> None:
        """Close as util.close_graceful does (FIN first, so a client still sending gets our answer, not a
        reset), without blocking the loop: the client's last bytes are read and dropped here, for LINGER_S."""
        self.unwatch(conn)
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.drop(conn)
            return
        conn.closing, conn.deadline = True, time.monotonic() + LINGER_S
        self.buffering[conn.sock.fileno()] = conn
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_readable, conn))

    def drop(self, conn: BufferedConn) -> None:
        self.unwatch(conn)
        self.nr_conns -= 1
        conn.close()

    def unwatch(self, conn: BufferedConn) -> None:
        if self.buffering.pop(conn.sock.fileno(), None) is not None:
            self.poller.unregister(conn.sock)

    @staticmethod
    def send_some(conn: BufferedConn, data: bytes) -> bool:
        """What the socket takes now (a short answer fits in its buffer); never blocks the loop."""
        try:
            return conn.sock.send(data) == len(data)
        except OSError:
            return False

    # The thread's side.

    def handle_request(self, req, conn: BufferedConn):
        if conn.whole or conn.continue_sent:
            req._expected_100_continue = False  # the body is here already, or the loop sent the 100 itself
        if not conn.whole:
            # Handed over unbuffered (a body over max_body_bytes, a head only gunicorn judges): the app refuses it
            # without reading the body, and the connection closes after the answer (Connection: close) instead of
            # reading the rest of the body to reach a next request.
            req.must_close = True
        elif isinstance(getattr(req.body, "reader", None), LengthReader):
            # The body is in memory already: read it from there. Gunicorn's LengthReader takes every buffered byte
            # from the parser's unreader for each 1 KiB it returns and puts the rest back, copying the whole
            # remaining body each time: 0.65 s of CPU for a 4 MiB body before the app saw a byte.
            pending = conn.parser.unreader.take_buffered()
            length = req.body.reader.length
            conn.parser.unreader.unread(pending[length:])  # a pipelined request's start, if any
            req.body = Body(io.BytesIO(pending[:length]))
        # Reads of a body too large to buffer, and writes to a client that stops reading, end in time.
        conn.sock.settimeout(self.body_timeout_s)
        try:
            return super().handle_request(req, conn)
        except TimeoutError:
            self.log.info("Closing %s: a read or write took over %g s", conn.client, self.body_timeout_s)
            raise StopIteration from None  # handle() closes the connection
