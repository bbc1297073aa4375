"""Clients of external services share these parts: a small error hierarchy (`errors`) that says
what the service did without deciding what the caller does about it, and one HTTP sending loop
(`http`) with retries, rate-limit handling and token refresh."""
