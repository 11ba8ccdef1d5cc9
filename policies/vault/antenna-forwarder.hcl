# antenna-forwarder: a forwarder run apart from the API, one per site. Its Vault entity carries the
# metadata antenna_site=<site>, so it reads that site's credentials and signs for that site only; an
# entity without the metadata gets neither path.

path "antenna/data/sites/{{identity.entity.metadata.antenna_site}}" {
  capabilities = ["read"]
}

path "ssh-client-signer/sign/{{identity.entity.metadata.antenna_site}}" {
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

path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}

path "sys/capabilities-self" {
  capabilities = ["update"]
}
