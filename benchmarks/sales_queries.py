"""The searches of bench_api.py's salespeople (its locustfile), kept apart so the bench can check
them without importing Locust (which monkey-patches the process for gevent)."""

# What a sales team types into the search box (the seeded data's statuses, fields and words).
QUERIES = [
    "status:potential",
    "status:qualified has:email_addresses",
    'status:customer not emailed_template:"Intro"',
    "acme",
    "summit",
    "name:harbor",
    '"custom.Lead Source":referral',
    '"custom.Industry":software status:interested',
    "has:phone_numbers status:qualified",
    "contacts > 2",
    "created > 2025-06-01 status:potential",
    "sort:name",
]
