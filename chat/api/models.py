"""A personal API key: what a program shows to act as a person, for one of their teams.

Only a SHA-256 hash of the key is stored. The key is 32 random bytes (256 bits), so nobody can
guess it from the hash however fast the hash is; a slow password hash (bcrypt, Argon2) protects
low-entropy passwords and would cost tens of milliseconds of CPU on every API request, and its salt
would make the lookup by hash impossible. The prefix (the key's first characters) is stored in
clear so a person can tell their keys apart; it is not enough to use one.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    # The team its requests are made for (their audit entries and usage records carry it).
    team = models.ForeignKey("gateway_portal.Team", on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Written at most once a minute (keys.authenticate), not on every request.
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def label(self) -> dict:
        """How its requests are named in the audit trail."""
        return {"name": self.name, "prefix": self.prefix}

    def state(self, now=None) -> str:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"
