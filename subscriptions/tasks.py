"""Emails the subscriptions app sends from Celery workers.

Each task takes a subscriber id and re-reads the row, so a task that runs
late, or twice, acts on the state at that moment: a confirmation goes only to
an address that is still pending, a welcome only to a confirmed one. Running
one twice (a retry after an SMTP timeout, a redelivered message) can at worst
repeat that same email; it never confirms, subscribes or emails anyone who
has left.
"""

import smtplib

from celery import shared_task

from . import emails
from .models import MAX_ID, Digest, Mailing, Subscriber

# Worth retrying: the mail server was unreachable or hung up. A refused
# recipient is not retried.
TRANSIENT = (
    ConnectionError,
    TimeoutError,
    smtplib.SMTPServerDisconnected,
    smtplib.SMTPConnectError,
)


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def send_confirmation(subscriber_id):
    subscriber = Subscriber.objects.filter(
        pk=subscriber_id, status=Subscriber.Status.PENDING
    ).first()
    if subscriber:
        emails.confirmation(subscriber)


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def send_welcome(subscriber_id):
    subscriber = Subscriber.objects.filter(
        pk=subscriber_id, status=Subscriber.Status.CONFIRMED
    ).first()
    if subscriber:
        emails.welcome(subscriber)


# Delivery. Every task takes ids and calls a model method; each is safe to
# run twice or on two workers at once: fan-out resumes from its cursor and
# its Delivery rows are unique per (mailing, reader); batches claim their
# rows with a conditional update, so a second run finds nothing to send.
# acks_late: a task whose worker dies is redelivered; the beat-driven
# sweeper re-queues whatever a lost task (or a lost broker) left behind.


@shared_task(acks_late=True)
def fan_out(mailing_id):
    mailing = Mailing.objects.filter(pk=mailing_id).first()
    if mailing and mailing.status in (Mailing.Status.QUEUED, Mailing.Status.SENDING):
        mailing.fan_out(chunks=1)  # and queues itself again to go on


@shared_task(acks_late=True)
def send_batch(mailing_id, first, last):
    mailing = Mailing.objects.filter(pk=mailing_id).first()
    return mailing.send_batch(first, last) if mailing else 0


@shared_task(acks_late=True)
def send_digests(first, last):
    return Digest.send_batch(first, last)


@shared_task
def make_digests():
    """Beat, every few minutes: create the digests due and queue them."""
    if Digest.objects.create_due():
        send_digests.delay(0, MAX_ID)


@shared_task
def sweep():
    """Beat, every minute: re-queue work stalled by a dead worker or broker."""
    return Mailing.sweep()
