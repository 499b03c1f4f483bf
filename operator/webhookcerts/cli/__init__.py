"""The ``webhookcerts`` command line (also the kubectl plugin ``kubectl webhookcerts``)."""
