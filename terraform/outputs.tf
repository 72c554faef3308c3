# What the operator needs after `terraform apply`: where Kong answers, which
# names to point at it, and how to get a shell.

output "kong_public_ip" {
  description = "Kong's public address (an Elastic IP): the only way in for HTTP(S)."
  value       = aws_eip.kong.public_ip
}

output "hostnames" {
  description = "Hostnames Switchboard publishes on Kong in this showcase (specs/web.json and the static Marathon and Mesos UIs)."
  value       = ["web.${var.domain}", "marathon.${var.domain}", "mesos.${var.domain}"]
}

output "hosts_line" {
  description = "A line to append to /etc/hosts so the published hostnames resolve to Kong."
  value       = "${aws_eip.kong.public_ip} web.${var.domain} marathon.${var.domain} mesos.${var.domain}"
}

output "ssh" {
  description = "SSH to the Marathon host through Kong's host as jump host (only var.admin_cidr may connect)."
  value       = "ssh -J ${var.ssh_user}@${aws_eip.kong.public_ip} ${var.ssh_user}@${local.master_ip}"
}

output "switchboard_ssh" {
  description = "SSH to each Switchboard replica (one leader, the others standbys; `curl -s 127.0.0.1:9102/state` there shows the role)."
  value       = [for ip in local.switchboard_ips : "ssh -J ${var.ssh_user}@${aws_eip.kong.public_ip} ${var.ssh_user}@${ip}"]
}

output "ca_cert_pem" {
  description = "The showcase CA (tls.tf): trust it to call Consul's HTTPS API (8501) or Kong's Admin API (8444) yourself."
  value       = tls_self_signed_cert.ca.cert_pem
}

output "marathon_url_inside_vpc" {
  description = "Marathon's REST API, reachable from inside the VPC (e.g. through the ssh line above)."
  value       = "http://${local.master_ip}:8080"
}

output "private_addresses" {
  description = "Private addresses of every host, by role."
  value = {
    kong           = local.kong_ip
    master         = local.master_ip
    consul_servers = local.consul_server_ips
    agents         = local.agent_ips
    vulcand        = local.vulcand_ip
    switchboard    = local.switchboard_ips
  }
}
