"""The pure core: models, PKI, renewal maths, rotation policies, trust-bundle assembly.

Nothing here talks to Kubernetes or Kopf (an import-linter contract enforces it), so all of it is
tested fast, with a fake clock.
"""
