"""An article's email send time; Editors may cancel a mailing in its undo
window and send corrections (subscriptions' permissions)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations, models

# What Editors may do with the newsletter: see mailings and their ledger,
# cancel a send (change_mailing) and send a correction (add_correction).
EDITOR_NEWSLETTER_PERMISSIONS = [
    "view_mailing", "change_mailing", "view_delivery", "view_correction", "add_correction",
]  # fmt: skip


def grant(apps, schema_editor):
    app = apps.get_app_config("subscriptions")
    app.models_module = True
    create_permissions(app, apps=apps, verbosity=0)
    app.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    editors = Group.objects.filter(name="Editors").first()
    if editors:
        editors.permissions.add(
            *Permission.objects.filter(
                content_type__app_label="subscriptions", codename__in=EDITOR_NEWSLETTER_PERMISSIONS
            )
        )


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    editors = Group.objects.filter(name="Editors").first()
    if editors:
        editors.permissions.remove(
            *Permission.objects.filter(
                content_type__app_label="subscriptions", codename__in=EDITOR_NEWSLETTER_PERMISSIONS
            )
        )


class Migration(migrations.Migration):
    dependencies = [
        ("newsroom", "0005_archive_email_only"),
        ("subscriptions", "0005_editor_send_time_and_corrections"),
    ]

    operations = [
        migrations.AddField(
            model_name="article",
            name="email_send_at",
            field=models.DateTimeField(
                blank=True,
                help_text="Leave empty to email it shortly after it goes live (the mailing can be "
                "cancelled until then). A later time schedules the email. Used when it goes live.",
                null=True,
                verbose_name="send the email at",
            ),
        ),
        migrations.RunPython(grant, revoke),
    ]
