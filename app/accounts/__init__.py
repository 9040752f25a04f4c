"""Accounts area: global user accounts, their memberships in tenants, sign-in.

Owns: `User`, `Membership`, password hashing, the sign-in pages and flask-login wiring.
Does not own: what a membership may do inside a tenant (permissions live with each route).
"""
