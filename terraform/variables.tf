# Inputs of the showcase. Everything has a type and a description; only what
# cannot have a safe default (who may SSH in, which Switchboard package to install)
# must be given on the command line or in terraform.tfvars.

variable "region" {
  type        = string
  description = "AWS region to build the showcase in."
  default     = "eu-west-1"
}

variable "availability_zone" {
  type        = string
  description = "Availability zone for both subnets (one AZ keeps the showcase cheap; it is not highly available)."
  default     = "eu-west-1a"
}

variable "vpc_cidr" {
  type        = string
  description = "CIDR block of the VPC. Private hosts accept traffic from this range only."
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR block such as 10.0.0.0/16."
  }
}

variable "public_subnet_cidr" {
  type        = string
  description = "CIDR block of the public subnet (Kong, NAT gateway). Must lie inside vpc_cidr."
  default     = "10.0.5.0/24"
}

variable "private_subnet_cidr" {
  type        = string
  description = "CIDR block of the private subnet (Mesos, Marathon, Consul, Vulcand). Must lie inside vpc_cidr."
  default     = "10.0.12.0/24"
}

variable "admin_cidr" {
  type        = string
  description = "The only CIDR allowed to SSH into the public host, e.g. \"203.0.113.7/32\" (your address). No default on purpose: SSH is never open to the world."

  validation {
    condition     = can(cidrnetmask(var.admin_cidr)) && !contains(["0.0.0.0/0", "::/0"], var.admin_cidr)
    error_message = "admin_cidr must be an IPv4 CIDR block narrower than 0.0.0.0/0, e.g. your address with /32."
  }
}

variable "key_name" {
  type        = string
  description = "Name of the EC2 key pair created from public_key_path and installed on every host."
  default     = "switchboard-showcase"
}

variable "public_key_path" {
  type        = string
  description = "Path to the SSH public key to install on every host (the private half stays on your machine)."
  default     = "~/.ssh/id_ed25519.pub"
}

variable "ssh_user" {
  type        = string
  description = "Login user of the AMI (Ubuntu images use \"ubuntu\"); only used in the ssh output."
  default     = "ubuntu"
}

variable "kong_instance_type" {
  type        = string
  description = "Instance type of the public Kong host (Kong and its PostgreSQL in Docker)."
  default     = "t3.small"
}

variable "master_instance_type" {
  type        = string
  description = "Instance type of the Mesos master host (ZooKeeper, Mesos master, Marathon)."
  default     = "t3.medium"
}

variable "agent_instance_type" {
  type        = string
  description = "Instance type of each Mesos agent (Docker containerizer); Marathon apps run here."
  default     = "t3.medium"
}

variable "consul_instance_type" {
  type        = string
  description = "Instance type of each Consul server."
  default     = "t3.micro"
}

variable "vulcand_instance_type" {
  type        = string
  description = "Instance type of the Vulcand host (Vulcand and its etcd in Docker)."
  default     = "t3.small"
}

variable "switchboard_instance_type" {
  type        = string
  description = "Instance type of each Switchboard replica host (Switchboard and a Consul agent)."
  default     = "t3.micro"
}

variable "switchboard_replicas" {
  type        = number
  description = "Number of Switchboard replicas (--ha): one leader writes, the others follow Marathon as warm standbys. Hosts get consecutive private addresses from .40."
  default     = 2

  validation {
    condition     = var.switchboard_replicas >= 1 && var.switchboard_replicas <= 3
    error_message = "switchboard_replicas must be between 1 and 3."
  }
}

variable "agent_count" {
  type        = number
  description = "Number of Mesos agents. Agents get consecutive private addresses from .21 of the private subnet."
  default     = 2

  validation {
    condition     = var.agent_count >= 1 && var.agent_count <= 8
    error_message = "agent_count must be between 1 and 8."
  }
}

