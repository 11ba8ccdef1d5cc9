"""Antenna's Grafana dashboards as code (grafana-foundation-sdk); ``generate.py`` writes them to ../grafana/."""
