"""Webhooks for third parties: endpoints, the outbox of deliveries and its worker."""
