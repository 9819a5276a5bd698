"""Email providers whose APIs take many readers in one call, through
django-anymail's batch sending (merge_data / merge_headers / merge_metadata).

A provider listed here is first-class: transports.ProviderTransport sends
a post to up to `per_call` readers in one API call, each reader's links,
Message-ID and List-Unsubscribe filled in by the provider (or, for
Postmark, in each message of its batch call). A reader's share of the call
is their tokens, not their URLs: the links' site and paths are written once
in the message around the merge field (emails.MessageTemplate.for_readers);
headers go as whole values. Every other Django email
backend, and any other anymail provider, sends one message per reader.

What anymail 15.2 does for each (checked in its source):
- Mailgun: `to` lists every reader; merge_data becomes `recipient-variables`
  and the body says %recipient.NAME%; merge_headers become h:Name headers
  with %recipient.h:Name% values; merge_metadata v:name. Up to 1,000
  recipients per call (Mailgun's documented limit for batch sending). One
  invalid `to` fails the whole call with 400.
- Postmark: /email/batch, up to 500 messages per call, one per reader, with
  its own headers and metadata; anymail does not fill merge_data into an
  inline body (only into stored templates), so each message's body is
  filled here, in a payload derived from anymail's. Postmark answers each
  message with its own ErrorCode.
- SparkPost: one transmission with a recipient per reader, merge_data as
  each recipient's substitution_data ({{name}}; {{{name}}} unescaped in
  the HTML part, as our own path inserts links), merge_headers through
  substitution_data too. It answers only how many it accepted and
  rejected: a mixed answer cannot say who, so those readers count as sent,
  flagged ambiguous (a rejected address comes back through the webhook).
Not batched: Resend (anymail refuses merge_data), Amazon SES (bulk sends
need a stored template), SendGrid (anymail 15 dropped its support), and
the rest.
"""

import functools
import re
import secrets
from dataclasses import dataclass

from . import emails


@dataclass(frozen=True)
class Provider:
    name: str
    per_call: int  # recipients one API call may carry (the provider's limit)

    def field(self, name, html):
        """The provider's merge syntax for the value `name`."""
        raise NotImplementedError

    def prepare(self, message):
        """Last touches to the batch message for this provider."""
        return message

    def connection(self, connection):
        """The backend to send the batch message with."""
        return connection


class Mailgun(Provider):
    def field(self, name, html):
        return f"%recipient.{name}%"

    def connection(self, connection):
        return _as(connection, _mailgun_backend())


class SparkPost(Provider):
    def field(self, name, html):
        return "{{{" + name + "}}}" if html else "{{" + name + "}}"


class Postmark(Provider):
    def field(self, name, html):
        return emails.placeholder(name)  # filled in here, message by message

    def prepare(self, message):
        # anymail refuses merge_data without a stored template.
        message.reader_values = message.merge_data
        del message.merge_data
        return message

    def connection(self, connection):
        return _as(connection, _postmark_backend())


def _as(connection, backend):
    """`connection` (an anymail backend, configured) as a `backend`, its
    subclass here."""
    if isinstance(connection, backend):
        return connection
    batch = backend.__new__(backend)
    batch.__dict__.update(connection.__dict__)
    return batch


PROVIDERS = {
    "anymail.backends.mailgun.EmailBackend": Mailgun("mailgun", 1000),
    "anymail.backends.postmark.EmailBackend": Postmark("postmark", 500),
    "anymail.backends.sparkpost.EmailBackend": SparkPost("sparkpost", 1000),
}


def provider_of(connection):
    """The first-class Provider behind this email backend, or None."""
    cls = type(connection)
    for klass in cls.__mro__:
        found = PROVIDERS.get(f"{klass.__module__}.{klass.__name__}")
        if found:
            return found
    return None


# Postmark answers a batch call with one {ErrorCode, Message} per message, in
# order: 0 accepted, 300 an invalid address, 406 an inactive (bounced or
# complaining) one; anything else is that message's own failure.
POSTMARK_REFUSED = {300: "invalid", 406: "rejected"}

_postmark = None


