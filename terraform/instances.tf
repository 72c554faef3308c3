# The hosts. Addresses are fixed (cidrhost) so that every host's cloud-init
# can name the others without a discovery step of its own:
#
#   public  .10        Kong + PostgreSQL (Docker), jump host
#   private .10        ZooKeeper, Mesos master, Marathon (Docker), Switchboard (systemd)
#   private .11..      Consul servers
#   private .21..      Mesos agents with Docker
#   private .30        Vulcand + etcd (Docker)
#
# Every host runs a Consul agent and forwards *.consul DNS to it, for itself
# and for its containers (templates/common.sh.tftpl).

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

  # Settings every host's Consul agent shares.
  consul_common = {
    datacenter        = "showcase"
    consul_server_ips = local.consul_server_ips
    bootstrap_expect  = var.consul_server_count
  }

  # Switchboard's configuration: Kong forwards every published app to
  # Vulcand's HTTP listener (the forwarding topology), and Marathon's and
  # Mesos's own UIs are static services published the same way.
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

  metadata_options {
    http_tokens = "required"
  }

  root_block_device {
    volume_size = 20
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/templates/kong.yaml.tftpl", {
    common_sh = templatefile("${path.module}/templates/common.sh.tftpl", merge(local.consul_common, {
      consul_server = false
      with_docker   = true
    }))
    kong_image     = var.kong_image
    postgres_image = var.postgres_image
    kong_ip        = local.kong_ip
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

  metadata_options {
    http_tokens = "required"
  }

  root_block_device {
    volume_size = 10
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/templates/base.yaml.tftpl", {
    common_sh = templatefile("${path.module}/templates/common.sh.tftpl", merge(local.consul_common, {
      consul_server = true
      with_docker   = false
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

  metadata_options {
    http_tokens = "required"
  }

  root_block_device {
    volume_size = 20
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/templates/master.yaml.tftpl", {
    common_sh = templatefile("${path.module}/templates/common.sh.tftpl", merge(local.consul_common, {
      consul_server = false
      with_docker   = true
    }))
    master_ip                = local.master_ip
    zookeeper_image          = var.zookeeper_image
    mesos_master_image       = var.mesos_master_image
    marathon_image           = var.marathon_image
    switchboard_download_url = var.switchboard_download_url
    switchboard_sha256       = var.switchboard_sha256
    switchboard_toml         = local.switchboard_toml
    switchboard_env          = local.switchboard_env
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

  metadata_options {
    http_tokens = "required"
  }

  root_block_device {
    volume_size = 30
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/templates/agent.yaml.tftpl", {
    common_sh = templatefile("${path.module}/templates/common.sh.tftpl", merge(local.consul_common, {
      consul_server = false
      with_docker   = true
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

  metadata_options {
    http_tokens = "required"
  }

  root_block_device {
    volume_size = 10
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/templates/vulcand.yaml.tftpl", {
    common_sh = templatefile("${path.module}/templates/common.sh.tftpl", merge(local.consul_common, {
      consul_server = false
      with_docker   = true
    }))
    vulcand_ip    = local.vulcand_ip
    vulcand_image = var.vulcand_image
    etcd_image    = var.etcd_image
  })
  user_data_replace_on_change = true

  tags = { Name = "switchboard-vulcand", Role = "vulcand" }

  depends_on = [aws_route.private_nat]
}
