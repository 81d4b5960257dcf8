"""Providers: where nodes come from (bare metal, vSphere, oVirt, EC2, simulated)."""
