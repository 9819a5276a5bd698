"""Every email the app sends, built from templates: for each kind a subject,
a plain-text body and an HTML body (CSS inlined with css-inline, since many
mail clients drop <style>). Templates live under subscriptions/emails/ and a
site overrides them from its own templates directory.

Rendering only: each function returns messages; transports.py sends them.
"""

import email.message
import email.policy
import email.utils
import functools
import re
import time
import uuid
from dataclasses import dataclass

import css_inline
from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.template import Context
from django.template.loader import get_template, render_to_string
from django.urls import reverse
from django.utils.crypto import salted_hmac

from . import tokens
from .conf import conf


def _one_line(text):
    # Subjects come from templates; newlines in one must never become a
    # header break.
    return " ".join(text.split())


@dataclass
class Parts:
    subject: str
    text: str
    html: str


def render_text(name, context):
    """A subject or plain-text template, without HTML escaping: titles and
    names show as written ("Q&A", not "Q&amp;A"), whatever the template
    (or a site's override of it) says."""
    return get_template(name).template.render(Context(context, autoescape=False))


def render(kind, context):
    """Subject, text and HTML (CSS inlined) of subscriptions/emails/<kind>-*.
    Only the HTML part is escaped."""
    context = {"site_name": conf.site_name, "site_url": conf.site_url, **context}
    prefix = f"subscriptions/emails/{kind}"
    return Parts(
        subject=_one_line(render_text(f"{prefix}-subject.txt", context)),
        text=render_text(f"{prefix}-body.txt", context),
        html=css_inline.inline(render_to_string(f"{prefix}-body.html", context)),
    )


def build(kind, to, context, headers=None):
    """The EmailMultiAlternatives for subscriptions/emails/<kind>-*."""
    parts = render(kind, context)
    # The bare address only: names never go into headers.
    message = EmailMultiAlternatives(
        parts.subject, parts.text, conf.from_email, [to], headers=headers
    )
    message.attach_alternative(parts.html, "text/html")
    return message


def confirmation(subscriber, kind="confirmation"):
    # Carries nothing the form's sender typed but the address itself, so it
    # cannot be used to mail chosen words to a stranger.
    remind = conf.REMIND_AFTER and kind == "confirmation"
    return build(
        kind,
        subscriber.email,
        {
            "confirm_url": subscriber.confirm_url(),
            "max_age_days": conf.confirm_max_age.days,
            "remind_days": conf.duration("REMIND_AFTER").days if remind else None,
        },
    )


def reminder(subscriber):
    """The one reminder to a pending address: the confirmation, a fresh link."""
    return confirmation(subscriber, kind="reminder")


