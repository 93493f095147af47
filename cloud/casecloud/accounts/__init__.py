"""Accounts of the store console and the API: users and roles, sessions, API tokens, the audit log.

Small modules, one job each (docs/accounts.md says what each role may do):

- roles.py: associate < manager < hq, `at_least`.
- passwords.py: argon2id hashing (argon2-cffi) and the password rules.
- users.py: create, find, update (role, stores, disabled), set a password, `stores_of`.
- login.py: `authenticate`: rate limits, lockout with backoff, a dummy verify for unknown users.
- sessions.py: server-side sessions, the cookie, the CSRF token.
- tokens.py: API tokens scoped by role and store, stored hashed.
- audit.py: `record` who did what; `truncate_ip`.
- bootstrap.py: the first HQ user, made with the settings' admin token.
- access.py: FastAPI dependencies (`current_principal`, `require`, `Associate`, `Manager`, `Hq`,
  `StoreManager`) and the `Principal` the routes and pages get.
"""
