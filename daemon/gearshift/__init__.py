"""gearshift: the node autoscaler for gear-based PaaS fleets (OpenShift Origin v2 style)."""

__version__ = "0.1.0"
