"""Store analytics without surveillance (issue 14, docs/analytics.md): counts per case, hour and
metric computed from the events into tables that name no member, phone, card or staff.

- metrics.py: what is counted, from one case's events (pure);
- aggregate.py: `fold` (the periodic job, jobs.analytics_loop) and `rebuild`;
- hours.py: a store's opening hours, for after-hours opens;
- suppress.py: small counts and the rule that keeps them from being worked out;
- audit.py: a store-day's linked figures taken together, more hidden where they pin a count;
- publish.py: the figures as shown (API, console, CSV), every count through suppress.py.
"""
