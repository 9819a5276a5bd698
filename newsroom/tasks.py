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
