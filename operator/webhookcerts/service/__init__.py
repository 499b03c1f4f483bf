"""Decisions and writes: the engine (watch-fed view, work queue, workers) and the reconcile pass it runs.

Everything here talks to the API through ``webhookcerts.kube`` and decides with ``webhookcerts.domain``.
"""
