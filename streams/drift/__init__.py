"""Drift monitoring: a reference profile per model version, windowed statistics of the live stream kept in SQL with
the results, and per-window comparisons (PSI, rate tests, a random-projection distance, CBPE) that raise alerts."""
