"""Forecasting each pool's demand from its own history (predictive scaling).

Pure and synchronous: no I/O, no clock, no asyncio. ``series`` holds a pool's demand one
figure a minute; ``seasonal`` is the model (medians across weeks or days, a recent-level
correction and an upper quantile of its own measured errors); ``result.Forecast`` is what
the planner is handed, like any other signal. Fitting is CPU work: the daemon runs it in
a thread (``predict.runner``), never on the event loop.
"""
