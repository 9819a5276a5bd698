"""A pluggable newsletter app: subscribers, mailings and deliveries.

It never imports the site that installs it; see README.md ("Subscriptions").
"""
