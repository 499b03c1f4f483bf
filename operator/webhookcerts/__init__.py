"""webhookcerts: an operator for the client certificates of webhook delivery over mutual TLS.

The provider that sends webhooks holds a copy of the client key, so the operator never silently
replaces the certificate it presents: planned rotations overlap old and new until cut-over, and only
an emergency rotation removes trust in a compromised certificate at once.
"""

__version__ = "0.1.0"
