"""CSV export of an admin list's current selection (audit entries, usage records), for officers.

The selection is the list's own: the same filters, search and order (the admin's ChangeList
builds it), from the rows chat/access.py lets the person see. A million rows must neither time
out nor fill memory, so the file is streamed: rows come from a server-side cursor in chunks and
leave as CSV text every few hundred rows; nothing holds the whole file.

Under Daphne (ASGI) the response's iterator is asynchronous: Django would read a synchronous one
into a list first, the whole file in memory. The test client (WSGI-like) gets
the synchronous twin over the same rows.

The export is audited before its first byte: an `export.created` entry with the filter (the
query string), the list and the number of rows. That number is exact: the selection is bounded
by the highest id at the start (audit entries are never deleted; usage records are not either),
so rows written meanwhile are not in the file and the count and the file agree. The page's script
(static/audit/export.js) reads it from the X-Export-Rows header to show progress.
"""

from __future__ import annotations

import csv
import io
import json

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Max
from django.http import Http404, StreamingHttpResponse
from django.utils import timezone

from audit.actions import do_record_event
from audit.models import Action
from audit.views import _csv_value
from chat import access

CHUNK_ROWS = 2000  # rows per fetch from the server-side cursor
FLUSH_ROWS = 500  # rows per piece of the response

# (CSV header, values_list path) per exported model.
COLUMNS = {
    "auditentry": [
        ("seq", "seq"), ("audit_id", "audit_id"), ("timestamp", "timestamp"), ("action", "action"),
        ("user", "user__username"), ("team", "team__slug"), ("target", "target"), ("request_id", "request_id"),
        ("model", "model_id"), ("status", "status"), ("error_code", "error_code"),
        ("safety_filtered", "safety_filtered"), ("filters", "filters"), ("client", "details__client"),
        ("conversation_id", "conversation_id"), ("message_id", "message_id"), ("compliance_tag", "compliance_tag"),
        ("prompt_sha256", "prompt_sha256"), ("answer_sha256", "answer_sha256"), ("hash", "hash"), ("details", "details"),
    ],
    "usagerecord": [
        ("request_id", "request_id"), ("timestamp", "timestamp"), ("user", "user__username"), ("team", "team__slug"),
        ("model", "model_id"), ("status", "status"), ("latency_ms", "latency_ms"), ("ttft_ms", "ttft_ms"),
        ("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"), ("input_chars", "input_chars"),
        ("output_chars", "output_chars"), ("token_source", "token_source"), ("tokens_per_second", "tokens_per_second"),
    ],
}


def export(request, model_admin) -> StreamingHttpResponse:
    """The list's current selection as a streamed CSV file (the admin's export.csv URL)."""
    name = model_admin.opts.model_name
    if name not in COLUMNS or not access.is_officer(request.user):
        raise Http404("No such export.")
    changelist = model_admin.get_changelist_instance(request)  # the list's filters, search and order
    newest = model_admin.model.objects.aggregate(newest=Max("pk"))["newest"] or 0
    selection = changelist.queryset.filter(pk__lte=newest)
    rows = selection.count()
    do_record_event(
        Action.EXPORT_CREATED, actor=request.user, target=f"export:{name}",
        details={"list": name, "filter": _filter_of(request), "rows": rows, "rows_counted": "exact, at the start"},
    )
    head = [title for title, _ in COLUMNS[name]]
    values = selection.values_list(*[path for _, path in COLUMNS[name]])
    if isinstance(request, ASGIRequest):
        content = _stream_async(head, values)
    else:
        content = _stream(head, values)
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    label = model_admin.opts.verbose_name_plural.replace(" ", "-")
    response["Content-Disposition"] = f'attachment; filename="{label}-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    response["X-Export-Rows"] = str(rows)
    response["Cache-Control"] = "no-store"
    return response


def _filter_of(request) -> str:
    query = request.GET.copy()
    query.pop("p", None)
    return query.urlencode()


def _cell(value):
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return _csv_value(value)


class _Pieces:
    """CSV rows into pieces of text of FLUSH_ROWS rows each."""

    def __init__(self, head: list[str]):
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer)
        self.writer.writerow(head)
        self.pending = 1

    def add(self, row) -> str | None:
        self.writer.writerow([_cell(value) for value in row])
        self.pending += 1
        return self.take() if self.pending >= FLUSH_ROWS else None

    def take(self) -> str:
        piece = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        self.pending = 0
        return piece


def _stream(head, values):
    pieces = _Pieces(head)
    for row in values.iterator(chunk_size=CHUNK_ROWS):
        if (piece := pieces.add(row)) is not None:
            yield piece
    yield pieces.take()


async def _stream_async(head, values):
    # Each piece is read and written in the request's own thread (thread_sensitive: the one whose
    # connection holds the server-side cursor); `aiterator()` cannot be used: for values_list()
    # it runs its query in the event loop, which Django refuses.
    pieces, rows = _Pieces(head), values.iterator(chunk_size=CHUNK_ROWS)
    next_piece = sync_to_async(_next_piece, thread_sensitive=True)
    while (piece := await next_piece(rows, pieces)) is not None:
        yield piece
    yield pieces.take()


def _next_piece(rows, pieces: _Pieces) -> str | None:
    """The next FLUSH_ROWS rows as CSV text; None when the rows are over (the rest is still in `pieces`)."""
    for row in rows:
        if (piece := pieces.add(row)) is not None:
            return piece
    return None
