"""Public API area: the framework every area plugs its `/api/v1/...` endpoints into.

Owns: personal API tokens and OAuth2 client-credentials clients (public.api_tokens, public.oauth_clients),
bearer authentication bound to one tenant, scopes mapped to permissions, pagination and filtering helpers,
RFC 9457 problem documents, rate limits, the `@operation` registry and the OpenAPI 3.1 document generated
from it (`/api/openapi.json`, `/api/docs`), and the token/client management pages.
Does not own: the endpoints of other areas (each area's `api.py` registers its own with `@operation`).
"""