def _postmark_backend():
    """anymail's Postmark backend, filling each message's body with its
    reader's values and reading each message's answer of a batch call."""
    global _postmark
    if _postmark is not None:
        return _postmark
    from anymail.backends.postmark import EmailBackend, PostmarkPayload
    from anymail.exceptions import AnymailRequestsAPIError
    from anymail.message import AnymailRecipientStatus

    class Payload(PostmarkPayload):
        def data_for_recipient(self, to):
            data = super().data_for_recipient(to)
            values = getattr(self.message, "reader_values", {}).get(to.addr_spec)
            if values:
                for key in ("TextBody", "HtmlBody"):
                    if key in data:
                        data[key] = emails.fill(data[key], values)
            return data

    class Backend(EmailBackend):
        def build_message_payload(self, message, defaults):
            return Payload(message, defaults, self)

        def parse_recipient_status(self, response, payload, message):
            answers = self.deserialize_json_response(response, payload, message)
            if not isinstance(answers, list) or len(answers) != len(payload.to_emails):
                return super().parse_recipient_status(response, payload, message)
            statuses, errors = {}, {}
            for to, answer in zip(payload.to_emails, answers, strict=True):
                if not isinstance(answer, dict) or "ErrorCode" not in answer:
                    raise AnymailRequestsAPIError(
                        "Invalid Postmark API response format",
                        email_message=message,
                        payload=payload,
                        response=response,
                        backend=self,
                    )
                code = answer["ErrorCode"]
                if code == 0:
                    status = AnymailRecipientStatus(answer.get("MessageID"), "sent")
                else:
                    status = AnymailRecipientStatus(None, POSTMARK_REFUSED.get(code, "failed"))
                    errors[to.addr_spec] = f"ErrorCode {code}: {answer.get('Message', '')}"
                statuses[to.addr_spec] = status
            message.recipient_errors = errors
            return statuses

    _postmark = Backend
    return Backend


# A plain address, as a subscription form accepts them: a dot-atom local part
# and a domain of letters, digits and hyphens, optionally after a display
# name of letters, digits and spaces (formataddr leaves those unquoted).
_PLAIN_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN = re.compile(
    r"(?:(?P<name>[A-Za-z0-9]+(?: [A-Za-z0-9]+)*) <)?"
    rf"(?P<local>{_PLAIN_ATOM}(?:\.{_PLAIN_ATOM})*)"
    r"@(?P<domain>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+)"
    r"(?(name)>)"
)


def parse_recipients(addresses):
    """anymail's parse_address_list(addresses, field="to"), the same
    EmailAddress objects, without parsing the plain addresses readers have:
    anymail's parser costs a third of a millisecond per address, a third of
    a second per 1,000-reader call. Anything else goes through it."""
    from anymail.utils import parse_address_list

    plain, parsed = _plain_address(), []
    for address in addresses:
        match = _PLAIN.fullmatch(address) if isinstance(address, str) else None
        if match:
            parsed.append(plain(address, match["name"] or "", match["local"], match["domain"]))
        else:
            parsed.extend(parse_address_list([address], field="to"))
    return parsed


@functools.cache
def _plain_address():
    """anymail's EmailAddress for an address _PLAIN matches, made without
    parsing or formatting it again: its parts are what the match found, its
    addr_spec "local@domain" and its formatted address the text itself (a
    plain name and a dot-atom local part need no quoting, an ASCII domain
    no IDNA). Address's own __init__ validates and its properties format on
    every read: for a 1,000-reader call, three reads each of a thousand."""
    from anymail.utils import EmailAddress

    class PlainAddress(EmailAddress):
        addr_spec = None  # Address's property, shadowed: each instance's own

        def __init__(self, text, name, local, domain):
            self._display_name, self._username, self._domain = name, local, domain
            self.addr_spec = f"{local}@{domain}"
            self.address = text  # EmailAddress.address, a cached_property

        def format(self, *, use_rfc2047=False, idna_encode=None):
            if use_rfc2047 == "force":
                return super().format(use_rfc2047=use_rfc2047, idna_encode=idna_encode)
            return self.address

    return PlainAddress


def per_recipient(values):
    """anymail's force_non_lazy_dict for {address: {name: value}} (merge
    data, headers, metadata): the same copy, without raising and catching an
    exception for each of a thousand readers' values when they are plain
    strings (ours are); anything else goes through anymail's."""
    from anymail.utils import force_non_lazy_dict

    copied = {}
    for address, fields in values.items():
        if type(address) is not str or type(fields) is not dict:
            return force_non_lazy_dict(values)
        for value in fields.values():
            if type(value) is not str:
                return force_non_lazy_dict(values)
        copied[address] = dict(fields)
    return copied


# anymail's converters replaced for a batch call (see parse_recipients).
FAST_CONVERTERS = {
    "to": parse_recipients,
    "merge_data": per_recipient,
    "merge_metadata": per_recipient,
}


