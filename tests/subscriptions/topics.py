"""A topics provider for the subscriptions tests (settings.SUBSCRIPTIONS_TOPICS),
so they do not depend on the site's entities."""

TOPICS = [
    ("jeff-sessions", "Jeff Sessions"),
    ("el-paso", "El Paso"),
    ("justice-department", "Justice Department"),
]


def topics():
    return TOPICS
