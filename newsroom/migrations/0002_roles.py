"""The two newsroom roles: Authors write, Editors also publish."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

AUTHOR_PERMISSIONS = [
    "add_article", "change_article", "view_article",
    "add_articleentity", "change_articleentity", "delete_articleentity", "view_articleentity",
    "add_entity", "change_entity", "view_entity",
]  # fmt: skip
EDITOR_PERMISSIONS = AUTHOR_PERMISSIONS + [
    "delete_article", "publish_article", "delete_entity",
    "view_entityredirect", "delete_entityredirect",
]  # fmt: skip


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations have run; make
    # sure they exist now so the groups can be given them on a fresh database.
    newsroom = apps.get_app_config("newsroom")
    newsroom.models_module = True
    create_permissions(newsroom, apps=apps, verbosity=0)
    newsroom.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in (("Authors", AUTHOR_PERMISSIONS), ("Editors", EDITOR_PERMISSIONS)):
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label="newsroom", codename__in=codenames)
        )


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Authors", "Editors"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("newsroom", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