def _plain_batch(payload):
    """Whether a Mailgun payload is a batch of the kind this app sends:
    per-reader data, headers and metadata, nothing shared by all readers."""
    return bool(
        payload.merge_data
        and payload.merge_headers
        and payload.merge_metadata
        and not payload.metadata
        and not payload.merge_global_data
        and payload.data.get("template") is None
    )


# A field name that needs no quoting in a Content-Disposition header.
_FIELD_NAME = re.compile(r"[A-Za-z0-9:._-]+")


def multipart_form(fields, boundary=None):
    """(body, content type) of a multipart/form-data form of `fields`
    ((name, str or bytes value) pairs), as urllib3's
    encode_multipart_formdata makes it (the same bytes, but for the random
    boundary), made in one join rather than through a field object, its
    rendered headers and a codec writer for each of a call's thousand `to`
    values. A name that would need quoting goes through urllib3's."""
    if not all(_FIELD_NAME.fullmatch(name) for name, _ in fields):
        from urllib3 import encode_multipart_formdata

        return encode_multipart_formdata(fields, boundary)
    boundary = boundary or secrets.token_hex(16)
    # Text joined as text and encoded once (UTF-8 of a join is the join of
    # the UTF-8s); a bytes value ends the text before it.
    parts, text = [], []
    for name, value in fields:
        text.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n')
        if isinstance(value, bytes):
            parts += ["".join(text).encode(), value]
            text = ["\r\n"]
        else:
            text += [str(value), "\r\n"]
    text.append(f"--{boundary}--\r\n")
    parts.append("".join(text).encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


_mailgun = None


def _mailgun_backend():
    """anymail's Mailgun backend, its batch call built with less work per
    reader: plain addresses are not parsed again (parse_recipients), the
    recipient-variables are made in one pass, and the form goes as
    multipart/form-data, as Mailgun's documentation sends it, rather than
    percent-encoded byte by byte (a third of a second per 1,000-reader
    call), joined in one go (multipart_form)."""
    global _mailgun
    if _mailgun is not None:
        return _mailgun
    from anymail.backends.mailgun import EmailBackend, MailgunPayload, flatset

    class Payload(MailgunPayload):
        base_message_attrs, anymail_message_attrs = (
            tuple(
                (attr, combiner, FAST_CONVERTERS.get(attr, converter))
                for attr, combiner, converter in attrs
            )
            for attrs in (MailgunPayload.base_message_attrs, MailgunPayload.anymail_message_attrs)
        )

        def populate_recipient_variables(self):
            if not _plain_batch(self):
                return super().populate_recipient_variables()
            # What anymail's does for a batch with per-reader data, headers
            # and metadata and nothing shared (no metadata, global merge data
            # or stored template): the same fields, the same JSON, key for
            # key in the same order, with one dict made per reader rather
            # than three merged, and each header's h: name made once rather
            # than once per reader.
            meta = [
                (key, f"v:{key}")
                for key in flatset(values.keys() for values in self.merge_metadata.values())
            ]
            # (union: the copy anymail iterates, in its order)
            data = list(flatset(values.keys() for values in self.merge_data.values()).union(()))
            headers = [
                (name, f"h:{name.title()}")
                for name in flatset(values.keys() for values in self.merge_headers.values())
            ]
            defaults = {hname: self.data.get(hname, "") for _, hname in headers}
            self.data.update({hname: f"%recipient.{hname}%" for _, hname in headers})
            merge_metadata, merge_data = self.merge_metadata, self.merge_data
            merge_headers, variables = self.merge_headers, {}
            for address in self.to_emails:
                own = merge_metadata.get(address, {})
                row = {vkey: own.get(key, "") for key, vkey in meta}
                own = merge_data.get(address, {})
                for key in data:
                    row[key] = own.get(key, "")
                own = merge_headers.get(address, {})
                for name, hname in headers:
                    row[hname] = own.get(name, defaults[hname])
                if address in variables:
                    variables[address].update(row)
                else:
                    variables[address] = row
            self.data.update({vkey: f"%recipient.{vkey}%" for _, vkey in meta})
            if variables or self.is_batch():
                self.data["recipient-variables"] = self.serialize_json(variables)

        def serialize_data(self):
            data = super().serialize_data()
            if self.files:  # attachments: requests makes the multipart form
                return data
            fields = [
                (name, value)
                for name, values in data.items()
                for value in (values if isinstance(values, list) else [values])
                if value is not None  # as requests leaves them out
            ]
            body, self.headers["Content-Type"] = multipart_form(fields)
            return body

    class Backend(EmailBackend):
        def build_message_payload(self, message, defaults):
            return Payload(message, defaults, self)

    _mailgun = Backend
    return Backend
