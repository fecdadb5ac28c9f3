"""The audit trail becomes typed, hash-chained and append-only (audit/chain.py).

Existing entries get their action from their status and are chained in the order they were
written (by id), in batches; then a trigger makes the table refuse UPDATE and DELETE.

"""

import django.db.models.deletion
from django.db import migrations, models

ACTION_OF_STATUS = {"error": "completion.failed", "cancelled": "completion.cancelled"}

APPEND_ONLY = """
CREATE FUNCTION audit_entries_are_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are append-only: % is refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_entries_are_append_only BEFORE UPDATE OR DELETE ON audit_auditentry
    FOR EACH ROW EXECUTE FUNCTION audit_entries_are_append_only();
"""

NOT_APPEND_ONLY = """
DROP TRIGGER IF EXISTS audit_entries_are_append_only ON audit_auditentry;
DROP FUNCTION IF EXISTS audit_entries_are_append_only();
"""


def chain_existing_entries(apps, schema_editor):
    """In the order they were written (by id), batch by batch; the links are COPYed into a
    temporary table and set with one UPDATE (row-by-row UPDATEs took 4 minutes for 200,000 here;
one UPDATE, 1-2 minutes: every row of the table is rewritten once)."""
    from audit import chain

    AuditEntry = apps.get_model("audit", "AuditEntry")
    fields = [name for name in chain.SEALED if name != "seq"]
    head, last = (0, chain.GENESIS), 0
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE audit_links (id bigint, action text, seq bigint, prev_hash text, hash text) ON COMMIT DROP")
        while rows := list(AuditEntry.objects.filter(id__gt=last).order_by("id").values("id", *fields)[:10_000]):
            for row in rows:
                row["action"] = ACTION_OF_STATUS.get(row["status"], "completion.succeeded")
            head = chain.link(rows, head)
            with cursor.cursor.copy("COPY audit_links (id, action, seq, prev_hash, hash) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row((row["id"], row["action"], row["seq"], row["prev_hash"], row["hash"]))
            last = rows[-1]["id"]
        cursor.execute(
            "UPDATE audit_auditentry AS a SET action = l.action, seq = l.seq, prev_hash = l.prev_hash, hash = l.hash "
            "FROM audit_links AS l WHERE a.id = l.id"
        )


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0002_team'),
        ('chat', '0004_team'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditentry',
            name='action',
            field=models.CharField(choices=[('completion.succeeded', 'Completion Succeeded'), ('completion.failed', 'Completion Failed'), ('completion.cancelled', 'Completion Cancelled')], default='completion.succeeded', max_length=64),
        ),
        migrations.AddField(
            model_name='auditentry',
            name='answer_sha256',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='auditentry',
            name='details',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='auditentry',
            name='hash',
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name='auditentry',
            name='prev_hash',
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name='auditentry',
            name='prompt_sha256',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='auditentry',
            name='seq',
            field=models.BigIntegerField(editable=False, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name='auditentry',
            name='conversation',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='chat.conversation'),
        ),
        migrations.AlterField(
            model_name='auditentry',
            name='message',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='chat.message'),
        ),
        migrations.RunPython(chain_existing_entries, migrations.RunPython.noop),
        migrations.RunSQL(APPEND_ONLY, NOT_APPEND_ONLY),
    ]
