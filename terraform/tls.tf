# The showcase's own CA, and the certificates it signs: TLS between
# Switchboard and Consul (mutual: every agent's HTTPS API wants a client
# certificate from this CA) and between Switchboard and Kong's Admin API.
#
# Every host runs a Consul agent with an HTTPS API on 8501 (plain HTTP stays
# on loopback for local tools); each agent's certificate names its private
# address, since per-host mode reaches the agent of each task's host by IP.
# Private keys end up in Terraform state and EC2 user data: treat both as
# secret (see README's caveats), or bring your own CA in production.

locals {
  # Every host with a Consul agent, by name, with its private address.
  consul_agent_hosts = merge(
    { kong = local.kong_ip, master = local.master_ip, vulcand = local.vulcand_ip },
    { for i, ip in local.consul_server_ips : "consul-${i + 1}" => ip },
    { for i, ip in local.agent_ips : "agent-${i + 1}" => ip },
    { for i, ip in local.switchboard_ips : "switchboard-${i + 1}" => ip }
  )

  # What every host's common_sh needs besides its own certificate.
  consul_tls = {
    tls_ca_pem = tls_self_signed_cert.ca.cert_pem
  }
}

resource "tls_private_key" "ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "ca" {
  private_key_pem       = tls_private_key.ca.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = 24 * 365
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]

  subject {
    common_name  = "Switchboard showcase CA"
    organization = "switchboard-showcase"
  }
}

# Consul agents: server certificates for the HTTPS API (and client use for
# the agents' own RPC), naming the host's address, loopback and localhost.
resource "tls_private_key" "consul_agent" {
  for_each    = local.consul_agent_hosts
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "consul_agent" {
  for_each        = local.consul_agent_hosts
  private_key_pem = tls_private_key.consul_agent[each.key].private_key_pem
  ip_addresses    = [each.value, "127.0.0.1"]
  dns_names       = ["localhost", "${each.key}.node.consul", "server.showcase.consul"]

  subject {
    common_name = "${each.key}.node.consul"
  }
}

resource "tls_locally_signed_cert" "consul_agent" {
  for_each              = local.consul_agent_hosts
  cert_request_pem      = tls_cert_request.consul_agent[each.key].cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = 24 * 365
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]
}

# Kong's Admin API on 8444 (TLS), reached by Switchboard at Kong's private address.
resource "tls_private_key" "kong_admin" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "kong_admin" {
  private_key_pem = tls_private_key.kong_admin.private_key_pem
  ip_addresses    = [local.kong_ip]

  subject {
    common_name = "kong-admin"
  }
}

resource "tls_locally_signed_cert" "kong_admin" {
  cert_request_pem      = tls_cert_request.kong_admin.cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = 24 * 365
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth"]
}

# Switchboard's client certificate (mutual TLS with every Consul agent),
# shared by its replicas.
resource "tls_private_key" "switchboard" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "switchboard" {
  private_key_pem = tls_private_key.switchboard.private_key_pem

  subject {
    common_name = "switchboard"
  }
}

resource "tls_locally_signed_cert" "switchboard" {
  cert_request_pem      = tls_cert_request.switchboard.cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = 24 * 365
  allowed_uses          = ["digital_signature", "key_encipherment", "client_auth"]
}
