# The analytics' covering index (0002) answers from the index alone only for table pages the
# visibility map marks all-visible, which a vacuum does. By default an insert-only table is
# vacuumed after 20% more rows (2,000,000 at 10 million): the newest records, the ones people look
# at, would be read from the table again. Vacuum after 1% instead; on an append-mostly table it
# visits only the new pages.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0005_usage_analytics_index"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE audit_usagerecord SET (autovacuum_vacuum_insert_scale_factor = 0.01)",
            reverse_sql="ALTER TABLE audit_usagerecord RESET (autovacuum_vacuum_insert_scale_factor)",
        ),
    ]
