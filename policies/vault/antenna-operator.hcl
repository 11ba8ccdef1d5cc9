# antenna-operator: people who run the Antenna. They rotate site credentials without reading them,
# maintain which site accounts each SSH role may sign for, and cut off a leaked gateway credential.
# They cannot sign certificates, read site secrets, mint gateway identities or change policies.

path "antenna/data/sites/*" {
  capabilities = ["create", "update"]
}

path "antenna/metadata/sites/*" {
  capabilities = ["read", "list"]
}

path "antenna/metadata/sites" {
  capabilities = ["list"]
}

# Soft-delete and restore versions; destroying them stays with the deploy pipeline's owners.
path "antenna/delete/sites/*" {
  capabilities = ["update"]
}

path "antenna/undelete/sites/*" {
  capabilities = ["update"]
}

path "ssh-client-signer/roles/*" {
  capabilities = ["create", "read", "update", "list"]
}

path "ssh-client-signer/config/ca" {
  capabilities = ["read"]
}

path "database/roles/*" {
  capabilities = ["read", "list"]
}

path "database/rotate-root/*" {
  capabilities = ["update"]
}

# Incident response: end the gateway's database logins, its tokens and its secret-ids.
path "sys/leases/revoke-prefix/database/creds/antenna-gateway" {
  capabilities = ["update", "sudo"]
}

path "sys/leases/lookup/database/creds/antenna-gateway/*" {
  capabilities = ["update", "list"]
}

path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}

path "auth/approle/role/antenna-gateway/secret-id-accessor/lookup" {
  capabilities = ["update"]
}

path "auth/approle/role/antenna-gateway/secret-id-accessor/destroy" {
  capabilities = ["update"]
}

path "sys/metrics" {
  capabilities = ["read"]
}
