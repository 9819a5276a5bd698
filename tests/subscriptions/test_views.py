import json
import re
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone, translation

from subscriptions import tokens
from subscriptions.models import Subscriber
from tests.factories import make_subscriber

Status = Subscriber.Status
SUBSCRIBE = "/subscribe/"

pytestmark = pytest.mark.django_db


def post_subscribe(client, email="ann@example.com", ip="10.0.0.1", **data):
    return client.post(
        SUBSCRIBE,
        {"email": email, "source": "/articles/report/", **data},
        REMOTE_ADDR=ip,
        HTTP_USER_AGENT="TestBrowser/1.0",
    )


def without_csrf(content):
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]*"', b"", content)


class TestSubscribe:
    def test_the_subscribe_page_offers_frequency_and_topics(self, client):
        response = client.get(SUBSCRIBE)
        assert response.status_code == 200
        html = response.content.decode()
        assert 'name="frequency" value="weekly"' in html
        assert 'name="topics" value="el-paso"' in html
        assert 'name="website"' in html

    def test_it_records_a_pending_subscriber_with_consent_from_the_footer(self, client):
        response = post_subscribe(client, email=" Ann@Example.COM", form="footer")
        assert response.status_code == 200
        assert b"Check your inbox" in response.content
        subscriber = Subscriber.objects.get()
        assert subscriber.email == "Ann@example.com"
        assert subscriber.status == Status.PENDING
        assert subscriber.follows_everything
        assert subscriber.consent_page == "http://127.0.0.1:8000/articles/report/"
        assert subscriber.consent_wording == (
            "Discover more from Newsroom. Subscribe to get the latest posts sent to your email."
        )
        assert subscriber.consent_ip == "10.0.0.1"
        assert subscriber.consent_user_agent == "TestBrowser/1.0"

    def test_the_topic_form_records_the_follow_and_its_wording(self, client):
        post_subscribe(client, form="topic", topics="el-paso", source="/places/el-paso/")
        subscriber = Subscriber.objects.get()
        assert subscriber.topics() == ["el-paso"]
        assert not subscriber.follows_everything
        assert subscriber.consent_wording.startswith("Follow El Paso by email.")
        assert subscriber.consent_page.endswith("/places/el-paso/")

    def test_the_wording_recorded_is_never_the_clients(self, client):
        post_subscribe(client, form="Yes I agree to anything", wording="lies", heading="lies")
        assert "lies" not in Subscriber.objects.get().consent_wording

    def test_the_full_page_records_frequency_and_topics(self, client):
        post_subscribe(
            client, form="page", frequency="daily", topics=["el-paso", "jeff-sessions"], name="Ann"
        )
        subscriber = Subscriber.objects.get()
        assert (subscriber.frequency, subscriber.name) == ("daily", "Ann")
        assert subscriber.topics() == ["el-paso", "jeff-sessions"]
        assert "A daily digest" in subscriber.consent_wording

    @pytest.mark.parametrize(
        "data",
        [
            {"email": "not an address"},
            {"email": ""},
            {"email": "ann@example.com", "frequency": "hourly"},
            {"email": "ann@example.com", "topics": "no-such-topic"},
            {"email": "ann@example.com\r\nBcc: x@evil.example"},
        ],
    )
    def test_bad_input_gets_the_form_back_with_an_error_and_stores_nothing(self, client, data):
        response = client.post(SUBSCRIBE, data)
        assert response.status_code == 400
        assert b'role="alert"' in response.content
        assert Subscriber.objects.count() == 0

    def test_a_bad_address_is_kept_in_the_form_for_correction(self, client):
        response = client.post(SUBSCRIBE, {"email": "ann@exa mple", "topics": "el-paso"})
        html = response.content.decode()
        assert "Enter a valid email address" in html
        assert 'value="ann@exa mple"' in html
        assert re.search(r'value="el-paso"[^>]*checked', html)

    def test_the_honeypot_stores_nothing_but_looks_like_success(self, client):
        response = post_subscribe(client, website="http://spam.example")
        assert response.status_code == 200
        assert b"Check your inbox" in response.content
        assert Subscriber.objects.count() == 0

    def test_get_never_subscribes(self, client):
        client.get(SUBSCRIBE, {"email": "ann@example.com"})
        assert Subscriber.objects.count() == 0

    def test_the_answer_is_the_same_whatever_the_address_state(self, client):
        make_subscriber("pending@example.com", status=Status.PENDING)
        make_subscriber("confirmed@example.com")
        make_subscriber("left@example.com", status=Status.UNSUBSCRIBED)
        make_subscriber("bounced@example.com", status=Status.SUPPRESSED)
        addresses = [
            "new@example.com",
            "pending@example.com",
            "confirmed@example.com",
            "left@example.com",
            "bounced@example.com",
        ]
        # Frozen clock: the Expires header names the second of the answer.
        with time_machine.travel(timezone.now(), tick=False):
            responses = [
                post_subscribe(client, email=address, ip=f"10.0.1.{i}")
                for i, address in enumerate(addresses)
            ]
        assert {r.status_code for r in responses} == {200}
        assert len({without_csrf(r.content) for r in responses}) == 1
        header_sets = {
            tuple(sorted((k, v) for k, v in r.headers.items() if k.lower() != "set-cookie"))
            for r in responses
        }
        assert len(header_sets) == 1

    def test_too_many_posts_from_one_ip_get_429(self, client, settings):
        settings.SUBSCRIPTIONS_RATELIMIT_IP = "3/h"
        statuses = [post_subscribe(client, email=f"r{i}@example.com").status_code for i in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert b"Too many attempts" in post_subscribe(client, email="y@example.com").content
        assert Subscriber.objects.count() == 3
        assert post_subscribe(client, email="x@example.com", ip="10.9.9.9").status_code == 200


class TestRateLimits:
    """Both limits counted in one Redis round trip (ratelimits.py), on
    django-ratelimit's own counters."""

    def test_a_sign_up_counts_both_limits_in_one_round_trip(self, client, monkeypatch):
        import redis

        commands = []
        real = redis.Redis.execute_command

        def counted(self, *args, **options):
            commands.append(args[0])
            return real(self, *args, **options)

        post_subscribe(client, email="a@example.com")  # the script is loaded
        monkeypatch.setattr(redis.Redis, "execute_command", counted)
        assert post_subscribe(client, email="b@example.com").status_code == 200
        assert commands == ["EVALSHA"]  # the confirmation's push waits for the commit

    def test_the_counters_are_django_ratelimits(self, client, rf):
        from django_ratelimit.core import get_usage

        for address in ("a@example.com", "b@example.com", "a@example.com"):
            post_subscribe(client, email=address, ip="10.0.0.7")

        from subscriptions.conf import conf

        def count(group, key):
            request = rf.post(SUBSCRIBE, REMOTE_ADDR="10.0.0.7")
            rate = getattr(conf, f"RATELIMIT_{group.upper()}")
            usage = get_usage(request, f"subscriptions.subscribe.{group}", key=key, rate=rate)
            return usage["count"]

        assert count("ip", "ip") == 3
        assert count("email", lambda g, r: "a@example.com") == 2
        assert count("email", lambda g, r: "b@example.com") == 1

    def test_bad_posts_count_against_the_ip_and_a_limited_ip_spends_no_address(
        self, client, settings
    ):
        settings.SUBSCRIPTIONS_RATELIMIT_IP = "2/h"
        settings.SUBSCRIPTIONS_RATELIMIT_EMAIL = "1/h"
        assert post_subscribe(client, email="not an address").status_code == 400
        assert post_subscribe(client, email="ann@example.com").status_code == 200
        assert post_subscribe(client, email="bob@example.com").status_code == 429
        # Bob's one sign-up an hour was not spent by the refused post.
        assert post_subscribe(client, email="bob@example.com", ip="10.0.0.9").status_code == 200
        assert set(Subscriber.objects.values_list("email", flat=True)) == {
            "ann@example.com",
            "bob@example.com",
        }

    def test_without_a_per_ip_limit_the_ip_is_not_asked_for(self, client, settings):
        # Behind a proxy on a unix socket REMOTE_ADDR is empty, which
        # django-ratelimit refuses to key on.
        settings.SUBSCRIPTIONS_RATELIMIT_IP = None
        assert post_subscribe(client, ip="").status_code == 200
        assert Subscriber.objects.count() == 1

    @pytest.mark.parametrize(
        "forwarded, recorded",
        [("203.0.113.7", "203.0.113.7"), ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6")],
    )
    def test_behind_a_proxy_the_consent_records_the_readers_whole_ip(
        self, client, settings, forwarded, recorded
    ):
        """The IP the rate limits read (RATELIMIT_IP_META_KEY), not the
        proxy's, and not masked to a /64 as the rate limits key it."""
        settings.RATELIMIT_IP_META_KEY = "HTTP_X_REAL_IP"
        response = client.post(
            SUBSCRIBE,
            {"email": "ann@example.com"},
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_REAL_IP=forwarded,
        )
        assert response.status_code == 200
        assert Subscriber.objects.get().consent_ip == recorded

    @pytest.mark.parametrize(
        "forwarded", ["not-an-ip", "203.0.113.7, 10.0.0.1", "", "1.2.3.4/8", "fe80::1%eth"]
    )
    def test_a_forwarded_ip_that_is_no_ip_is_not_a_500_nor_a_way_around_the_limit(
        self, client, settings, forwarded
    ):
        """Reached without the proxy, anyone can send the header; garbage
        in it shares one bucket (rotating it escapes nothing) and is not
        recorded as the consent's IP."""
        settings.RATELIMIT_IP_META_KEY = "HTTP_X_REAL_IP"
        settings.SUBSCRIPTIONS_RATELIMIT_IP = "2/h"
        codes = [
            client.post(
                SUBSCRIBE,
                {"email": f"r{i}@example.com"},
                REMOTE_ADDR="127.0.0.1",
                HTTP_X_REAL_IP=f"{forwarded}{'x' * i}",
            ).status_code
            for i in range(3)
        ]
        assert codes == [200, 200, 429]
        assert set(Subscriber.objects.values_list("consent_ip", flat=True)) == {None}

    def test_another_cache_counts_them_one_by_one(self, client, settings, monkeypatch):
        from subscriptions import rediscache

        monkeypatch.setattr(rediscache, "DefaultClient", type("Other", (), {}))
        settings.SUBSCRIPTIONS_RATELIMIT_IP = "2/h"
        settings.SUBSCRIPTIONS_RATELIMIT_EMAIL = "1/h"
        statuses = [post_subscribe(client, email=e).status_code for e in ("a@x.org", "a@x.org")]
        assert statuses == [200, 200] and Subscriber.objects.count() == 1
        assert post_subscribe(client, email="c@x.org").status_code == 429


class TestTheCheckInboxPage:
    """Rendered once and copied (views.SamePage): the same for every reader,
    so copying it changes nothing a reader can see."""

    def test_it_is_rendered_once_and_copied_after(self, client):
        first = post_subscribe(client, email="a@example.com")
        second = post_subscribe(client, email="b@example.com", ip="10.0.0.2")
        assert [t.name for t in first.templates][:1] == ["subscriptions/check_inbox.html"]
        assert second.templates == []  # not rendered: copied
        assert second.content == first.content
        assert second["Content-Type"] == first["Content-Type"]
        assert Subscriber.objects.count() == 2

    def test_a_new_day_or_a_changed_setting_renders_it_again(self, client, settings):
        # The header shows the date: seconds apart, but not the same day.
        midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        midnight += timedelta(days=1)
        with time_machine.travel(midnight - timedelta(seconds=5), tick=False):
            post_subscribe(client, email="a@example.com")
            assert post_subscribe(client, email="b@example.com").templates == []
        with time_machine.travel(midnight + timedelta(seconds=5), tick=False):
            assert post_subscribe(client, email="c@example.com").templates != []
            settings.SITE_NAME = "The Daily Bugle"
            response = post_subscribe(client, email="d@example.com")
        assert b"The Daily Bugle" in response.content

    def test_a_reader_in_another_language_gets_a_page_in_theirs(self, client):
        post_subscribe(client, email="a@example.com")
        with translation.override("fr"):
            french = post_subscribe(client, email="b@example.com", ip="10.0.0.2")
            assert post_subscribe(client, email="c@example.com", ip="10.0.0.3").templates == []
        assert french.templates != []  # rendered in French, then copied
        assert post_subscribe(client, email="d@example.com", ip="10.0.0.4").templates == []

    def test_a_page_that_reads_the_reader_is_rendered_for_each(self, client, settings):
        # A site's own check_inbox.html showing the CSRF token (a form in
        # its header): every reader gets a page with their own.
        settings.TEMPLATES = [
            {
                **settings.TEMPLATES[0],
                "APP_DIRS": False,
                "OPTIONS": {
                    **settings.TEMPLATES[0]["OPTIONS"],
                    "loaders": [
                        (
                            "django.template.loaders.locmem.Loader",
                            {"subscriptions/check_inbox.html": "Check your inbox {{ csrf_token }}"},
                        ),
                        "django.template.loaders.filesystem.Loader",
                        "django.template.loaders.app_directories.Loader",
                    ],
                },
            }
        ]
        first = post_subscribe(client, email="a@example.com")
        second = post_subscribe(client, email="b@example.com")
        assert b"Check your inbox" in first.content
        assert second.templates != [] and second.content != first.content


def confirm_url(subscriber):
    return reverse("subscriptions:confirm", args=[subscriber.make_token(Subscriber.CONFIRM)])


class TestConfirm:
    def test_get_shows_a_button_and_changes_nothing(self, client):
        subscriber = make_subscriber(status=Status.PENDING)
        response = client.get(confirm_url(subscriber))
        assert response.status_code == 200
        assert b'<button type="submit">Confirm</button>' in response.content
        subscriber.refresh_from_db()
        assert subscriber.status == Status.PENDING

    def test_post_confirms_and_welcomes(self, client):
        subscriber = make_subscriber(status=Status.PENDING)
        response = client.post(confirm_url(subscriber))
        assert response.status_code == 200
        assert b"Welcome to Newsroom" in response.content
        subscriber.refresh_from_db()
        assert subscriber.status == Status.CONFIRMED

    def test_a_second_post_is_harmless(self, client):
        subscriber = make_subscriber(status=Status.PENDING)
        client.post(confirm_url(subscriber))
        response = client.post(confirm_url(subscriber))
        assert response.status_code == 200
        assert b"Welcome" in response.content

    def test_it_refuses_a_tampered_token(self, client):
        subscriber = make_subscriber(status=Status.PENDING)
        token = subscriber.make_token(Subscriber.CONFIRM)
        bad = reverse("subscriptions:confirm", args=["x" + token[1:]])
        for method in (client.get, client.post):
            response = method(bad)
            assert response.status_code == 400
            assert b"This link is not valid" in response.content
        subscriber.refresh_from_db()
        assert subscriber.status == Status.PENDING

    def test_it_refuses_an_expired_token(self, client):
        subscriber = make_subscriber(status=Status.PENDING)
        url = confirm_url(subscriber)
        with time_machine.travel(timezone.now() + timedelta(days=8)):
            response = client.post(url)
        assert response.status_code == 400
        assert b"This link has expired" in response.content
        subscriber.refresh_from_db()
        assert subscriber.status == Status.PENDING

    def test_a_confirm_token_cannot_unsubscribe(self, client):
        subscriber = make_subscriber()
        token = subscriber.make_token(Subscriber.CONFIRM)
        for name in ("unsubscribe", "preferences", "erase"):
            response = client.post(reverse(f"subscriptions:{name}", args=[token]))
            assert response.status_code == 400, name
        response = client.post(
            reverse("subscriptions:one_click", args=[token]),
            {"List-Unsubscribe": "One-Click"},
        )
        assert response.status_code == 400
        subscriber.refresh_from_db()
        assert subscriber.status == Status.CONFIRMED
        assert Subscriber.objects.filter(pk=subscriber.pk).exists()


def unsubscribe_url(subscriber, name="unsubscribe"):
    return reverse(f"subscriptions:{name}", args=[subscriber.make_token(Subscriber.UNSUBSCRIBE)])


class TestUnsubscribe:
    def test_get_shows_a_button_and_changes_nothing(self, client):
        subscriber = make_subscriber()
        response = client.get(unsubscribe_url(subscriber))
        assert response.status_code == 200
        assert b'<button type="submit">Unsubscribe</button>' in response.content
        subscriber.refresh_from_db()
        assert subscriber.status == Status.CONFIRMED

    def test_post_unsubscribes(self, client):
        subscriber = make_subscriber()
        response = client.post(unsubscribe_url(subscriber))
        assert response.status_code == 200
        assert b"You are unsubscribed" in response.content
        subscriber.refresh_from_db()
        assert subscriber.status == Status.UNSUBSCRIBED

    def test_post_needs_the_csrf_token(self):
        from django.test import Client

        subscriber = make_subscriber()
        response = Client(enforce_csrf_checks=True).post(unsubscribe_url(subscriber))
        assert response.status_code == 403
        subscriber.refresh_from_db()
        assert subscriber.status == Status.CONFIRMED


class TestOneClick:
    def test_a_valid_one_click_post_unsubscribes_without_csrf(self):
        from django.test import Client

        subscriber = make_subscriber()
        response = Client(enforce_csrf_checks=True).post(
            unsubscribe_url(subscriber, "one_click"), {"List-Unsubscribe": "One-Click"}
        )
        assert response.status_code == 200
        subscriber.refresh_from_db()
        assert subscriber.status == Status.UNSUBSCRIBED

    def test_it_accepts_multipart_bodies_too(self, client):
        subscriber = make_subscriber()
        response = client.post(
            unsubscribe_url(subscriber, "one_click"),
            data="List-Unsubscribe=One-Click",
            content_type="application/x-www-form-urlencoded",
        )
        assert response.status_code == 200
        subscriber.refresh_from_db()
        assert subscriber.status == Status.UNSUBSCRIBED

    @pytest.mark.parametrize(
        "mangle, body",
        [
            (lambda t: t[:-3] + "abc", {"List-Unsubscribe": "One-Click"}),
            (lambda t: "garbage", {"List-Unsubscribe": "One-Click"}),
            (lambda t: t, {"List-Unsubscribe": "Yes"}),
            (lambda t: t, {}),
        ],
    )
    def test_an_invalid_one_click_changes_nothing(self, client, mangle, body):
        subscriber = make_subscriber()
        token = mangle(subscriber.make_token(Subscriber.UNSUBSCRIBE))
        response = client.post(reverse("subscriptions:one_click", args=[token]), body)
        assert response.status_code == 400
        subscriber.refresh_from_db()
        assert subscriber.status == Status.CONFIRMED

    def test_get_is_not_allowed(self, client):
        subscriber = make_subscriber()
        assert client.get(unsubscribe_url(subscriber, "one_click")).status_code == 405
        subscriber.refresh_from_db()
        assert subscriber.status == Status.CONFIRMED


def preferences_url(subscriber, name="preferences"):
    return reverse(f"subscriptions:{name}", args=[subscriber.make_token(Subscriber.PREFERENCES)])


def data_url(subscriber, name="erase"):
    """The link the data-link email carries (tokens.DATA)."""
    return reverse(f"subscriptions:{name}", args=[subscriber.make_token(tokens.DATA)])


class TestPreferences:
    def test_it_shows_the_current_choices(self, client):
        subscriber = make_subscriber(name="Ann", topics=["el-paso"], frequency="weekly")
        html = client.get(preferences_url(subscriber)).content.decode()
        assert 'value="Ann"' in html
        assert re.search(r'value="weekly"[^>]*checked', html)
        assert re.search(r'value="el-paso"[^>]*checked', html)
        assert not re.search(r'value="jeff-sessions"[^>]*checked', html)

    def test_it_saves_frequency_follows_and_name(self, client):
        subscriber = make_subscriber()
        response = client.post(
            preferences_url(subscriber),
            {"name": "Ann\r\nLee", "frequency": "daily", "topics": ["jeff-sessions"]},
        )
        assert response.status_code == 200
        assert b"Saved." in response.content
        subscriber.refresh_from_db()
        assert (subscriber.name, subscriber.frequency) == ("Ann Lee", "daily")
        assert subscriber.topics() == ["jeff-sessions"]
        assert not subscriber.follows_everything

    def test_bad_input_changes_nothing(self, client):
        subscriber = make_subscriber(name="Ann")
        response = client.post(
            preferences_url(subscriber), {"name": "Bob", "frequency": "hourly", "topics": ["x"]}
        )
        assert response.status_code == 400
        assert b"Nothing was changed" in response.content
        subscriber.refresh_from_db()
        assert (subscriber.name, subscriber.frequency, subscriber.follows_everything) == (
            "Ann",
            "instant",
            True,
        )

    def test_it_offers_unsubscribe_and_a_link_to_download_or_delete(self, client):
        subscriber = make_subscriber()
        html = client.get(preferences_url(subscriber)).content.decode()
        assert "/subscribe/unsubscribe/" in html
        assert reverse("subscriptions:data_link", args=["TOKEN"]).split("TOKEN")[0] in html
        assert "Email me a link to download or delete my data" in html
        # The preferences link, in every email and never expiring, opens
        # neither the download nor the erasure.
        assert "data.json" not in html

    def test_the_preferences_link_cannot_download_or_erase(self, client):
        subscriber = make_subscriber("ann@example.com")
        token = subscriber.make_token(Subscriber.PREFERENCES)
        for path in (
            reverse("subscriptions:download_data", args=[token]),
            reverse("subscriptions:erase", args=[token]),
            # Where they were.
            f"/subscribe/preferences/{token}/data.json",
            f"/subscribe/preferences/{token}/delete/",
        ):
            for method in (client.get, client.post):
                response = method(path)
                assert response.status_code in (400, 404, 405), path
                assert b"ann@example.com" not in response.content, path
        assert Subscriber.objects.filter(pk=subscriber.pk).exists()

    def test_the_data_link_expires(self, client, settings):
        subscriber = make_subscriber()
        url = data_url(subscriber)
        assert client.get(url).status_code == 200
        with time_machine.travel(timezone.now() + timedelta(minutes=61)):
            for response in (client.get(url), client.post(url)):
                assert response.status_code == 400
                assert b"This link has expired. Ask for a new one" in response.content
        assert Subscriber.objects.filter(pk=subscriber.pk).exists()

    def test_download_my_data(self, client):
        subscriber = make_subscriber(
            "ann@example.com", name="Ann", topics=["el-paso"], consent_wording="Subscribe."
        )
        response = client.get(data_url(subscriber, "download_data"))
        assert response.status_code == 200
        assert "attachment" in response["Content-Disposition"]
        data = json.loads(response.content)
        assert data["email"] == "ann@example.com"
        assert data["topics"] == ["el-paso"]
        assert data["consent"]["wording"] == "Subscribe."

    def test_delete_asks_on_get_and_erases_on_post(self, client):
        subscriber = make_subscriber()
        url = data_url(subscriber)
        page = client.get(url)
        assert page.status_code == 200
        assert b"data.json" in page.content
        assert Subscriber.objects.filter(pk=subscriber.pk).exists()
        response = client.post(url)
        assert response.status_code == 200
        assert b"Your data is deleted" in response.content
        assert not Subscriber.objects.filter(pk=subscriber.pk).exists()
        assert client.get(preferences_url(subscriber)).status_code == 400

    def test_a_tampered_preferences_token_is_refused(self, client):
        response = client.get(reverse("subscriptions:preferences", args=["abc:def:ghi"]))
        assert response.status_code == 400


def test_a_broker_outage_does_not_fail_the_sign_up(
    client, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    """Celery's real publishing, to a broker address where nothing listens."""
    from celery import current_app

    from tests.support import free_port

    monkeypatch.setattr(current_app.conf, "broker_url", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setattr(current_app, "_pool", None)  # connections to the dead broker
    monkeypatch.setattr(current_app.amqp, "_producer_pool", None)
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = post_subscribe(client)
    finally:
        current_app.amqp._producer_pool = None
        current_app._pool = None
    assert len(callbacks) == 1
    assert response.status_code == 200
    assert Subscriber.objects.get().status == Status.PENDING
    failures = [r for r in caplog.records if "enqueue" in r.getMessage()]
    assert failures and failures[0].exc_info  # the send really failed, and was logged


def test_subscribe_forms_share_their_fields_but_not_their_data_or_errors(rf):
    """SubscribeForm's fields are not copied for each form (a sign-up's
    cost); what a reader typed and the errors stay with their own form."""
    from subscriptions.forms import SubscribeForm

    bad = SubscribeForm({"email": "not an address", "name": "Ann"})
    good = SubscribeForm({"email": "bob@example.com"})
    blank = SubscribeForm()
    assert all(bad.fields[name] is good.fields[name] is blank.fields[name] for name in bad.fields)
    assert bad.fields is not good.fields
    assert not bad.is_valid() and "email" in bad.errors
    assert good.is_valid() and good.errors == {}
    assert good.cleaned_data["email"] == "bob@example.com"
    bad_html, blank_html = str(bad["email"]), str(blank["email"])
    assert "not an address" in bad_html and 'aria-invalid="true"' in bad_html
    assert "not an address" not in blank_html and "aria-invalid" not in blank_html
