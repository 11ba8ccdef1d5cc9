# antenna-deploy: the deploy pipeline (Pulumi, Ansible). Enables the engines and auth methods, writes the
# antenna-* policies and roles, and hands the gateway a response-wrapped secret-id.
# It never reads site secrets, signs certificates or gets database credentials through this policy. It is
# nonetheless the trust root of the deployment: whoever writes the gateway's policy and AppRole role can give
# themselves the gateway's rights (write a wider antenna-* policy, or unwrap the secret-id before the
# gateway does; the gateway then refuses the used wrapping token and the audit log shows who unwrapped it).
# So the deploy token lives only in the protected pipeline, short-lived, and every write is audited.

path "sys/mounts" {
  capabilities = ["read"]
}

path "sys/mounts/antenna" {
  capabilities = ["create", "read", "update"]
}

path "sys/mounts/ssh-client-signer" {
  capabilities = ["create", "read", "update"]
}

path "sys/mounts/database" {
  capabilities = ["create", "read", "update"]
}

path "sys/auth" {
  capabilities = ["read"]
}

path "sys/auth/approle" {
  capabilities = ["create", "read", "update", "sudo"]
}

path "sys/auth/kubernetes" {
  capabilities = ["create", "read", "update", "sudo"]
}

path "sys/policies/acl" {
  capabilities = ["list"]
}

path "sys/policies/acl/antenna-*" {
  capabilities = ["create", "read", "update", "delete"]
}

# Its own policy is read-only to it: no widening itself.
path "sys/policies/acl/antenna-deploy" {
  capabilities = ["read"]
}

path "auth/approle/role/antenna-gateway" {
  capabilities = ["create", "read", "update", "delete"]
}

path "auth/approle/role/antenna-gateway/role-id" {
  capabilities = ["read"]
}

# Only ever a wrapped secret-id: Vault refuses this path without a wrap TTL in [30s, 15m].
path "auth/approle/role/antenna-gateway/secret-id" {
  capabilities     = ["update"]
  min_wrapping_ttl = "30s"
  max_wrapping_ttl = "15m"
}

path "auth/kubernetes/config" {
  capabilities = ["create", "read", "update"]
}

path "auth/kubernetes/role/antenna-gateway" {
  capabilities = ["create", "read", "update", "delete"]
}

path "ssh-client-signer/config/ca" {
  capabilities = ["create", "read", "update"]
}

path "ssh-client-signer/roles/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

path "database/config/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

path "database/roles/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

path "antenna/config" {
  capabilities = ["create", "read", "update"]
}
