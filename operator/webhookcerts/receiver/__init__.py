"""The reference webhook receiver and the provider simulator that exercises it over mTLS."""
