# The hosts. Addresses are fixed (cidrhost) so that every host's cloud-init
# can name the others without a discovery step of its own:
#
#   public  .10        Kong + PostgreSQL (Docker), jump host
#   private .10        ZooKeeper, Mesos master, Marathon (Docker)
#   private .11..      Consul servers
#   private .21..      Mesos agents with Docker
#   private .30        Vulcand + etcd (Docker)
#   private .40..      Switchboard replicas (Debian package + systemd, --ha: one leader, the rest standbys)
#
# Every host runs a Consul agent (HTTPS with mutual TLS, see tls.tf) and
# forwards *.consul DNS to it, for itself and for its containers
# (templates/common.sh.tftpl).

data "aws_ami" "ubuntu" {
  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

resource "aws_key_pair" "admin" {
  key_name   = var.key_name
  public_key = file(pathexpand(var.public_key_path))
}

locals {
  kong_ip           = cidrhost(var.public_subnet_cidr, 10)
  master_ip         = cidrhost(var.private_subnet_cidr, 10)
  consul_server_ips = [for i in range(var.consul_server_count) : cidrhost(var.private_subnet_cidr, 11 + i)]
  agent_ips         = [for i in range(var.agent_count) : cidrhost(var.private_subnet_cidr, 21 + i)]
  vulcand_ip        = cidrhost(var.private_subnet_cidr, 30)
  switchboard_ips   = [for i in range(var.switchboard_replicas) : cidrhost(var.private_subnet_cidr, 40 + i)]

  # Settings every host's Consul agent shares.
  consul_common = {
    datacenter        = "showcase"
    consul_server_ips = local.consul_server_ips
    bootstrap_expect  = var.consul_server_count
  }

  # Switchboard's configuration, the same for every replica: Kong forwards
  # every published app to Vulcand's HTTP listener (the forwarding topology),
  # Marathon's and Mesos's own UIs are static services published the same way,
  # and the replicas elect their leader on the local Consul agent (ha = true).
  switchboard_toml = templatefile("${path.module}/templates/switchboard.toml.tftpl", {
    master_ip  = local.master_ip
    kong_ip    = local.kong_ip
    vulcand_ip = local.vulcand_ip
    domain     = var.domain
    cluster    = var.cluster_name
  })

  switchboard_env = templatefile("${path.module}/templates/switchboard.env.tftpl", {
    consul_token = var.consul_token
    kong_token   = var.kong_token
  })
}

resource "aws_instance" "kong" {
  ami                         = data.aws_ami.ubuntu.id
  instance_type               = var.kong_instance_type
  subnet_id                   = aws_subnet.public.id
  private_ip                  = local.kong_ip
  vpc_security_group_ids      = [aws_security_group.public.id]
  key_name                    = aws_key_pair.admin.key_name
  associate_public_ip_address = true

  iam_instance_profile = aws_iam_instance_profile.host.name
  monitoring           = true
  ebs_optimized        = true

  # IMDSv2 only, one hop: containers on the host cannot reach the metadata service.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = 20
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/templates/kong.yaml.tftpl", {
    common_sh = templatefile("${path.module}/templates/common.sh.tftpl", merge(local.consul_common, local.consul_tls, {
      consul_server = false
      with_docker   = true
      tls_cert_pem  = tls_locally_signed_cert.consul_agent["kong"].cert_pem
      tls_key_pem   = tls_private_key.consul_agent["kong"].private_key_pem
    }))
    kong_image     = var.kong_image
    postgres_image = var.postgres_image
    kong_ip        = local.kong_ip
    admin_cert_pem = "${tls_locally_signed_cert.kong_admin.cert_pem}${tls_self_signed_cert.ca.cert_pem}"
    admin_key_pem  = tls_private_key.kong_admin.private_key_pem
  })
  user_data_replace_on_change = true

  tags = { Name = "switchboard-kong", Role = "kong" }

  depends_on = [aws_route.public_internet]
}

resource "aws_eip" "kong" {
  domain   = "vpc"
  instance = aws_instance.kong.id

  tags       = { Name = "switchboard-kong" }
  depends_on = [aws_internet_gateway.main]
}

resource "aws_instance" "consul" {
  count = var.consul_server_count

  ami                    = data.aws_ami.ubuntu.id
  instance_type          = var.consul_instance_type
  subnet_id              = aws_subnet.private.id
  private_ip             = local.consul_server_ips[count.index]
  vpc_security_group_ids = [aws_security_group.private.id]
  key_name               = aws_key_pair.admin.key_name

  iam_instance_profile = aws_iam_instance_profile.host.name
  monitoring           = true
  ebs_optimized        = true

  # IMDSv2 only, one hop: containers on the host cannot reach the metadata service.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = 10
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/templates/base.yaml.tftpl", {
    common_sh = templatefile("${path.module}/templates/common.sh.tftpl", merge(local.consul_common, local.consul_tls, {
      consul_server = true
      with_docker   = false
      tls_cert_pem  = tls_locally_signed_cert.consul_agent["consul-${count.index + 1}"].cert_pem
      tls_key_pem   = tls_private_key.consul_agent["consul-${count.index + 1}"].private_key_pem
    }))
  })
  user_data_replace_on_change = true

  tags = { Name = "switchboard-consul-${count.index + 1}", Role = "consul-server" }

  depends_on = [aws_route.private_nat]
}

