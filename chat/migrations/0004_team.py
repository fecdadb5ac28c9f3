"""Every conversation and message carries its team: existing ones the default team's (every
person joined it in gateway_portal's 0002). Conversations can be shared with the team."""

import django.db.models.deletion
from django.db import migrations, models

BACKFILL = """
UPDATE chat_conversation SET team_id = (SELECT id FROM gateway_portal_team WHERE slug = 'everyone') WHERE team_id IS NULL;
UPDATE chat_message AS m SET team_id = c.team_id FROM chat_conversation AS c WHERE m.conversation_id = c.id AND m.team_id IS NULL;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("gateway_portal", "0002_teams"),
        ("chat", "0003_process_channel_error_retryable_stats"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="team",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT, related_name="conversations", to="gateway_portal.team"),
        ),
        migrations.AddField(
            model_name="conversation",
            name="shared",
            field=models.BooleanField(default=False, help_text="Teammates may open it read-only."),
        ),
        migrations.AddField(
            model_name="message",
            name="team",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="gateway_portal.team"),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="conversation",
            name="team",
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="conversations", to="gateway_portal.team"),
        ),
        migrations.AlterField(
            model_name="message",
            name="team",
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="+", to="gateway_portal.team"),
        ),
        migrations.AddIndex(
            model_name="conversation",
            index=models.Index(condition=models.Q(("shared", True)), fields=["team", "-updated_at"], name="chat_shared_by_team"),
        ),
    ]