def data_link(subscriber):
    """The short-lived link to download or erase one's data, to the address
    only: the preferences link in every email does not open those."""
    url = conf.absolute_url(tokens.path("erase", subscriber.make_token(tokens.DATA)))
    minutes = int(conf.duration("DATA_LINK_MAX_AGE").total_seconds() // 60)
    return build("data-link", subscriber.email, {"data_url": url, "minutes": minutes})


def welcome(subscriber):
    return build(
        "welcome",
        subscriber.email,
        {
            "subscriber": subscriber,
            "preferences_url": subscriber.preferences_url(),
            "unsubscribe_url": subscriber.unsubscribe_url(),
        },
        headers=list_headers(subscriber.one_click_url()),
    )


# Posts and digests. Building a MIME message costs more than sending it, so
# a post's email is rendered once (delivery.announce), turned into bytes once
# per batch with placeholders where the per-reader parts go (8bit, so the
# bodies are stored as they are), and each reader's message is those bytes
# with the placeholders replaced.

# Letters only: they survive templates, HTML escaping, URLs and header folding.
_MARK = "QZXPLACEHOLDERQZX"


def placeholder(name):
    return f"{_MARK}{name}{_MARK}"


_PLACEHOLDER = re.compile(rf"{_MARK}(\w+?){_MARK}".encode())


def _reader_links():
    return {
        "unsubscribe_url": placeholder("UNSUBSCRIBE"),
        "preferences_url": placeholder("PREFERENCES"),
        "postal_address": conf.POSTAL_ADDRESS,
    }


def _call(post, name, default):
    method = getattr(post, name, None)
    return method() if callable(method) else default


def post_snapshot(post):
    """The fields of a Mailing for `post`: its email, rendered once.

    A post offers title, get_absolute_url() and published_at, and may offer
    email_summary() (plain text), email_html() (sanitised HTML, used when
    SUBSCRIPTIONS_EMAIL_CONTENT is "full"), topic_keys(), topic_links()
    ([(label, absolute URL)]), byline and email_image() ((absolute URL, alt)).
    A post with a true `email_only` has no public page: its address, in the
    email and the digests, is its web version's (random, unguessable).
    """
    web_key = uuid.uuid4()
    url = post.get_absolute_url()
    if getattr(post, "email_only", False):
        url = reverse("newsletter:web_version", args=[web_key])
    if url.startswith("/"):
        url = conf.absolute_url(url)
    summary = _call(post, "email_summary", "")
    full = conf.EMAIL_CONTENT == "full"
    context = {
        "title": post.title,
        "url": url,
        "summary": summary,
        "body_html": _call(post, "email_html", "") if full else "",
        "topic_links": _call(post, "topic_links", []),
        # Optional: the post's byline, date and lead image ((absolute URL, alt)).
        "byline": getattr(post, "byline", ""),
        "published_at": getattr(post, "published_at", None),
        "image": _call(post, "email_image", None),
        **_reader_links(),
    }
    parts = render("post", context)
    from .stats import links_in  # stats.py renders with this module's placeholders

    return {
        "title": post.title[:300],
        "url": url[:500],
        "summary": summary,
        "topics": sorted({str(key) for key in _call(post, "topic_keys", [])}),
        "published_at": getattr(post, "published_at", None),
        "subject": parts.subject[:300],
        "text": parts.text,
        "html": parts.html,
        "web_key": web_key,
        # What a reader's copy may link to through the click redirect (stats.py).
        "links": links_in(parts.html, parts.text),
    }


def _short_lines(text, limit=900):
    """No line over `limit` bytes (SMTP allows 998): a long line is broken at
    its last space within the limit (where HTML and plain text read the
    same), or at the limit when it has none."""
    out = []
    for line in text.splitlines():
        while len(line.encode()) > limit:
            head = line.encode()[:limit].decode(errors="ignore")
            cut = head.rfind(" ")
            if cut > 0:
                out.append(head[:cut])
                line = line[cut + 1 :]
            else:
                out.append(head)
                line = line[len(head) :]
        out.append(line)
    return "\n".join(out) + "\n"


def list_headers(one_click_url):
    """The list headers of every email to a subscriber: RFC 2369 List-Id
    and List-Unsubscribe, RFC 8058 one-click, and Reply-To when set."""
    headers = {
        "List-Id": f"{_one_line(conf.site_name)} <{conf.list_id}>",
        "List-Unsubscribe": list_unsubscribe(one_click_url),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    if conf.REPLY_TO:
        headers["Reply-To"] = conf.REPLY_TO
    return headers


def list_unsubscribe(one_click_url):
    """The List-Unsubscribe header's value (list_headers)."""
    if conf.UNSUBSCRIBE_MAILTO:
        return f"<{one_click_url}>, <mailto:{conf.UNSUBSCRIBE_MAILTO}?subject=unsubscribe>"
    return f"<{one_click_url}>"


class MessageTemplate:
    """One email for many readers: subject, text and HTML with placeholders
    for each reader's parts.

    for_reader() makes the reader's EmailMessage. For Django's SMTP, console
    and file backends it is the whole message as bytes, made once per
    template and copied with the placeholders replaced (building MIME costs
    more than sending it); other backends (an email provider's API through
    django-anymail, locmem) get an ordinary EmailMultiAlternatives.
    """

    def __init__(self, subject, text, html):
        self.subject, self.text, self.html = _one_line(subject), text, html
        self._raw = None
        self._parts = None

    def raw(self):
        """The message as bytes (CRLF line ends, 8bit bodies)."""
        if self._raw is None:
            self._from = conf.from_email
            message = email.message.EmailMessage(policy=email.policy.SMTP.clone(cte_type="8bit"))
            # Header values can hold no line breaks (Message raises on them),
            # so a title with CR/LF can never add a header.
            message["Subject"] = self.subject
            message["From"] = conf.from_email
            message["To"] = placeholder("TO")
            message["Date"] = email.utils.formatdate(localtime=False)
            message["Message-ID"] = f"<{placeholder('MESSAGEID')}>"
            for name, value in list_headers(placeholder("ONECLICK")).items():
                message[name] = value
            message.set_content(_short_lines(self.text), cte="8bit")
            message.add_alternative(_short_lines(self.html), subtype="html", cte="8bit")
            self._raw = message.as_bytes()
        return self._raw

    def parts(self):
        """raw() cut at its placeholders: [bytes, name, bytes, name, …, bytes]."""
        if self._parts is None:
            parts = _PLACEHOLDER.split(self.raw())
            parts[1::2] = [name.decode("ascii") for name in parts[1::2]]
            self._parts = parts
        return self._parts

    def for_reader(self, subscriber, message_id, raw=True, links=None, **extra):
        values = self.values(subscriber, message_id, links, **extra)
        if raw:
            values["TO"] = email.utils.formataddr(
                (subscriber.name, subscriber.email), charset="utf-8"
            )
            # The template's lines end in CRLF, as SMTP wants; so must these.
            found = {name: value.replace("\n", "\r\n").encode() for name, value in values.items()}
            parts = self.parts()
            pieces = [parts[0]]
            for index in range(1, len(parts), 2):
                name = parts[index]
                pieces.append(found[name] if name in found else placeholder(name).encode())
                pieces.append(parts[index + 1])
            return PrebuiltEmail(b"".join(pieces), subscriber.email, self._from)
        text, html = self.text, self.html
        for name, value in values.items():
            text = text.replace(placeholder(name), value)
            html = html.replace(placeholder(name), value)
        headers = {"Message-ID": f"<{message_id}>", **list_headers(values["ONECLICK"])}
        to = email.utils.formataddr((subscriber.name, subscriber.email))
        message = EmailMultiAlternatives(self.subject, text, conf.from_email, [to], headers=headers)
        message.attach_alternative(html, "text/html")
        return message

    # A provider's batch call (django-anymail's batch sending): one message
    # for many readers, each reader's parts written in the provider's merge
    # syntax, which the provider fills in per recipient.

    def values(self, subscriber, message_id, links=None, **extra):
        """{placeholder name: this reader's value}. `links`: the reader's
        email_links(), when the caller made them already."""
        return {"MESSAGEID": message_id, **(links or subscriber.email_links()), **extra}

    def for_readers(self, readers, field, metadata=None, links=None):
        """One EmailMultiAlternatives for many readers, for a provider's
        batch send: `readers` is [(subscriber, values)], `field(name, html)`
        the provider's merge syntax for the value `name` (in the HTML part
        or elsewhere); each reader's values go in merge_data, their
        Message-ID and List-Unsubscribe in merge_headers, and
        metadata[address] in merge_metadata.

        `links` ({placeholder: (before, name, after)}, as
        Subscriber.email_tokens_maker makes them): a reader's value of that
        placeholder is before + values[name] + after. The message then
        carries the site and path once, around the provider's field, and
        each reader's merge_data only their tokens, not their URLs. Headers
        stay whole values in merge_headers: a provider fills a header whose
        value is one field (anymail's merge_headers), and Mailgun does not
        document filling a field inside a longer header value."""
        links = links or {}
        text, html = self.text, self.html
        names = {name for _, values in readers for name in values}
        used = set()
        for name in sorted(names | set(links)):
            if placeholder(name) not in text + html:
                continue
            before, key, after = links.get(name, ("", name, ""))
            used.add(key)
            text = text.replace(placeholder(name), f"{before}{field(key, False)}{after}")
            html = html.replace(placeholder(name), f"{before}{field(key, True)}{after}")
        static = list_headers("")
        del static["List-Unsubscribe"]
        # One pass over the readers; List-Unsubscribe is before + token + after.
        before, _, after = list_unsubscribe("\0").partition("\0")
        one_click = "ONECLICK"
        if one_click in links:
            link_before, one_click, link_after = links["ONECLICK"]
            before, after = before + link_before, link_after + after
        to, merge_data, merge_headers = [], {}, {}
        for s, values in readers:
            address = s.email
            # formataddr((name, address)) is the address when there is no
            # name (it raises for a non-ASCII one: left to it).
            to.append(
                address
                if not s.name and address.isascii()
                else email.utils.formataddr((s.name, address))
            )
            merge_data[address] = {name: value for name, value in values.items() if name in used}
            merge_headers[address] = {
                "Message-ID": f"<{values['MESSAGEID']}>",
                "List-Unsubscribe": f"{before}{values[one_click]}{after}",
            }
        message = EmailMultiAlternatives(self.subject, text, conf.from_email, to, headers=static)
        message.attach_alternative(html, "text/html")
        message.merge_data = merge_data
        message.merge_headers = merge_headers
        if metadata:
            message.merge_metadata = metadata
        return message


def fill(text, values):
    """`text` with each placeholder replaced by its value in `values`."""
    for name, value in values.items():
        text = text.replace(placeholder(name), value)
    return text


def message_id(kind, pk, domain=None):
    """Stable for one (mailing, reader) or digest, so a resent message is
    recognisably the same; unguessable, so it reveals no id. `domain`:
    conf.list_id, when the caller has it already."""
    return message_ids(kind, domain)(pk)


def message_ids(kind, domain=None):
    """message_id(kind, ·, domain) as a function of pk, for a batch."""
    # salted_hmac("subscriptions.message-id", f"{kind}:{pk}"), its key
    # derived once per SECRET_KEY rather than per message.
    key, domain = _message_id_mac(settings.SECRET_KEY), domain or conf.list_id

    def of(pk):
        mac = key.copy()
        mac.update(f"{kind}:{pk}".encode())
        return f"{kind}.{mac.hexdigest()[:24]}@{domain}"

    return of


@functools.lru_cache(maxsize=4)
def _message_id_mac(secret):
    return tokens.keyed(salted_hmac("subscriptions.message-id", b"", secret))


class PrebuiltEmail(EmailMessage):
    """An EmailMessage whose bytes are already made: Django's SMTP, file and
    console backends send them as they are."""

    def __init__(self, raw, to, from_email=None):
        super().__init__(from_email=from_email or conf.from_email, to=[to])
        self.raw = raw

    def message(self, policy=None):
        return _RawMessage(self.raw)


class _RawMessage:
    def __init__(self, raw):
        self.raw = raw

    def as_bytes(self, unixfrom=False, linesep="\n", policy=None):
        return self.raw if linesep == "\r\n" else self.raw.replace(b"\r\n", linesep.encode())

    def get_charset(self):
        return None


class _Editor:
    """Stands in for a reader in a test message: its links lead to the site."""

    def __init__(self, address):
        self.name, self.email, self.pk = "", address, 0

    def email_links(self):
        home = conf.site_url + "/"
        return {"UNSUBSCRIBE": home, "ONECLICK": home, "PREFERENCES": home}


def post(mailing):
    """build(delivery, raw) for transports.deliver: the mailing's email for
    the delivery's reader. With SUBSCRIPTIONS_STATS on, and only then, the
    reader's copy (never the stored snapshot) gets the tracking pixel and
    its links go through the click redirect (stats.tracked).
    build.template, build.values(delivery) (that reader's values: their
    tokens, not their links) and build.links() (the links around those
    tokens) let a provider's batch call carry many readers in one message
    (MessageTemplate.for_readers)."""
    text, html, extra = mailing.text, mailing.html, lambda subscriber: {}
    if conf.STATS:
        from . import stats

        (text, html), extra = stats.tracked(mailing), stats.reader_values
    template = MessageTemplate(mailing.subject, text, html)
    message_id_of = message_ids(f"m{mailing.pk}")
    # The readers' email_links() and email tokens, made alike for the whole batch.
    maker = tokens_maker = None

    def links(subscriber):
        nonlocal maker
        if maker is None:
            maker = subscriber.email_links_maker()
        return maker(subscriber)

    def reader_tokens(subscriber):
        nonlocal tokens_maker
        if tokens_maker is None:
            tokens_maker = subscriber.email_tokens_maker()
        return tokens_maker[0](subscriber)

    def values(delivery):
        subscriber = delivery.subscriber
        return {
            "MESSAGEID": message_id_of(delivery.subscriber_id),
            **reader_tokens(subscriber),
            **extra(subscriber),
        }

    def links_around():
        return tokens_maker[1] if tokens_maker else None

    def build(delivery, raw):
        subscriber = delivery.subscriber
        return template.for_reader(
            subscriber,
            message_id_of(delivery.subscriber_id),
            raw,
            links(subscriber),
            **extra(subscriber),
        )

    build.template = template
    build.values = values
    build.links = links_around
    return build


def test_post(mailing, address, raw):
    """The mailing's email as readers get it, for an editor's `address`;
    its links lead to the site."""
    template = MessageTemplate(f"[Test] {mailing.subject}", mailing.text, mailing.html)
    return template.for_reader(
        _Editor(address), message_id("test", f"{mailing.pk}.{time.time_ns()}"), raw
    )


def correction_snapshot(mailing, note):
    """Subject, text and HTML of a correction to `mailing`, rendered once
    (the reader's links are placeholders): "Correction: {title}"."""
    return render(
        "correction",
        {"title": mailing.title, "url": mailing.url, "note": note, **_reader_links()},
    )


def correction(correction):
    """build(row, raw) for transports.deliver: the correction for the row's reader."""
    template = MessageTemplate(correction.subject, correction.email_text, correction.email_html)
    return lambda row, raw: template.for_reader(
        row.subscriber, message_id(f"c{correction.pk}", row.subscriber_id), raw
    )


def correction_preview(mailing, note, address):
    """(subject, text, HTML) of a correction as a reader will get it, for
    the editor's preview; its links lead to the site."""
    parts = correction_snapshot(mailing, note)
    message = MessageTemplate(parts.subject, parts.text, parts.html).for_reader(
        _Editor(address), message_id("preview", mailing.pk), raw=False
    )
    return message.subject, message.body, message.alternatives[0][0]


def digest(posts, follows=None, labels=None):
    """build(digest, raw) for transports.deliver: the digest listing
    posts[digest.pk] (Mailings) for its reader, grouped by what they follow
    (follows[digest.pk]: topic keys; labels: {key: label}) — under each
    followed topic, in the order of their labels, each post once, under the
    first of its topics the reader follows. A reader who follows everything
    gets one list. Each post's entry and each heading is rendered once per
    batch."""
    follows, labels = follows or {}, labels or {}
    items, headings = {}, {}

    def heading(label):
        if label not in headings:
            context = {"label": label}
            headings[label] = (
                render_to_string("subscriptions/emails/digest-group.html", context),
                render_text("subscriptions/emails/digest-group.txt", context),
            )
        return headings[label]

    def sections(one):
        """[(heading or None, [Mailing, …])] for one digest."""
        mailings = posts.get(one.pk, [])
        keys = sorted(follows.get(one.pk, ()), key=lambda key: labels.get(key, key).casefold())
        if not keys:
            return [(None, mailings)]
        groups, rest = {key: [] for key in keys}, []
        for mailing in mailings:
            key = next((key for key in keys if key in mailing.topics), None)
            (groups[key] if key else rest).append(mailing)
        found = [(heading(labels.get(key, key)), group) for key, group in groups.items() if group]
        return found + ([(heading("More"), rest)] if rest else [])

    def item(mailing):
        if mailing.pk not in items:
            context = {"mailing": mailing, "site_name": conf.site_name}
            items[mailing.pk] = (
                render_to_string("subscriptions/emails/digest-item.html", context),
                render_text("subscriptions/emails/digest-item.txt", context),
            )
        return items[mailing.pk]

    templates = {}

    def template(period):
        frequency = period.split(":")[0]
        if frequency not in templates:
            context = {
                "frequency": frequency,
                "items_html": placeholder("ITEMSHTML"),
                "items_text": placeholder("ITEMSTEXT"),
                **_reader_links(),
            }
            parts = render("digest", context)
            templates[frequency] = MessageTemplate(parts.subject, parts.text, parts.html)
        return templates[frequency]

    def for_reader(one, raw):
        html, text = [], []
        for head, mailings in sections(one):
            entries = ([head] if head else []) + [item(m) for m in mailings]
            html += [h for h, _ in entries]
            text += [t.strip() for _, t in entries]
        return template(one.period).for_reader(
            one.subscriber,
            message_id("d", one.pk),
            raw,
            ITEMSHTML=_short_lines("\n".join(html)).rstrip("\n"),
            ITEMSTEXT=_short_lines("\n\n".join(text)).rstrip("\n"),
        )

    return for_reader


# The web version (the archive) and the editor's preview: the email as
# readers get it, without any reader's links.

# Templates put what belongs only in a reader's inbox (their preferences and
# unsubscribe links, "View in browser") between <!--inbox--> and
# <!--/inbox-->; the web version drops it.
_INBOX_ONLY = re.compile(r"<!--\s*inbox\s*-->.*?<!--\s*/inbox\s*-->", re.DOTALL)
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.DOTALL | re.IGNORECASE)


def _without_reader_parts(html):
    """`html` with no trace of a reader: the marked blocks go, and, in case
    an override forgot the marks, any link carrying a reader's placeholder
    loses its address, any other element carrying one goes, and a
    placeholder left in the text is blanked."""
    html = _INBOX_ONLY.sub("", html)
    # A link's words stay, its address goes.
    html = re.sub(rf"<a\b[^>]*{_MARK}[^>]*>", "<a>", html, flags=re.IGNORECASE)
    html = re.sub(rf"<[a-z][^>]*{_MARK}[^>]*>", "", html, flags=re.IGNORECASE)
    return re.sub(rf"{_MARK}\w*?{_MARK}", "", html)


def web_version(mailing):
    """The HTML inside the <body> of the mailing's email, as readers got it
    but without any reader's links: for the archive's web version page."""
    html = _without_reader_parts(mailing.html)
    found = _BODY.search(html)
    return found.group(1) if found else html


class _SampleReader(_Editor):
    """A reader who does not exist, for the preview: links lead to the site."""

    def __init__(self):
        super().__init__("reader@example.com")
        self.name = "A Reader"


def preview(post):
    """The email `post` would get if announced now, for a sample reader: a
    Parts of subject, text and HTML. Renders only; stores nothing."""
    snapshot = post_snapshot(post)
    template = MessageTemplate(snapshot["subject"], snapshot["text"], snapshot["html"])
    message = template.for_reader(_SampleReader(), message_id("preview", 0), raw=False)
    return Parts(subject=message.subject, text=message.body, html=message.alternatives[0][0])
