# The covering index by time for the part of an analytics range that the roll-ups do not hold
# (audit/rollups.py). Built CONCURRENTLY, as 0005: completions keep being written meanwhile.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ("audit", "0008_usage_rollups"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="usagerecord",
            index=models.Index(
                fields=["timestamp"], name="usage_time_analytics",
                include=("user", "team", "status", "model_id", "token_source", "latency_ms", "ttft_ms",
                         "input_tokens", "output_tokens", "tokens_per_second"),
            ),
        ),
    ]
