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
from .models import Subscriber

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
