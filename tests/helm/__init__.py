"""Offline tests of the Helm chart helm/gr2."""
