"""Reconciliation services: read through ``kube``, decide with ``domain``, write through ``kube``.

Kopf handlers and the timer call the same service function, so there is one reconcile path.
"""
