"""Sign-up area: the public sign-up page, email verification and the provisioning job with visible progress.

Owns: `Signup` (public.signups), the live slug check, the verification mail, `provision_signup` (an RQ job on
the control-plane outbox that reuses `app.tenancy.services.create_tenant`), the onboarding page.
Does not own: tenants themselves (`app.tenancy`), plans and trials (`app.billing`), accounts (`app.accounts`).
"""
