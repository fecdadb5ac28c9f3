"""The compliance officers' group, holding the view permissions officers need (and nothing more):
chat/access.py's officer test is "superuser, or staff in this group". Staff who held those
permissions one by one before join it, so nobody loses what they could read."""

from django.db import migrations

GROUP = "Compliance officers"
# Frozen here, as a migration should be (gateway_portal.models.OFFICER_PERMISSIONS is the live list).
PERMISSIONS = [
    ("audit", "view_auditentry"), ("audit", "view_usagerecord"),
    ("chat", "view_conversation"), ("chat", "view_message"),
]


def create_the_group(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are made after all migrations (post_migrate); on a fresh database make them now.
    for label in ("audit", "chat"):
        config = apps.get_app_config(label)
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    User = apps.get_model("auth", "User")
    group, _ = Group.objects.get_or_create(name=GROUP)
    permissions = [Permission.objects.get(content_type__app_label=app, codename=code) for app, code in PERMISSIONS]
    group.permissions.add(*permissions)
    # Until now an officer was staff with the usage records' view permission (directly).
    for user in User.objects.filter(is_staff=True, is_superuser=False, user_permissions__codename="view_usagerecord",
                                    user_permissions__content_type__app_label="audit"):
        user.groups.add(group)


def remove_the_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("gateway_portal", "0005_team_retention_days"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("audit", "0007_audit_events"),
        ("chat", "0004_team"),
    ]

    operations = [migrations.RunPython(create_the_group, remove_the_group)]
