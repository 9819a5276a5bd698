"""The Celery tasks of subscriptions: one-line wrappers around delivery.py,
which alone queues them.

Each takes ids (never model instances) and re-reads its rows, so a task that
runs late, twice, or on two workers at once acts on the state at that
moment and sends nobody a second copy: see delivery.py for why each is safe.
acks_late: a task whose worker dies is redelivered; the beat-driven sweeper
re-queues whatever a lost task (or a lost broker) left behind.
"""

import smtplib

from celery import shared_task

from . import delivery

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
    delivery.send_confirmation(subscriber_id)


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def send_confirmations():
    """The confirmation emails of the sign-ups waiting in Redis."""
    return delivery.send_confirmations()


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def send_welcome(subscriber_id):
    delivery.send_welcome(subscriber_id)


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def send_data_link(subscriber_id):
    delivery.send_data_link(subscriber_id)


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def send_reminder(subscriber_id):
    delivery.send_reminder(subscriber_id)


@shared_task
def remind_pending():
    """Beat, hourly: one reminder to addresses pending for REMIND_AFTER."""
    return delivery.remind_pending()


@shared_task
def delete_stale_pending():
    """Beat, hourly: delete addresses pending for PENDING_MAX_AGE."""
    return delivery.delete_stale_pending()


@shared_task(acks_late=True)
def fan_out(mailing_id):
    delivery.fan_out(mailing_id, chunks=1)  # and queues itself again to go on


@shared_task(acks_late=True)
def send_mailing_batch(mailing_id, first, last):
    return delivery.send_mailing_batch(mailing_id, first, last)


@shared_task(acks_late=True)
def send_digest_batch(first, last):
    return delivery.send_digest_batch(first, last)


@shared_task(acks_late=True)
def fan_out_correction(correction_id):
    delivery.fan_out_correction(correction_id, chunks=1)  # and queues itself again to go on


@shared_task(acks_late=True)
def send_correction_batch(correction_id, first, last):
    return delivery.send_correction_batch(correction_id, first, last)


# The names these two had before they were renamed: a task queued under
# them before an upgrade, or by a worker not yet upgraded, still runs. Kept
# for one release.
@shared_task(name="subscriptions.tasks.send_batch", acks_late=True)
def send_batch_until_next_release(mailing_id, first, last):
    return delivery.send_mailing_batch(mailing_id, first, last)


@shared_task(name="subscriptions.tasks.send_digests", acks_late=True)
def send_digests_until_next_release(first, last):
    return delivery.send_digest_batch(first, last)


@shared_task
def make_digests():
    """Beat, every few minutes: create the digests due and queue them."""
    return delivery.make_digests()


@shared_task
def sweep():
    """Beat, every few seconds: put back work stalled by a dead worker or broker."""
    return delivery.sweep()
