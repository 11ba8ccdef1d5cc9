# antenna-gateway: the gateway (API, forwarder, status sync). Reads site credentials, signs SSH user
# certificates with exactly one principal, gets its own database credentials, keeps its token alive.
# Mints nothing else: no tokens, no secret-ids, no policies.

path "antenna/data/sites/*" {
  capabilities = ["read"]
}

# One principal per certificate (a comma would name several); user certificates only; no extensions
# or critical options beyond the site role's defaults. The role's allowed_users holds the mapped accounts.
path "ssh-client-signer/sign/*" {
  capabilities        = ["update"]
  required_parameters = ["public_key", "valid_principals"]

  allowed_parameters = {
    "public_key"       = []
    "valid_principals" = []
    "cert_type"        = ["user"]
    "ttl"              = []
  }

  denied_parameters = {
    "valid_principals" = ["*,*"]
  }
}

path "database/creds/antenna-gateway" {
  capabilities = ["read"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}

# Readiness: the gateway asks which of its site paths it may read.
path "sys/capabilities-self" {
  capabilities = ["update"]
}
