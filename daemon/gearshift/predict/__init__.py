"""Predictive scaling at the edge: keep each pool's demand history, fit its forecast.

``forecaster.Forecaster`` samples each pool's demand after every reconcile, writes one
bucket a minute to the journal (``records.DemandHistory``), reads weeks of it back when
it takes office (a restart or a failover loses nothing), and refits the forecasts in a
thread, never on the event loop. The planner only ever sees the result, with the
snapshot (``FleetSnapshot.forecasts``).
"""
