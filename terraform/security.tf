# Who may talk to whom.
#
# The internet reaches exactly two ports: Kong's proxy on 80 and 443. SSH to
# the public host comes from var.admin_cidr only; it is the jump host for the
# private subnet. Every admin API (Consul 8500 and its HTTPS 8501, Marathon
# 8080, Mesos 5050, ZooKeeper 2181, Kong Admin 8001 and its TLS 8444, Vulcand
# 8181/8182, etcd 2379, Switchboard's status port 9102) is reachable from
# inside the VPC only. tests/showcase.rs
# checks this file's rules against that list.

resource "aws_security_group" "public" {
  name        = "switchboard-public"
  description = "Kong proxy: HTTP(S) from anywhere, SSH from the admin CIDR, the rest from the VPC"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "switchboard-public" }
}

resource "aws_vpc_security_group_ingress_rule" "public_http" {
  security_group_id = aws_security_group.public.id
  description       = "Kong proxy, HTTP"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = var.proxy_cidr
}

resource "aws_vpc_security_group_ingress_rule" "public_https" {
  security_group_id = aws_security_group.public.id
  description       = "Kong proxy, HTTPS"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.proxy_cidr
}

resource "aws_vpc_security_group_ingress_rule" "public_ssh" {
  security_group_id = aws_security_group.public.id
  description       = "SSH from the operator only"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = var.admin_cidr
}

resource "aws_vpc_security_group_ingress_rule" "public_from_vpc" {
  security_group_id = aws_security_group.public.id
  description       = "Kong Admin API (Switchboard), Consul gossip, from inside the VPC"
  ip_protocol       = "-1"
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "public_all" {
  security_group_id = aws_security_group.public.id
  description       = "Outbound: upstreams in the VPC, package and image downloads"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_security_group" "private" {
  name        = "switchboard-private"
  description = "Private hosts: any traffic from inside the VPC, nothing from outside"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "switchboard-private" }
}

resource "aws_vpc_security_group_ingress_rule" "private_from_vpc" {
  security_group_id = aws_security_group.private.id
  description       = "Everything from inside the VPC (Mesos, Marathon, Consul, Vulcand, app ports)"
  ip_protocol       = "-1"
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "private_all" {
  security_group_id = aws_security_group.private.id
  description       = "Outbound through the NAT gateway: packages, images, the Switchboard binary"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}
