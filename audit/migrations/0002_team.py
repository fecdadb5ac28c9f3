"""Audit entries and usage records carry their team: existing ones the default team's."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0001_initial'),
        ('chat', '0004_team'),
        ('gateway_portal', '0002_teams'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='auditentry',
            name='team',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='gateway_portal.team'),
        ),
        migrations.AddField(
            model_name='usagerecord',
            name='team',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='gateway_portal.team'),
        ),
        migrations.RunSQL(
            [
                "UPDATE audit_auditentry SET team_id = (SELECT id FROM gateway_portal_team WHERE slug = 'everyone') WHERE team_id IS NULL",
                "UPDATE audit_usagerecord SET team_id = (SELECT id FROM gateway_portal_team WHERE slug = 'everyone') WHERE team_id IS NULL",
            ],
            migrations.RunSQL.noop,
        ),
        migrations.AddIndex(
            model_name='auditentry',
            index=models.Index(fields=['team', '-timestamp'], name='audit_audit_team_id_0e9297_idx'),
        ),
        migrations.AddIndex(
            model_name='usagerecord',
            index=models.Index(fields=['team', '-timestamp'], name='audit_usage_team_id_d7135e_idx'),
        ),
    ]
