"""The Antenna's Pulumi program: identity (Keycloak), secrets (Vault), the gateway and monitoring (Kubernetes)."""
