"""Newsroom's periodic work.

publish_due_articles runs every 30 seconds from Celery beat. It is safe to run
twice or on two workers at once: Article.publish() takes an article live with
a conditional update, so only one run can publish any one article.
"""

from celery import shared_task

from .models import Article


@shared_task
def publish_due_articles():
    return [article.pk for article in Article.publish_due()]


@shared_task
def announce_missed_articles():
    """Every minute: live articles whose announce was lost get their mailing.
    Safe twice: announce is idempotent (one Mailing per post)."""
    return Article.announce_missed()
