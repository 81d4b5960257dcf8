"""Reconcile: the control loop that wires observe, decide, act and store together."""
