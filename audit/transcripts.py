"""The officer's transcript of one conversation: every message as stored, each answer with how it
ended, the safety filters that fired, tokens and timings, its audit entry and hash, and what the
upstream sent where a filter changed the text.

Opening it (and checking a text against an answer's hash, which shows it again) writes a
`transcript.viewed` entry: who looked at whose conversation is itself on the record. Who may open
it is asked of chat/access.py; anyone else gets a 404, as for an id that does not exist.

A conversation deleted by its owner still has its audit entries (they outlive it): the page then
says so and lists them. Content purged under the retention policy (audit/retention.py) is said to
be, with the date; its hash still proves a text someone brings (the check form).
"""

from __future__ import annotations

from django import forms
from django.http import Http404
from django.template.response import TemplateResponse

from audit.actions import do_record_event
from audit.chain import sha256_of
from audit.models import Action
from chat import access


class HashCheckForm(forms.Form):
    message = forms.IntegerField(widget=forms.HiddenInput)
    text = forms.CharField(
        label="Text to check", strip=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Paste the answer exactly as brought: every character counts (line breaks count as one \\n each). "
        "It is hashed here and not stored.",
    )


def transcript(request, conversation_id: int, *, admin_site):
    if not access.is_officer(request.user):
        raise Http404("No such conversation.")
    conversation = access.transcripts_visible_to(request.user).select_related("user", "team").filter(pk=conversation_id).first()
    entries = list(
        access.audit_entries_visible_to(request.user)
        .filter(conversation_id=conversation_id, action__startswith="completion.")
        .select_related("user", "team").order_by("seq")
    )
    if conversation is None and not entries:
        raise Http404("No such conversation.")

    by_message = {entry.message_id: entry for entry in entries if entry.message_id}
    messages = list(conversation.messages.all()) if conversation else []
    check = None
    if request.method == "POST":
        form = HashCheckForm(request.POST)
        raw = request.POST.get("message", "")
        entry = by_message.get(int(raw)) if raw.isdigit() else None
        if form.is_valid() and entry is not None and entry.answer_sha256:
            # A browser sends a textarea's line breaks as CRLF whatever was pasted; answers are stored with LF.
            digest = sha256_of(form.cleaned_data["text"].replace("\r\n", "\n"))
            check = {"message": entry.message_id, "matches": digest == entry.answer_sha256, "digest": digest}
    rows = [_row(message, by_message.get(message.pk), check) for message in messages]
    shown = {message.pk for message in messages}
    others = [entry for entry in entries if entry.message_id not in shown]  # refusals, or answers whose message is gone

    team = conversation.team_id if conversation else entries[0].team_id
    details = {"hash_check": check["message"], "matched": check["matches"]} if check else {}
    do_record_event(
        Action.TRANSCRIPT_VIEWED, actor=request.user, team=team, target=f"conversation:{conversation_id}",
        conversation_id=conversation_id, details=details,
    )
    context = {
        **admin_site.each_context(request),
        "title": f"Transcript of conversation {conversation_id}",
        "conversation": conversation,
        "conversation_id": conversation_id,
        "owner": conversation.user if conversation else entries[0].user,
        "team": conversation.team if conversation else entries[0].team,
        "rows": rows,
        "others": others,
        "check": check,
        "opts": entries[0]._meta if entries else None,
    }
    return TemplateResponse(request, "admin/audit/transcript.html", context)


def _row(message, entry, check) -> dict:
    stats = message.stats or {}
    usage = stats.get("usage") or {}
    upstream = getattr(message, "upstream_text", "") or ""
    return {
        "message": message,
        "entry": entry,
        "usage": usage,
        "latency_ms": stats.get("latency_ms"),
        "ttft_ms": stats.get("ttft_ms"),
        "upstream_text": upstream if upstream and upstream != message.content else "",
        "form": HashCheckForm(initial={"message": message.pk}, auto_id=f"check-{message.pk}-%s")
        if entry is not None and entry.answer_sha256 else None,
        "check": check if check and check["message"] == message.pk else None,
    }
