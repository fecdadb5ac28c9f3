# The covering index of the usage analytics (audit/analytics.py). Built CONCURRENTLY, so a
# deployment with millions of usage records keeps writing completions while it is built.

from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('audit', '0004_webhooks'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='usagerecord',
            index=models.Index(fields=['user', '-timestamp'], include=('status', 'model_id', 'token_source', 'latency_ms', 'ttft_ms', 'input_tokens', 'output_tokens', 'tokens_per_second'), name='usage_user_time_analytics'),
        ),
    ]
