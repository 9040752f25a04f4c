"""argon2id password hashing (argon2-cffi) with rehash when parameters change, and the password policy."""

from __future__ import annotations

import unicodedata
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache, lru_cache

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, has_app_context

from app.core.errors import ValidationError

#: Named argon2id parameter sets (the setting PASSWORD_HASH_PROFILE picks one). Production uses RFC 9106's
#: low-memory profile; the fast one is for the test suite only (create_app refuses it unless TESTING).
HASH_PROFILES = {
    "rfc9106_low_memory": profiles.RFC_9106_LOW_MEMORY,
    "fast_for_tests": profiles.CHEAPEST,
}
DEFAULT_HASH_PROFILE = "rfc9106_low_memory"

#: Safe bounds a tenant may set its minimum length within; the floor is the issue's (and NIST's) 12.
MIN_LENGTH_FLOOR, MIN_LENGTH_CEILING = 12, 64
#: Longest accepted password: long enough for any passphrase, short enough that hashing is no DoS lever.
MAX_LENGTH = 256


@cache
def _hasher_for(profile: str) -> PasswordHasher:
    return PasswordHasher.from_parameters(HASH_PROFILES[profile])


def _hasher() -> PasswordHasher:
    """The hasher of the app's configured profile (the production one outside an app context)."""
    profile = current_app.config.get("PASSWORD_HASH_PROFILE", DEFAULT_HASH_PROFILE) if has_app_context() else None
    return _hasher_for(profile or DEFAULT_HASH_PROFILE)


def _normalise(password: str) -> str:
    # NFKC so the same passphrase typed on a tablet and a desktop keyboard (composed or not) verifies the same.
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str) -> str:
    """Return an argon2id PHC string."""
    return _hasher().hash(_normalise(password))


#: argon2-cffi releases the GIL while hashing, so a hash can run beside work that waits on the database.
_BACKGROUND = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")


def hash_password_in_background(password: str) -> Future[str]:
    """Start hashing now (with the app's profile, chosen here) and return the future PHC string.

    Provisioning hashes the first admin's password while PostgreSQL builds the tenant's schema.
    """
    return _BACKGROUND.submit(_hasher().hash, _normalise(password))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Check a password against a stored hash; a missing or malformed hash never verifies."""
    if not stored_hash or len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher().verify(stored_hash, _normalise(password))
    except (VerificationError, InvalidHashError):
        return False


def burn_verify_time() -> None:
    """Spend what a real verification costs, so an unknown sign-in name answers as slowly as a known one."""
    verify_password(_dummy_hash(_hasher()), "not the password")


@lru_cache(maxsize=4)
def _dummy_hash(hasher: PasswordHasher) -> str:
    return hasher.hash("batchline timing equaliser")


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with older parameters and should be replaced at next sign-in."""
    try:
        return _hasher().check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords (zxcvbn's list, shipped in its PyPI package), lower-cased."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


def check_password_policy(password: str, *, email: str, min_length: int = MIN_LENGTH_FLOOR) -> None:
    """Refuse a new password that is short, common, or the email; the message says what to change."""
    min_length = max(MIN_LENGTH_FLOOR, min(int(min_length), MIN_LENGTH_CEILING))
    normalised = _normalise(password)
    if len(normalised) < min_length:
        raise ValidationError(f"the password must be at least {min_length} characters long")
    if len(normalised) > MAX_LENGTH:
        raise ValidationError(f"the password must be at most {MAX_LENGTH} characters long")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in normalised):
        raise ValidationError("the password must not contain control or invisible formatting characters")
    lowered = normalised.casefold()
    email = (email or "").casefold()
    local = email.partition("@")[0]
    if lowered in (email, local) or lowered.replace(" ", "") in (email, local):
        raise ValidationError("the password must not be your email address")
    if len(set(lowered)) < 5:
        raise ValidationError("the password repeats too few different characters; use a longer passphrase")
    common = common_passwords()
    # A common word with digits or punctuation stuck on ("password2024!") is as guessable as the word itself.
    core = lowered.strip("0123456789!@#$%^&*()-_=+.,;:?/ ")
    if lowered in common or (len(core) >= 4 and core in common):
        raise ValidationError("this password is in a list of commonly used passwords; choose another")
