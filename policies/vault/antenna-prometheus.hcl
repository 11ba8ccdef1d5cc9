# antenna-prometheus: the scraper of Vault's own metrics. Nothing else.

path "sys/metrics" {
  capabilities = ["read"]
}
