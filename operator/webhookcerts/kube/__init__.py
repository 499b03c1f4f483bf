"""The only code that talks to the Kubernetes API.

Everything else receives plain data from here, so the rest of the operator can be tested without a
cluster and the API calls stay in one place (label-selected reads, merge patches, conflict retries).
"""
