"""API: the HTTP surface (metrics, health, status, plan, events, operator commands)."""
