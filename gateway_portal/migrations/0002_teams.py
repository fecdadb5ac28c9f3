"""Teams and memberships; the default team, which every existing person joins."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def everyone_joins_the_default_team(apps, schema_editor):
    Team = apps.get_model("gateway_portal", "Team")
    Membership = apps.get_model("gateway_portal", "Membership")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    team, _ = Team.objects.get_or_create(slug="everyone", defaults={"name": "Everyone"})
    Membership.objects.bulk_create(
        [Membership(team=team, user_id=pk, role="member") for pk in User.objects.values_list("pk", flat=True)],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):


    dependencies = [
        ('gateway_portal', '0001_cache_table'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Team',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100, unique=True)),
                ('slug', models.SlugField(unique=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'ordering': ['name'],
            },
        ),
        migrations.CreateModel(
            name='Membership',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('role', models.CharField(choices=[('member', 'member'), ('admin', 'team admin')], default='member', max_length=16)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('chosen_at', models.DateTimeField(blank=True, null=True)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='memberships', to=settings.AUTH_USER_MODEL)),
                ('team', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='memberships', to='gateway_portal.team')),
            ],
            options={
                'ordering': ['team__name'],
                'constraints': [models.UniqueConstraint(fields=('team', 'user'), name='one_membership_per_team')],
            },
        ),
        migrations.RunPython(everyone_joins_the_default_team, migrations.RunPython.noop),
    ]