variable "consul_server_count" {
  type        = number
  description = "Number of Consul servers (1 for a throwaway demo, 3 to survive the loss of one)."
  default     = 3

  validation {
    condition     = contains([1, 3, 5], var.consul_server_count)
    error_message = "consul_server_count must be 1, 3 or 5 (an odd quorum)."
  }
}

variable "domain" {
  type        = string
  description = "DNS suffix of the hostnames published through Kong (web.<domain>, marathon.<domain>, mesos.<domain>); put them in /etc/hosts, see the hosts_line output."
  default     = "switchboard.test"
}

variable "cluster_name" {
  type        = string
  description = "Switchboard's --cluster: the name its registrations are owned under in Consul and Kong."
  default     = "showcase"
}

variable "switchboard_deb_url" {
  type        = string
  description = "HTTPS URL of the Debian package `cargo deb` builds from this repository (target/debian/switchboard_<version>-1_amd64.deb): the binary, the hardened systemd unit dist/switchboard.service and the `switchboard` system user. Nothing is compiled on the hosts."

  validation {
    condition     = startswith(var.switchboard_deb_url, "https://")
    error_message = "switchboard_deb_url must be an https:// URL."
  }
}

variable "switchboard_deb_sha256" {
  type        = string
  description = "SHA-256 of the package at switchboard_deb_url (`sha256sum target/debian/switchboard_*.deb`); cloud-init refuses to install a package that does not match."

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.switchboard_deb_sha256))
    error_message = "switchboard_deb_sha256 must be 64 lower-case hex digits."
  }
}

variable "consul_token" {
  type        = string
  description = "Consul ACL token for Switchboard (SWITCHBOARD_CONSUL_TOKEN). Empty while the showcase's Consul runs without ACLs. Written only to the root-only environment file."
  default     = ""
  sensitive   = true
}

variable "kong_token" {
  type        = string
  description = "Token for Kong's Admin API (SWITCHBOARD_KONG_TOKEN), for an Admin API behind RBAC or a gateway. Empty for Kong OSS. Written only to the root-only environment file."
  default     = ""
  sensitive   = true
}

variable "zookeeper_image" {
  type        = string
  description = "Docker image of ZooKeeper on the master host."
  default     = "zookeeper:3.8"
}

variable "mesos_master_image" {
  type        = string
  description = "Docker image of the Mesos master."
  default     = "mesosphere/mesos-master:1.7.1"
}

variable "mesos_agent_image" {
  type        = string
  description = "Docker image of the Mesos agent (runs app containers through the host's Docker daemon)."
  default     = "mesosphere/mesos-slave:1.7.1"
}

variable "marathon_image" {
  type        = string
  description = "Docker image of Marathon."
  default     = "mesosphere/marathon:v1.11.24"
}

variable "kong_image" {
  type        = string
  description = "Docker image of Kong (database mode: Switchboard writes through the Admin API)."
  default     = "kong:3.6"
}

variable "postgres_image" {
  type        = string
  description = "Docker image of Kong's PostgreSQL."
  default     = "postgres:16"
}

variable "vulcand_image" {
  type        = string
  description = "Docker image of Vulcand."
  default     = "vulcand/vulcand:v0.9.2"
}

variable "etcd_image" {
  type        = string
  description = "Docker image of Vulcand's etcd."
  default     = "quay.io/coreos/etcd:v3.5.13"
}

variable "tags" {
  type        = map(string)
  description = "Tags put on every AWS resource (find and remove leftovers by them)."
  default = {
    Project   = "switchboard-showcase"
    ManagedBy = "terraform"
  }
}

variable "proxy_cidr" {
  type        = string
  description = "Who may reach Kong's proxy on 80/443. Anyone by default; narrow it to your address if you keep the showcase up, since Marathon's and Mesos's UIs are published through Kong without authentication."
  default     = "0.0.0.0/0"

  validation {
    condition     = can(cidrnetmask(var.proxy_cidr))
    error_message = "proxy_cidr must be an IPv4 CIDR block."
  }
}
