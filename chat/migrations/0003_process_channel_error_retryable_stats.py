"""Message.worker is a channel name: call it process_channel. Store whether an error is worth a
Retry with the answer (Message.error_retryable), and store stats under the names the `done` frame
uses ({"usage": {input_tokens, output_tokens, source}, latency_ms, ttft_ms})."""

from django.db import migrations, models

# The codes that were retryable when this migration was written (chat/errors.py then): frozen
# here, as a migration must not change with the code.
RETRYABLE = ["rate_limited", "upstream_unavailable", "upstream_timeout", "upstream_interrupted", "internal_error", "quota_exceeded"]

FORWARD_STATS = """
UPDATE chat_message SET stats = jsonb_build_object(
    'usage', jsonb_build_object(
        'input_tokens', COALESCE(stats->'input_tokens', '0'::jsonb),
        'output_tokens', COALESCE(stats->'output_tokens', '0'::jsonb),
        'source', COALESCE(stats->'token_source', '"estimate"'::jsonb)),
    'latency_ms', COALESCE(stats->'latency_ms', '0'::jsonb),
    'ttft_ms', COALESCE(stats->'ttft_ms', 'null'::jsonb))
WHERE stats ? 'token_source'
"""

BACKWARD_STATS = """
UPDATE chat_message SET stats = jsonb_build_object(
    'input_tokens', stats->'usage'->'input_tokens',
    'output_tokens', stats->'usage'->'output_tokens',
    'token_source', stats->'usage'->'source',
    'latency_ms', stats->'latency_ms',
    'ttft_ms', stats->'ttft_ms')
WHERE stats ? 'usage'
"""


class Migration(migrations.Migration):
    dependencies = [("chat", "0002_message_worker")]

    operations = [
        migrations.RenameField(model_name="message", old_name="worker", new_name="process_channel"),
        migrations.AddField(model_name="message", name="error_retryable", field=models.BooleanField(default=False)),
        migrations.RunSQL(
            [("UPDATE chat_message SET error_retryable = true WHERE status = 'error' AND error_code = ANY(%s)", [RETRYABLE])],
            migrations.RunSQL.noop,
        ),
        migrations.RunSQL(FORWARD_STATS, BACKWARD_STATS),
    ]
