-- Tokens of ServiceAccounts: short-lived, bound to the account's uid (an
-- account deleted and made again under its name does not revive them) and
-- optionally to a pod's uid (they stop working when that pod goes). What
-- such a token may do is the account's role when it is used, not when it
-- was made.
CREATE TABLE service_account_tokens (
    secret_hash bytea PRIMARY KEY,
    namespace text NOT NULL,
    account text NOT NULL,
    account_uid uuid NOT NULL,
    pod_name text,
    pod_uid uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX service_account_tokens_expiry ON service_account_tokens (expires_at);
