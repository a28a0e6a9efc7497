"""The Files and Batches APIs of the loopback OpenAI server, on a compressed clock, with faults.

Hooked into `LoopbackOpenAI` as `server.batches`; the official SDK's `files.create/content` and
`batches.create/retrieve/cancel/list` work against it unmodified.

    with LoopbackOpenAI(time_scale=3600) as server:        # an hour of batch time per real second
        server.batches.inject("expire")                    # the next batch created expires half done

A batch moves through validating → in_progress → finalizing → completed on the server's virtual
clock (`clock`, default the server's own), evaluated whenever it is read. Its requests run
through the same validation and vectors as `POST /v1/embeddings` when it leaves in_progress;
the output file lists answers in shuffled order (as the real one may), failures go to the error
file. Input files are validated like the real API: JSONL, unique `custom_id`, POST to
`/v1/embeddings`, one model, at most `max_requests` lines, `max_file_bytes`, `max_inputs` inputs.

Faults, queued with `inject(fault, times=1)`, each consumed by the next batch created (or, for
`poll_500`, the next batch read):

- `"request_error"`: the batch's first request fails with a 500 server_error (error file);
- `"expire"`: the batch expires with only the first half of its requests done, the rest in the
  error file as `batch_expired`;
- `"reject"`: the input file fails validation (status `failed`, `errors` filled in);
- `"poll_500"`: the next `GET /v1/batches/{id}` answers 500;
- `"overbill"`: every answer reports 10^12 prompt tokens;
- `"duplicate"`: the output file answers the first request twice, the second time (last) with
  its vectors' indexes swapped.

Counters: `files_uploaded`, `batches_created`, `request_lines` (lines run), `created_inputs`
(each created batch's input file content, to prove nothing was submitted twice).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import itertools
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import parse_qs, urlsplit

from .loopback_openai import _error, _parse_inputs, _Reply

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler

    from .loopback_openai import LoopbackOpenAI

__all__ = ["BATCH_FAULTS", "BatchFault", "LoopbackBatches"]

BatchFault = Literal["request_error", "expire", "reject", "poll_500", "overbill", "duplicate"]
BATCH_FAULTS: frozenset[str] = frozenset(get_args(BatchFault))


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class _Batch:
    id: str
    input_file_id: str
    lines: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    started: float
    """Virtual time the batch was created."""
    created_at: int
    metadata: dict[str, str] | None
    faults: set[str] = field(default_factory=set)
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    cancel_at: float | None = None
    stamps: dict[str, int] = field(default_factory=dict)
    ended: float | None = None
    """Virtual time the batch reached a final status."""


class LoopbackBatches:
    """Files and Batches endpoints for a `LoopbackOpenAI` (`app`); durations are virtual seconds."""

    def __init__(
        self,
        app: LoopbackOpenAI,
        *,
        clock: Callable[[], float] | None = None,
        validating_s: float = 120.0,
        in_progress_s: float = 1800.0,
        finalizing_s: float = 300.0,
        cancelling_s: float = 60.0,
        max_requests: int = 50_000,
        max_file_bytes: int = 200 * 1024 * 1024,
        max_inputs: int = 50_000,
        shuffle_output: bool = True,
    ) -> None:
        self.app = app
        self.clock = clock or app._now
        self.validating_s, self.in_progress_s, self.finalizing_s = validating_s, in_progress_s, finalizing_s
        self.cancelling_s = cancelling_s
        self.max_requests, self.max_file_bytes, self.max_inputs = max_requests, max_file_bytes, max_inputs
        self.shuffle_output = shuffle_output
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}
        self._faults: deque[str] = deque()
        self._poll_faults = 0
        self.files_uploaded = 0
        self.batches_created = 0
        self.request_lines = 0
        self.created_inputs: list[str] = []

    def inject(self, fault: BatchFault, times: int = 1) -> None:
        if fault not in BATCH_FAULTS:
            raise ValueError(f"unknown batch fault {fault!r}; expected one of {sorted(BATCH_FAULTS)}")
        with self._lock:
            if fault == "poll_500":
                self._poll_faults += times
            else:
                self._faults.extend([fault] * times)

    def file_content(self, file_id: str) -> bytes:
        with self._lock:
            return self._files[file_id].content

    def batch_status(self, batch_id: str) -> str:
        with self._lock:
            return self._advance(self._batches[batch_id]).status

    def virtual_span(self) -> float:
        """Virtual seconds from the first batch's creation to the last one's end (so far)."""
        with self._lock:
            batches = list(self._batches.values())
            if not batches:
                return 0.0
            return max(b.ended or self.clock() for b in batches) - min(b.started for b in batches)

    # routing

    def route(self, handler: BaseHTTPRequestHandler, method: str, body: bytes) -> bool:
        """Answer a Files or Batches request on `handler`; False when the path is not one of theirs."""
        url = urlsplit(handler.path)
        parts = url.path.rstrip("/").split("/")[2:]  # after "/v1"
        if not parts or parts[0] not in ("files", "batches"):
            return False
        if (denied := self.app._check_auth(handler.headers.get("Authorization"))) is not None:
            self._send(handler, denied)
            return True
        with self._lock:
            reply = self._dispatch(method, parts, parse_qs(url.query), handler.headers.get("Content-Type", ""), body)
        self._send(handler, reply)
        return True

    def _dispatch(
        self, method: str, parts: list[str], query: dict[str, list[str]], content_type: str, body: bytes
    ) -> _Reply | bytes:
        match method, parts:
            case "POST", ["files"]:
                return self._upload(content_type, body)
            case "GET", ["files", file_id]:
                return (
                    _Reply(200, self._files[file_id].object()) if file_id in self._files else _missing("file", file_id)
                )
            case "GET", ["files", file_id, "content"]:
                return self._files[file_id].content if file_id in self._files else _missing("file", file_id)
            case "POST", ["batches"]:
                return self._create(body)
            case "GET", ["batches"]:
                return self._list(query)
            case "GET", ["batches", batch_id]:
                if self._poll_faults:
                    self._poll_faults -= 1
                    return _error(500, "The server had an error while processing your request.", "server_error")
                return self._reply(batch_id)
            case "POST", ["batches", batch_id, "cancel"]:
                return self._cancel(batch_id)
        return _error(404, f"Invalid URL ({method} /v1/{'/'.join(parts)})")

    # files

    def _upload(self, content_type: str, body: bytes) -> _Reply:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = (part.get_filename(), payload)
        if "file" not in fields or "purpose" not in fields:
            return _error(400, "Missing required parameters: file and purpose.")
        filename, content = fields["file"]
        purpose = fields["purpose"][1].decode()
        uploaded = _File(
            f"file-loopback{next(self._ids):06d}", filename or "upload", purpose, content, int(time.time())
        )
        self._files[uploaded.id] = uploaded
        self.files_uploaded += 1
        return _Reply(200, uploaded.object())

    def _new_file(self, name: str, lines: list[dict[str, Any]]) -> str | None:
        if not lines:
            return None
        content = b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)
        created = _File(f"file-loopback{next(self._ids):06d}", name, "batch_output", content, int(time.time()))
        self._files[created.id] = created
        return created.id

    # batches

    def _create(self, body: bytes) -> _Reply:
        try:
            params = json.loads(body)
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        file_id = params.get("input_file_id")
        if file_id not in self._files:
            return _missing("file", str(file_id))
        if params.get("endpoint") != "/v1/embeddings" or params.get("completion_window") != "24h":
            return _error(400, "this loopback runs /v1/embeddings batches with completion_window 24h only.")
        source = self._files[file_id]
        if source.purpose != "batch":
            return _error(400, f"File {file_id} has purpose {source.purpose!r}, expected 'batch'.")
        lines, errors = self._validate(source.content)
        batch = _Batch(
            f"batch_loopback{next(self._ids):06d}",
            file_id,
            lines,
            errors,
            self.clock(),
            int(time.time()),
            params.get("metadata"),
        )
        if self._faults:
            batch.faults.add(self._faults.popleft())
        if "reject" in batch.faults:
            batch.errors.append({"code": "invalid_request", "message": "injected: the file was rejected", "line": 1})
        self._batches[batch.id] = batch
        self.batches_created += 1
        self.created_inputs.append(hashlib.sha256(source.content).hexdigest())
        return self._reply(batch.id)

    def _validate(self, content: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        lines: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        ids: set[str] = set()
        models: set[str] = set()
        inputs = 0
        if len(content) > self.max_file_bytes:
            errors.append({"code": "file_too_large", "message": f"File exceeds {self.max_file_bytes} bytes."})
        for number, raw in enumerate(content.splitlines(), start=1):
            try:
                line = json.loads(raw)
            except ValueError:
                errors.append(
                    {
                        "code": "invalid_json_line",
                        "message": "This line is not parseable as valid JSON.",
                        "line": number,
                    }
                )
                continue
            body = line.get("body") if isinstance(line, dict) else None
            if not isinstance(body, dict) or line.get("method") != "POST" or line.get("url") != "/v1/embeddings":
                errors.append(
                    {
                        "code": "invalid_request",
                        "message": "Each line must POST a body to /v1/embeddings.",
                        "line": number,
                    }
                )
                continue
            if (request_id := line.get("custom_id")) in ids or not isinstance(request_id, str):
                errors.append(
                    {
                        "code": "duplicate_custom_id",
                        "message": "The custom_id for this request is a duplicate.",
                        "line": number,
                    }
                )
            ids.add(str(request_id))
            models.add(str(body.get("model")))
            inputs += len(_parse_inputs(body.get("input")) or [])
            lines.append(line)
        if len(lines) > self.max_requests:
            errors.append({"code": "too_many_requests", "message": f"More than {self.max_requests} requests."})
        if inputs > self.max_inputs:
            errors.append(
                {"code": "too_many_inputs", "message": f"{inputs} embedding inputs; at most {self.max_inputs}."}
            )
        if len(models) > 1:
            errors.append({"code": "mismatched_model", "message": "Every request of a batch must use the same model."})
        return lines, errors

    def _advance(self, batch: _Batch) -> _Batch:
        """Bring the batch to the state its age on the virtual clock gives it."""
        now = self.clock()
        age = now - batch.started
        stamp = int(time.time())
        if batch.status == "validating" and age >= self.validating_s:
            if batch.errors:
                batch.status = "failed"
                batch.stamps["failed_at"] = stamp
            else:
                batch.status = "in_progress"
                batch.stamps["in_progress_at"] = stamp
        running_until = self.validating_s + self.in_progress_s
        if batch.status == "in_progress" and age >= running_until:
            if "expire" in batch.faults:
                self._run(batch, len(batch.lines) // 2, "expired")
                batch.status = "expired"
                batch.stamps["expired_at"] = stamp
            else:
                self._run(batch, len(batch.lines), None)
                batch.status = "finalizing"
                batch.stamps["finalizing_at"] = stamp
        if batch.status == "finalizing" and age >= running_until + self.finalizing_s:
            batch.status = "completed"
            batch.stamps["completed_at"] = stamp
        if batch.ended is None:  # when it really ended on the virtual clock, not when it was next read
            ends = {
                "failed": self.validating_s,
                "expired": running_until,
                "completed": running_until + self.finalizing_s,
            }
            if batch.status in ends:
                batch.ended = batch.started + ends[batch.status]
        if batch.status == "cancelling" and batch.cancel_at is not None and now >= batch.cancel_at:
            done = (
                0
                if age < self.validating_s
                else min(len(batch.lines), int(len(batch.lines) * (age - self.validating_s) / self.in_progress_s))
            )
            self._run(batch, done, "cancelled")
            batch.status = "cancelled"
            batch.stamps["cancelled_at"] = stamp
            batch.ended = batch.cancel_at
        return batch

    def _run(self, batch: _Batch, count: int, unfinished: str | None) -> None:
        """Run the first `count` requests; the rest (if any) end as `unfinished` in the error file."""
        output: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for number, line in enumerate(batch.lines):
            entry: dict[str, Any] = {"id": f"batch_req_{batch.id}_{number}", "custom_id": line["custom_id"]}
            if number >= count:
                code = "batch_expired" if unfinished == "expired" else "batch_cancelled"
                failures.append(
                    entry
                    | {
                        "response": None,
                        "error": {
                            "code": code,
                            "message": f"This request could not be executed before the batch was {unfinished}.",
                        },
                    }
                )
                continue
            self.request_lines += 1
            if number == 0 and "request_error" in batch.faults:
                reply = _error(500, "The server had an error while processing your request.", "server_error")
            else:
                body = line["body"]
                job = self.app._validate(body, _parse_inputs(body.get("input")))
                reply = job if isinstance(job, _Reply) else self.app._embed(job, False, seed=number)
            if "overbill" in batch.faults and reply.status == 200:
                reply.body["usage"] = {"prompt_tokens": 10**12, "total_tokens": 10**12}
            response = {"status_code": reply.status, "request_id": f"req_{batch.id}_{number}", "body": reply.body}
            (output if reply.status == 200 else failures).append(entry | {"response": response, "error": None})
            if number == 0 and "duplicate" in batch.faults and reply.status == 200:
                swapped = [dict(item, index=len(reply.body["data"]) - 1 - item["index"]) for item in reply.body["data"]]
                again = {**response, "body": {**reply.body, "data": swapped}}
                output.append(entry | {"response": again, "error": None})
        if self.shuffle_output:
            random.Random(batch.id).shuffle(output)
        batch.completed, batch.failed = len(output), len(failures)
        batch.output_file_id = self._new_file(f"{batch.id}_output.jsonl", output)
        batch.error_file_id = self._new_file(f"{batch.id}_error.jsonl", failures)

    def _cancel(self, batch_id: str) -> _Reply:
        if batch_id not in self._batches:
            return _missing("batch", batch_id)
        batch = self._advance(self._batches[batch_id])
        if batch.status not in ("validating", "in_progress"):
            return _error(409, f"Cannot cancel a batch with status '{batch.status}'.")
        batch.status = "cancelling"
        batch.cancel_at = self.clock() + self.cancelling_s
        batch.stamps["cancelling_at"] = int(time.time())
        return self._reply(batch_id)

    def _list(self, query: dict[str, list[str]]) -> _Reply:
        limit = int(query.get("limit", ["20"])[0])
        ordered = sorted(self._batches, reverse=True)  # newest first, like the API
        if after := query.get("after", [None])[0]:
            ordered = ordered[ordered.index(after) + 1 :] if after in ordered else []
        page = [self._object(self._advance(self._batches[i])) for i in ordered[:limit]]
        return _Reply(
            200,
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(ordered) > limit,
            },
        )

    def _reply(self, batch_id: str) -> _Reply:
        if batch_id not in self._batches:
            return _missing("batch", batch_id)
        return _Reply(200, self._object(self._advance(self._batches[batch_id])))

    def _object(self, batch: _Batch) -> dict[str, Any]:
        total = len(batch.lines)
        in_progress = batch.status == "in_progress"
        completed = batch.completed
        if in_progress:  # counts grow while it runs
            fraction = (self.clock() - batch.started - self.validating_s) / self.in_progress_s
            completed = min(total, max(0, int(total * fraction)))
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/embeddings",
            "errors": {"object": "list", "data": batch.errors} if batch.status == "failed" else None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": batch.created_at,
            "expires_at": batch.created_at + 86_400,
            **batch.stamps,
            "request_counts": {"total": total, "completed": completed, "failed": batch.failed},
            "metadata": batch.metadata,
        }

    def _send(self, handler: BaseHTTPRequestHandler, reply: _Reply | bytes) -> None:
        if isinstance(reply, bytes):
            payload, status, headers, kind = reply, 200, {}, "application/octet-stream"
        else:
            payload = json.dumps(reply.body, separators=(",", ":")).encode()
            status, headers, kind = reply.status, reply.headers, "application/json"
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


def _missing(kind: str, object_id: str) -> _Reply:
    return _error(404, f"No such {kind}: '{object_id}'", code=None)
