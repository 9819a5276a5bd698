import re

from django import forms
from django.core.exceptions import ValidationError

from .conf import conf
from .models import (
    MAX_CORRECTION_LENGTH,
    MAX_NAME_LENGTH,
    Subscriber,
    clean_name,
    normalize_email,
)


class FormKind:
    """Which form a reader filled in; decides the wording kept as consent."""

    FOOTER = "footer"
    TOPIC = "topic"
    PAGE = "page"
    ALL = (FOOTER, TOPIC, PAGE)


def wording(kind, labels=()):
    """(heading, text) shown next to a subscribe form: the templates render
    these and the consent record keeps them, so what is recorded is what was
    shown. Never taken from the request."""
    site = conf.site_name
    if kind == FormKind.TOPIC and labels:
        label = ", ".join(labels)
        return f"Follow {label} by email", f"Get an email when we publish something about {label}."
    if kind == FormKind.PAGE:
        return (
            f"Subscribe to {site}",
            "Get the posts you choose sent to your email, as they are published or in a digest.",
        )
    return f"Discover more from {site}", "Subscribe to get the latest posts sent to your email."


class TopicsField(forms.MultipleChoiceField):
    """Topic keys, checked with one lookup of those keys at the topic
    provider: a site may offer 10,000 topics, and neither the pages nor the
    validation ever list them all."""

    widget = forms.CheckboxSelectMultiple
    default_error_messages = {
        "invalid_choice": "We do not know that topic; it may have been removed."
    }

    def __init__(self, **kwargs):
        super().__init__(choices=(), **kwargs)

    def validate(self, value):
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")
        known = conf.topic_labels(value)
        for key in value:
            if key not in known:
                raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")


def _clean_text(value, max_length):
    return "".join(c for c in value if c.isprintable())[:max_length]


class SharedFields(dict):
    """A form's fields, shared by all its instances. Django deep-copies a
    form's fields for each instance so that one form may change its own;
    a form that never changes them can share them instead: the copy was
    most of the subscribe form's cost on a sign-up. (Each form still has
    its own dict of them, its data, errors and bound fields.)"""

    def __deepcopy__(self, memo):
        return dict(self)


class SubscribeForm(forms.Form):
    email = forms.CharField(
        max_length=254, error_messages={"required": "Enter your email address."}
    )
    name = forms.CharField(max_length=MAX_NAME_LENGTH, required=False)
    frequency = forms.ChoiceField(
        choices=Subscriber.Frequency.choices, required=False, widget=forms.RadioSelect
    )
    topics = TopicsField(required=False)
    # Hidden: where the form was and which one it was.
    source = forms.CharField(required=False)
    form = forms.CharField(required=False)
    # The honeypot: hidden from people, filled in by bots.
    website = forms.CharField(required=False)

    def clean_email(self):
        return normalize_email(self.cleaned_data["email"])

    def clean_name(self):
        return clean_name(self.cleaned_data["name"])

    def clean_frequency(self):
        return self.cleaned_data["frequency"] or Subscriber.Frequency.INSTANT

    def clean_source(self):
        # Only a path on this site is recorded (not "//elsewhere"), without
        # a query string or fragment (tracking tags, search words).
        source = self.cleaned_data["source"].strip().split("?")[0].split("#")[0]
        source = _clean_text(source, 500)
        return source if source.startswith("/") and not source.startswith("//") else ""

    def clean_form(self):
        kind = self.cleaned_data["form"]
        return kind if kind in FormKind.ALL else FormKind.FOOTER

    def is_bot(self):
        return bool(self.data.get("website"))

    def consent_wording(self):
        kind = self.cleaned_data["form"]
        topics = self.cleaned_data["topics"]
        if kind == FormKind.TOPIC and not topics:
            kind = FormKind.FOOTER
        known = conf.topic_labels(topics)
        labels = sorted(known[key] for key in topics if key in known)
        heading, text = wording(kind, labels)
        wording_text = f"{heading}. {text}"
        if kind == FormKind.PAGE:
            frequency = Subscriber.Frequency(self.cleaned_data["frequency"]).label
            follows = ", ".join(labels) if labels else "everything"
            wording_text += f" Chosen: {frequency}; following {follows}."
        return wording_text


# Nothing changes a SubscribeForm's fields after it is made (the views only
# read them), so every instance shares the class's.
SubscribeForm.base_fields = SharedFields(SubscribeForm.base_fields)


class PreferencesForm(forms.Form):
    name = forms.CharField(max_length=MAX_NAME_LENGTH, required=False)
    frequency = forms.ChoiceField(choices=Subscriber.Frequency.choices, widget=forms.RadioSelect)
    topics = TopicsField(required=False, help_text="Tick nothing to get every post.")
    stats_opt_out = forms.BooleanField(
        required=False,
        label="Do not count my opens and clicks individually",
        help_text="We would still count them, with nobody's name on them, in each post's totals.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Only asked when the site records each reader's opens and clicks.
        if not (conf.STATS and conf.STATS_PER_READER):
            del self.fields["stats_opt_out"]

    def clean_name(self):
        return clean_name(self.cleaned_data["name"])


class ImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="Columns: email (required), name, frequency (instant, daily or weekly), "
        "topics (names or keys separated by spaces). The first line names the columns.",
    )
    confirmed = forms.BooleanField(
        label="Already consented",
        required=False,
        help_text="Tick only if these people agreed elsewhere to get this newsletter: they are "
        "subscribed at once. Otherwise each new address is sent a confirmation email.",
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if not upload.name.lower().endswith((".csv", ".txt")):
            raise ValidationError("Choose a .csv file.")
        return upload


class CorrectionForm(forms.Form):
    """An editor's correction of a post that has gone out (the admin's
    "Send a correction"): a short note, previewed before it is sent."""

    text = forms.CharField(
        label="Correction",
        max_length=MAX_CORRECTION_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="What was wrong and what is right, in a sentence or two "
        f"(at most {MAX_CORRECTION_LENGTH} characters). Readers see it as written.",
        error_messages={
            "required": "Write the correction first.",
            "max_length": "A correction is at most %(limit_value)d characters "
            "(this one has %(show_value)d): keep it short and link to the post.",
        },
    )

    def clean_text(self):
        # Line breaks stay; other control characters never reach an email.
        text = "".join(
            c if c.isprintable() or c == "\n" else " " for c in self.cleaned_data["text"]
        )
        text = "\n".join(" ".join(line.split()) for line in text.replace("\r", "").split("\n"))
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        if not text:
            raise ValidationError("Write the correction first.", code="required")
        return text
