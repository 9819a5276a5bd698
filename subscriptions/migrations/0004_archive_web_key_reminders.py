import uuid

from django.db import migrations, models


def give_keys(apps, schema_editor):
    # A callable default gives every existing row the same value in one
    # AddField: each mailing gets its own key here instead.
    Mailing = apps.get_model("subscriptions", "Mailing")
    for mailing in Mailing.objects.only("pk").iterator():
        Mailing.objects.filter(pk=mailing.pk).update(web_key=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0003_sendable_ambiguous"),
    ]

    operations = [
        migrations.AddField(
            model_name="subscriber",
            name="reminded_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When the one reminder to confirm was sent (pending addresses only).",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="mailing",
            name="web_key",
            field=models.UUIDField(editable=False, null=True),
        ),
        migrations.RunPython(give_keys, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="mailing",
            name="web_key",
            field=models.UUIDField(
                default=uuid.uuid4,
                editable=False,
                help_text="Random: the address of the email's web version (/email/<key>/), "
                "which cannot be guessed from the post's id or slug.",
                unique=True,
            ),
        ),
        migrations.AddIndex(
            model_name="mailing",
            index=models.Index(fields=["status", "-created_at", "-id"], name="mailing_archive_idx"),
        ),
    ]
