"""Accounts area: who people are, what they may do in each tenant, and how they prove it.

Owns: global `User` accounts (ids never reused) and per-tenant `Membership`s with roles; custom roles; per-tenant
security settings; invitations; password hashing, policy, change and reset; sign-in, the shared-tablet quick
switch and server-side sessions (`sessions`); lockout and the per-tenant security event log (`security`: the
stable API other areas call — `record_security_event`, `register_failed_password`,
`register_failed_reauthentication`, `register_successful_password`, `verify_user_password`); single sign-on per
tenant (`sso`) and re-authentication through it with single-use proofs (`reauth`).
Does not own: the permission names and built-in roles (`app.core.permissions`) or their enforcement on routes
(`app.core.web`), e-signatures (the esign area re-authenticates through `verify_user_password` or
`reauth.consume`).
"""
