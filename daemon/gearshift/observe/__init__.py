"""Observe: turn the outside world (MQTT facts, Prometheus, requests) into fleet snapshots."""
