"""Alerts in one place: `rules` (the TOML rules, evaluated without I/O), `gate` (in the batch's SQL transaction:
windowed rules over the store's counters, cooldown, rate limits; the store inserts what it admits), `terms` (what a
windowed alert is about, computed once per kept alert) and `outbox`
(publishing what the store kept). The flow: pipeline → `AlertRules.per_message` candidates → store transaction →
`AlertGate.admit` → rows → `AlertOutbox.flush` → alerts topic."""
