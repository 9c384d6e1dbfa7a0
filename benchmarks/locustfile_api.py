"""Salespeople using the API: searching, paging, opening leads, previewing a template (for bench_api.py).

Run by ``benchmarks/bench_api.py`` (``make bench-api``), which seeds the database, starts the API and
sets the environment below; Locust's own CLI runs it headless:

    locust -f benchmarks/locustfile_api.py --headless -u 50 -r 50 -t 60s --host http://127.0.0.1:PORT

BENCH_API_KEY      the API key (HTTP Bearer)
BENCH_LEAD_IDS     "first-last": the seeded leads' id range
BENCH_TEMPLATE_ID  a template to preview
BENCH_WAIT         "min-max" seconds each user thinks between requests ("0-0": as fast as it can)
BENCH_TIMELINE     optional: a file to append each request to: its start (epoch s), time (ms), 1 if it
                   failed else 0, and its type
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, between, events, task
from sales_queries import QUERIES  # beside this file; Locust puts its directory on sys.path

FIRST_LEAD, LAST_LEAD = (int(x) for x in os.environ.get("BENCH_LEAD_IDS", "1-1000").split("-"))
TEMPLATE_ID = int(os.environ.get("BENCH_TEMPLATE_ID", "1"))
WAIT_MIN, WAIT_MAX = (float(x) for x in os.environ.get("BENCH_WAIT", "0-0").split("-"))
PAGE = 25
TIMELINE = os.environ.get("BENCH_TIMELINE")

if TIMELINE:
    _timeline = open(TIMELINE, "a", buffering=1)  # noqa: SIM115 - open while Locust runs

    @events.request.add_listener
    def _note(name: str, response_time: float, start_time: float, exception: object = None, **_: object) -> None:
        _timeline.write(f"{start_time:.3f} {response_time:.1f} {int(exception is not None)} {name}\n")


class Salesperson(FastHttpUser):
    wait_time = between(WAIT_MIN, WAIT_MAX)

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {os.environ['BENCH_API_KEY']}"}
        self.query = random.choice(QUERIES)

    @task(4)
    def search_first_page(self) -> None:
        self.query = random.choice(QUERIES)
        self.client.get(
            "/api/v1/lead/",
            params={"query": self.query, "_limit": PAGE},
            headers=self.headers,
            name="search first page",
        )

    @task(2)
    def next_page(self) -> None:
        self.client.get(
            "/api/v1/lead/",
            params={"query": self.query, "_limit": PAGE, "_skip": PAGE * random.randint(1, 3)},
            headers=self.headers,
            name="search next page",
        )

    @task(4)
    def open_lead(self) -> None:
        lead_id = random.randint(FIRST_LEAD, LAST_LEAD)
        self.client.get(f"/api/v1/lead/{lead_id}/", headers=self.headers, name="open lead")

    @task(1)
    def preview(self) -> None:
        # The template rendered for the n-th lead (with an email address) of the current search.
        self.client.get(
            f"/api/v1/email_template/{TEMPLATE_ID}/render/",
            params={"query": self.query, "entry": random.randint(0, 9)},
            headers=self.headers,
            name="preview",
        )
