"""
API keys: stored as a SHA-256 of the key, checked and cached per process
for VIDEOGEN_API_KEY_CACHE_SECONDS.
"""

import hashlib
import hmac
import secrets
import time

from django.conf import settings
from django.db import models
from django.utils import timezone

from jobs.models.job import USER_ID_MAX_LENGTH


# Keys this process checked, by the SHA-256 of the presented text: (key,
# when checked). Only live keys are kept, at most MAX_CACHED_KEYS of them.
_checked_keys: dict[str, tuple["ApiKey", float]] = {}
MAX_CACHED_KEYS = 10_000


class ApiKeyQuerySet(models.QuerySet):
    def verify(self, presented: str) -> "ApiKey | None":
        """
        The live key `presented` is, or None. A key this process checked
        within VIDEOGEN_API_KEY_CACHE_SECONDS is trusted without asking the
        database again: that query was a sixth of a status poll's cost
        (bench/RESULTS.md, API keys). So a revocation holds at once in the
        process that made it and within those seconds in every other.
        Invalid keys are never remembered, so guessing fills nothing.
        """
        ttl = settings.VIDEOGEN_API_KEY_CACHE_SECONDS
        digest = hash_api_key(presented)
        now = time.monotonic()
        cached = _checked_keys.get(digest)
        if cached is not None and now - cached[1] < ttl:
            return cached[0]
        key = self._verify_in_database(presented, digest)
        if key is None:
            _checked_keys.pop(digest, None)
        elif ttl:
            if len(_checked_keys) >= MAX_CACHED_KEYS:
                _checked_keys.clear()
            _checked_keys[digest] = (key, now)
        return key

    def _verify_in_database(self, presented: str, digest: str) -> "ApiKey | None":
        """
        Keys are looked up by their public prefix and compared by hash in
        constant time; the key itself is never stored.
        """
        prefix, sep, _ = presented.partition(".")
        if not sep or not prefix.startswith(API_KEY_PREFIX) or len(presented) > 200:
            return None
        try:
            # The prefix is unique: get() (no ORDER BY, unlike first()) on its index.
            key = self.get(prefix=prefix, revoked_at__isnull=True)
        except self.model.DoesNotExist:
            return None
        return key if hmac.compare_digest(key.hashed, digest) else None


# Keys look like vg_<16 hex>.<43 url-safe characters>: the part before the dot
# is stored as is (to find the row, and to tell keys apart in the admin), the
# whole key only as a SHA-256. 256 random bits need no slow hash: nobody can
# guess them, and a fast one keeps every request cheap.
API_KEY_PREFIX = "vg_"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(models.Model):
    name = models.CharField(max_length=100, blank=True, default="")
    user_id = models.CharField(max_length=USER_ID_MAX_LENGTH)
    # An operator key acts for any user_id, and for every user when none is given.
    operator = models.BooleanField(default=False)
    # What the key may do beyond submitting and reading its user's jobs (ApiKey.SCOPES).
    scopes = models.JSONField(default=list, blank=True)
    prefix = models.CharField(max_length=32, unique=True)
    hashed = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        db_table = "videogen_api_keys"
        ordering = ["-created_at"]
        verbose_name = "API key"

    # priority: submit jobs with priority high.
    SCOPES = ("priority",)

    def __str__(self) -> str:
        return f"{self.prefix} ({self.user_id}{', operator' if self.operator else ''})"

    @classmethod
    def issue(
        cls, *, user_id: str, operator: bool = False, name: str = "", scopes: list[str] | tuple[str, ...] = ()
    ) -> tuple["ApiKey", str]:
        """A new key and its secret text, which exists only in this return value."""
        unknown = set(scopes) - set(cls.SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
        prefix = API_KEY_PREFIX + secrets.token_hex(8)
        text = f"{prefix}.{secrets.token_urlsafe(32)}"
        key = cls.objects.create(
            name=name, user_id=user_id, operator=operator, scopes=sorted(set(scopes)), prefix=prefix,
            hashed=hash_api_key(text),
        )
        return key, text

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def revoke(self) -> bool:
        """Revoke the key; False when it already was. Its next request is a 401."""
        now = timezone.now()
        updated = type(self).objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=now) == 1
        if updated:
            self.revoked_at = now
        # At once in this process; other processes within VIDEOGEN_API_KEY_CACHE_SECONDS.
        _checked_keys.clear()
        return updated

    @property
    def is_authenticated(self) -> bool:
        # DRF's IsAuthenticated asks request.user this; a key is its own user.
        return True
