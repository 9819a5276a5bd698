"""Every email the app sends, built from templates: for each kind a subject,
a plain-text body and an HTML body (CSS inlined with css-inline, since many
mail clients drop <style>). Templates live under subscriptions/emails/ and a
site overrides them from its own templates directory.
"""

import contextlib
import email.message
import email.policy
import email.utils
import logging
import random
import smtplib
import time
from dataclasses import dataclass, field
from datetime import timedelta

import css_inline
from django.core.cache import caches
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection
from django.core.mail.backends import console, smtp
from django.core.mail.message import sanitize_address
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.crypto import salted_hmac

from .conf import conf

logger = logging.getLogger(__name__)


def _one_line(text):
    # Subjects come from templates; newlines in one must never become a
    # header break.
    return " ".join(text.split())


@dataclass
class Parts:
    subject: str
    text: str
    html: str


def render(kind, context):
    """Subject, text and HTML (CSS inlined) of subscriptions/emails/<kind>-*."""
    context = {"site_name": conf.site_name, "site_url": conf.site_url, **context}
    prefix = f"subscriptions/emails/{kind}"
    return Parts(
        subject=_one_line(render_to_string(f"{prefix}-subject.txt", context)),
        text=render_to_string(f"{prefix}-body.txt", context),
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


def confirmation(subscriber):
    # Carries nothing the form's sender typed but the address itself, so it
    # cannot be used to mail chosen words to a stranger.
    build(
        "confirmation",
        subscriber.email,
        {"confirm_url": subscriber.confirm_url(), "max_age_days": conf.confirm_max_age.days},
    ).send()


def welcome(subscriber):
    build(
        "welcome",
        subscriber.email,
        {
            "subscriber": subscriber,
            "preferences_url": subscriber.preferences_url(),
            "unsubscribe_url": subscriber.unsubscribe_url(),
        },
        headers=list_headers(subscriber.one_click_url()),
    ).send()


# Posts and digests. Building a MIME message costs more than sending it, so
# a post's email is rendered once (Mailing.announce), turned into bytes once
# per batch with placeholders where the per-reader parts go (8bit, so the
# bodies are stored as they are), and each reader's message is those bytes
# with the placeholders replaced.

# Letters only: they survive templates, HTML escaping, URLs and header folding.
_MARK = "QZXPLACEHOLDERQZX"


def placeholder(name):
    return f"{_MARK}{name}{_MARK}"


def _reader_links():
    return {
        "unsubscribe_url": placeholder("UNSUBSCRIBE"),
        "preferences_url": placeholder("PREFERENCES"),
        "postal_address": conf.POSTAL_ADDRESS,
    }


@dataclass
class Outcome:
    """What happened to a batch of deliveries (or digests)."""

    sent: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    retry: list = field(default_factory=list)  # next_attempt_at set
    failed: list = field(default_factory=list)  # error set
    unsent: list = field(default_factory=list)  # out of time: back to pending as they were


def _call(post, name, default):
    method = getattr(post, name, None)
    return method() if callable(method) else default


def post_snapshot(post):
    """The fields of a Mailing for `post`: its email, rendered once.

    A post offers title, get_absolute_url() and published_at, and may offer
    email_summary() (plain text), email_html() (sanitised HTML, used when
    SUBSCRIPTIONS_EMAIL_CONTENT is "full"), topic_keys(), topic_links()
    ([(label, absolute URL)]), byline and email_image() ((absolute URL, alt)).
    """
    url = post.get_absolute_url()
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
    return {
        "title": post.title[:300],
        "url": url[:500],
        "summary": summary,
        "topics": sorted({str(key) for key in _call(post, "topic_keys", [])}),
        "published_at": getattr(post, "published_at", None),
        "subject": parts.subject[:300],
        "text": parts.text,
        "html": parts.html,
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
    unsubscribe = f"<{one_click_url}>"
    if conf.UNSUBSCRIBE_MAILTO:
        unsubscribe += f", <mailto:{conf.UNSUBSCRIBE_MAILTO}?subject=unsubscribe>"
    headers = {
        "List-Id": f"{_one_line(conf.site_name)} <{conf.list_id}>",
        "List-Unsubscribe": unsubscribe,
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    if conf.REPLY_TO:
        headers["Reply-To"] = conf.REPLY_TO
    return headers


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

    def raw(self):
        """The message as bytes (CRLF line ends, 8bit bodies)."""
        if self._raw is None:
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

    def for_reader(self, subscriber, message_id, raw=True, **extra):
        values = {"MESSAGEID": message_id, **subscriber.email_links(), **extra}
        if raw:
            values["TO"] = email.utils.formataddr(
                (subscriber.name, subscriber.email), charset="utf-8"
            )
            data = self.raw()
            for name, value in values.items():
                # The template's lines end in CRLF, as SMTP wants; so must these.
                data = data.replace(
                    placeholder(name).encode(), value.replace("\n", "\r\n").encode()
                )
            return PrebuiltEmail(data, subscriber.email)
        text, html = self.text, self.html
        for name, value in values.items():
            text = text.replace(placeholder(name), value)
            html = html.replace(placeholder(name), value)
        headers = {"Message-ID": f"<{message_id}>", **list_headers(values["ONECLICK"])}
        to = email.utils.formataddr((subscriber.name, subscriber.email))
        message = EmailMultiAlternatives(self.subject, text, conf.from_email, [to], headers=headers)
        message.attach_alternative(html, "text/html")
        return message


def message_id(kind, pk):
    """Stable for one (mailing, reader) or digest, so a resent message is
    recognisably the same; unguessable, so it reveals no id."""
    digest = salted_hmac("subscriptions.message-id", f"{kind}:{pk}").hexdigest()
    return f"{kind}.{digest[:24]}@{conf.list_id}"


class PrebuiltEmail(EmailMessage):
    """An EmailMessage whose bytes are already made: Django's SMTP, file and
    console backends send them as they are."""

    def __init__(self, raw, to):
        super().__init__(from_email=conf.from_email, to=[to])
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


def journal_key(kind, pk):
    return f"subscriptions:sent:{kind}:{pk}"


def journal_sent(kind, pks):
    """Of these, the ones a worker noted as accepted by the mail server (it
    may have died before telling the database)."""
    found = caches[conf.CACHE].get_many([journal_key(kind, pk) for pk in pks])
    return {pk for pk in pks if journal_key(kind, pk) in found}


def send_post(mailing, deliveries):
    """Send the mailing to each claimed delivery's reader; an Outcome."""
    template = MessageTemplate(mailing.subject, mailing.text, mailing.html)
    return deliver(
        "delivery",
        deliveries,
        lambda d, raw: template.for_reader(
            d.subscriber, message_id(f"m{mailing.pk}", d.subscriber_id), raw
        ),
    )


class _Editor:
    """Stands in for a reader in a test message: its links lead to the site."""

    def __init__(self, address):
        self.name, self.email, self.pk = "", address, 0

    def email_links(self):
        home = conf.site_url + "/"
        return {"UNSUBSCRIBE": home, "ONECLICK": home, "PREFERENCES": home}


def send_test(mailing, address):
    template = MessageTemplate(f"[Test] {mailing.subject}", mailing.text, mailing.html)
    connection = get_connection()
    message = template.for_reader(
        _Editor(address),
        message_id("test", f"{mailing.pk}.{time.time_ns()}"),
        sends_raw(connection),
    )
    connection.send_messages([message])


def sends_raw(connection):
    """Whether the backend sends message().as_bytes() as it is."""
    return isinstance(connection, (smtp.EmailBackend, console.EmailBackend))


def deliver(kind, items, build):
    """Send build(item) to each item's reader over one connection.

    Readers no longer confirmed are skipped. Each accepted message is noted
    in the shared cache at once (the journal), so a worker killed mid-batch
    re-sends at most the message in flight. Transient failures (4xx,
    dropped or refused connections, timeouts) are retried later with
    exponential backoff and jitter; 5xx refusals fail for good.
    """
    outcome = Outcome()
    journal = caches[conf.CACHE]
    connection = get_connection()
    raw = sends_raw(connection)
    smtp_direct = type(connection) is smtp.EmailBackend
    sender = sanitize_address(conf.from_email, "utf-8")
    pace = Pace()
    # Stop well before the sweeper would take this batch's claim back as a
    # dead worker's (a slow server, a low MAX_RATE): the rest go back to
    # pending for the next run.
    deadline = time.monotonic() + conf.duration("CLAIM_TIMEOUT").total_seconds() / 2
    try:
        connection.open()
    except (OSError, smtplib.SMTPException) as error:
        for item in items:
            _retry(outcome, item, f"could not connect: {error}")
        return outcome
    try:
        options = []
        if smtp_direct:
            # If the greeting fails, the first send fails too and is retried.
            with contextlib.suppress(OSError, smtplib.SMTPException):
                connection.connection.ehlo_or_helo_if_needed()
                if connection.connection.has_extn("8bitmime"):
                    options = ["BODY=8BITMIME"]
        for index, item in enumerate(items):
            if time.monotonic() > deadline:
                outcome.unsent.extend(items[index:])
                break
            subscriber = item.subscriber
            if subscriber is None or subscriber.status != subscriber.Status.CONFIRMED:
                outcome.skipped.append(item)
                continue
            pace.wait()
            try:
                message = build(item, raw)
                if smtp_direct:
                    # Django's SMTP backend would parse both addresses again
                    # for each message; ours are checked already.
                    connection.connection.sendmail(sender, [subscriber.email], message.raw, options)
                else:
                    connection.send_messages([message])
            except smtplib.SMTPRecipientsRefused as error:
                code, text = next(iter(error.recipients.values()))
                _fail_or_retry(outcome, item, code, text)
            except smtplib.SMTPDataError as error:
                _fail_or_retry(outcome, item, error.smtp_code, error.smtp_error)
            except UnicodeError:
                # A non-ASCII local part needs SMTPUTF8, which this path does not speak.
                _fail_or_retry(outcome, item, 553, "address cannot be sent without SMTPUTF8")
                if smtp_direct:
                    with contextlib.suppress(OSError, smtplib.SMTPException):
                        connection.connection.rset()
            except (OSError, smtplib.SMTPException) as error:
                # The connection is gone or the server is in trouble: retry
                # this reader later; reconnect for the next one.
                _retry(outcome, item, str(error) or type(error).__name__)
                try:
                    connection.close()
                    connection.open()
                except (OSError, smtplib.SMTPException) as reconnect_error:
                    for rest in items[index + 1 :]:
                        _retry(outcome, rest, f"could not connect: {reconnect_error}")
                    break
            else:
                outcome.sent.append(item)
                try:
                    journal.set(journal_key(kind, item.pk), 1, timeout=7 * 24 * 3600)
                except Exception:  # noqa: BLE001 - any cache backend's error
                    # The cache is down (Redis restarting): the batch still
                    # records this send in the database when it ends; only
                    # a crash before then would repeat it.
                    logger.warning("Send journal unavailable for %s %s", kind, item.pk)
    finally:
        try:
            connection.close()
        except (OSError, smtplib.SMTPException):
            pass
    return outcome


def _fail_or_retry(outcome, item, code, text):
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    if 500 <= int(code) < 600:
        item.permanent = True
        item.attempts += 1
        item.error = f"{code} {text}"[:500]
        outcome.failed.append(item)
    else:
        _retry(outcome, item, f"{code} {text}")


def _retry(outcome, item, error):
    item.attempts += 1
    item.error = str(error)[:500]
    if item.attempts >= conf.MAX_ATTEMPTS:
        item.error = f"gave up after {item.attempts} attempts: {item.error}"[:500]
        outcome.failed.append(item)
        return
    base = conf.duration("RETRY_BACKOFF").total_seconds() * 2 ** (item.attempts - 1)
    delay = min(base, conf.duration("RETRY_BACKOFF_MAX").total_seconds())
    item.next_attempt_at = timezone.now() + timedelta(seconds=delay * random.uniform(0.5, 1.5))
    outcome.retry.append(item)


class Pace:
    """At most SUBSCRIPTIONS_MAX_RATE messages a second across all workers
    (an email provider's quota), counted per second in the shared cache."""

    def __init__(self):
        # At least one a second: the counter is per second.
        self.rate = max(1, int(conf.MAX_RATE)) if conf.MAX_RATE else None
        self.cache = caches[conf.CACHE]

    def wait(self):
        if not self.rate:
            return
        while True:
            now = time.time()
            key = f"subscriptions:pace:{int(now)}"
            self.cache.add(key, 0, timeout=5)
            if self.cache.incr(key) <= self.rate:
                return
            time.sleep(int(now) + 1 - now)


def send_digests(digests, posts):
    """Send each digest to its reader, listing posts[digest.pk] (Mailings);
    an Outcome. Each post's entry is rendered once per batch."""
    items = {}

    def item(mailing):
        if mailing.pk not in items:
            context = {"mailing": mailing, "site_name": conf.site_name}
            items[mailing.pk] = (
                render_to_string("subscriptions/emails/digest-item.html", context),
                render_to_string("subscriptions/emails/digest-item.txt", context),
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

    def build(digest, raw):
        entries = [item(m) for m in posts.get(digest.pk, [])]
        return template(digest.period).for_reader(
            digest.subscriber,
            message_id("d", digest.pk),
            raw,
            ITEMSHTML=_short_lines("\n".join(h for h, _ in entries)).rstrip("\n"),
            ITEMSTEXT=_short_lines("\n\n".join(t.strip() for _, t in entries)).rstrip("\n"),
        )

    # A digest with nothing to list is never sent (its posts were erased).
    empty = [d for d in digests if not posts.get(d.pk)]
    outcome = deliver("digest", [d for d in digests if posts.get(d.pk)], build)
    outcome.skipped += empty
    return outcome