resource "aws_instance" "master" {
  ami                    = data.aws_ami.ubuntu.id
  instance_type          = var.master_instance_type
  subnet_id              = aws_subnet.private.id
  private_ip             = local.master_ip
  vpc_security_group_ids = [aws_security_group.private.id]
  key_name               = aws_key_pair.admin.key_name

  iam_instance_profile = aws_iam_instance_profile.host.name
  monitoring           = true
  ebs_optimized        = true

  # IMDSv2 only, one hop: containers on the host cannot reach the metadata service.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = 20
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/templates/master.yaml.tftpl", {
    common_sh = templatefile("${path.module}/templates/common.sh.tftpl", merge(local.consul_common, local.consul_tls, {
      consul_server = false
      with_docker   = true
      tls_cert_pem  = tls_locally_signed_cert.consul_agent["master"].cert_pem
      tls_key_pem   = tls_private_key.consul_agent["master"].private_key_pem
    }))
    master_ip          = local.master_ip
    zookeeper_image    = var.zookeeper_image
    mesos_master_image = var.mesos_master_image
    marathon_image     = var.marathon_image
  })
  user_data_replace_on_change = true

  tags = { Name = "switchboard-master", Role = "mesos-master" }

  depends_on = [aws_route.private_nat]
}

resource "aws_instance" "agent" {
  count = var.agent_count

  ami                    = data.aws_ami.ubuntu.id
  instance_type          = var.agent_instance_type
  subnet_id              = aws_subnet.private.id
  private_ip             = local.agent_ips[count.index]
  vpc_security_group_ids = [aws_security_group.private.id]
  key_name               = aws_key_pair.admin.key_name

  iam_instance_profile = aws_iam_instance_profile.host.name
  monitoring           = true
  ebs_optimized        = true

  # IMDSv2 only, one hop: containers on the host cannot reach the metadata service.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = 30
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/templates/agent.yaml.tftpl", {
    common_sh = templatefile("${path.module}/templates/common.sh.tftpl", merge(local.consul_common, local.consul_tls, {
      consul_server = false
      with_docker   = true
      tls_cert_pem  = tls_locally_signed_cert.consul_agent["agent-${count.index + 1}"].cert_pem
      tls_key_pem   = tls_private_key.consul_agent["agent-${count.index + 1}"].private_key_pem
    }))
    master_ip         = local.master_ip
    agent_ip          = local.agent_ips[count.index]
    mesos_agent_image = var.mesos_agent_image
  })
  user_data_replace_on_change = true

  tags = { Name = "switchboard-agent-${count.index + 1}", Role = "mesos-agent" }

  depends_on = [aws_route.private_nat]
}

resource "aws_instance" "vulcand" {
  ami                    = data.aws_ami.ubuntu.id
  instance_type          = var.vulcand_instance_type
  subnet_id              = aws_subnet.private.id
  private_ip             = local.vulcand_ip
  vpc_security_group_ids = [aws_security_group.private.id]
  key_name               = aws_key_pair.admin.key_name

  iam_instance_profile = aws_iam_instance_profile.host.name
  monitoring           = true
  ebs_optimized        = true

  # IMDSv2 only, one hop: containers on the host cannot reach the metadata service.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = 10
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/templates/vulcand.yaml.tftpl", {
    common_sh = templatefile("${path.module}/templates/common.sh.tftpl", merge(local.consul_common, local.consul_tls, {
      consul_server = false
      with_docker   = true
      tls_cert_pem  = tls_locally_signed_cert.consul_agent["vulcand"].cert_pem
      tls_key_pem   = tls_private_key.consul_agent["vulcand"].private_key_pem
    }))
    vulcand_ip    = local.vulcand_ip
    vulcand_image = var.vulcand_image
    etcd_image    = var.etcd_image
  })
  user_data_replace_on_change = true

  tags = { Name = "switchboard-vulcand", Role = "vulcand" }

  depends_on = [aws_route.private_nat]
}

resource "aws_instance" "switchboard" {
  count = var.switchboard_replicas

  ami                    = data.aws_ami.ubuntu.id
  instance_type          = var.switchboard_instance_type
  subnet_id              = aws_subnet.private.id
  private_ip             = local.switchboard_ips[count.index]
  vpc_security_group_ids = [aws_security_group.private.id]
  key_name               = aws_key_pair.admin.key_name

  iam_instance_profile = aws_iam_instance_profile.host.name
  monitoring           = true
  ebs_optimized        = true

  # IMDSv2 only, one hop: containers on the host cannot reach the metadata service.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = 10
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/templates/switchboard.yaml.tftpl", {
    common_sh = templatefile("${path.module}/templates/common.sh.tftpl", merge(local.consul_common, local.consul_tls, {
      consul_server = false
      with_docker   = false
      tls_cert_pem  = tls_locally_signed_cert.consul_agent["switchboard-${count.index + 1}"].cert_pem
      tls_key_pem   = tls_private_key.consul_agent["switchboard-${count.index + 1}"].private_key_pem
    }))
    replica_name             = "switchboard-${count.index + 1}"
    switchboard_deb_url      = var.switchboard_deb_url
    switchboard_deb_sha256   = var.switchboard_deb_sha256
    switchboard_toml         = local.switchboard_toml
    switchboard_env          = local.switchboard_env
    tls_ca_pem               = tls_self_signed_cert.ca.cert_pem
    client_cert_pem          = tls_locally_signed_cert.switchboard.cert_pem
    client_key_pem           = tls_private_key.switchboard.private_key_pem
  })
  user_data_replace_on_change = true

  tags = { Name = "switchboard-${count.index + 1}", Role = "switchboard" }

  depends_on = [aws_route.private_nat]
}
