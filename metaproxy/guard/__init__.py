"""Request policy in front of the lookups: rate limits and the guest X-Forwarded-For rule."""
