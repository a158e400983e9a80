"""Reconciliation with the channels: pull what webhooks missed, report the differences."""
